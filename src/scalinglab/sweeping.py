"""Sweep-level machinery: refuse bad jobs before launch, keep a summary of every job's outcome.

`preflight` runs `planning.plan` on every job of a sweep as Hydra composes them before launch (see
hydra_plugins.scalinglab.sweeper), so a study with one impossible job (a FLOP budget below a step, say) launches
nothing. `SweepSummary` rewrites `summary.csv` and `summary.json` in the sweep directory as each job
ends, wherever it ran (in-process, on SLURM, on Ray), from the jobs' own `run.json` records.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException, ConfigCompositionException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from scalinglab.errors import ConfigError
from scalinglab.records import (
    FAILED,
    RUN_FILE,
    DamagedRecord,
    Status,
    View,
    fields_in,
    git_state,
    now_iso,
    read_run,
    run_status,
    write_json_atomic,
)

log = logging.getLogger("scalinglab")

# summary.csv: the job's directory under the sweep's, its record's View.SUMMARY fields, its path.
SUMMARY_COLUMNS = ["job", *fields_in(View.SUMMARY), "path"]


def preflight(
    sweep_config: DictConfig,
    config_loader: Any,
    jobs: Sequence[Sequence[str]],
    without_values: Sequence[str] = (),
) -> None:
    """Compose and plan every job of a sweep, and check that a job directory holding a run holds
    one of the same config; refuse them all, naming each bad one, if any is (one line for the
    jobs that share a reason). A grid of hundreds of jobs is checked by a process per core and
    prints its progress; Ctrl-C stops the check in one line, with nothing launched.

    without_values: the sweep's overrides that expand to no value (a grid of no jobs)."""
    if not jobs:
        raise ConfigError(
            f"the sweep has no jobs: {', '.join(without_values) or 'its grid'} gives no values"
        )
    # A job is named by what sets it apart: its own values of the grid.
    shared = set.intersection(*(set(job) for job in jobs))
    problems: dict[str, list[str]] = {}
    started = last = time.monotonic()
    number = 0
    try:
        with parsed_once():
            reasons = checked(JobCheck(sweep_config, config_loader), jobs)
            for number, (overrides, reason) in enumerate(zip(jobs, reasons, strict=True), 1):
                if reason is not None:
                    name = " ".join(o for o in overrides if o not in shared) or "the job"
                    problems.setdefault(reason, []).append(name)
                if len(jobs) >= PROGRESS_FROM and time.monotonic() - last >= PROGRESS_EVERY_S:
                    last = time.monotonic()
                    rate = number / (last - started)
                    log.info(f"checked {number} of {len(jobs)} jobs ({rate:.0f}/s)")
    except KeyboardInterrupt:
        raise ConfigError(
            f"interrupted while checking the sweep's jobs ({number} of {len(jobs)} checked): "
            "nothing was launched"
        ) from None
    if problems:
        raise ConfigError(refusal(problems, len(jobs)))


class JobCheck:
    """One job's pre-launch check: compose it, plan it, and compare it with a run its directory
    holds; the reason it is refused, in one line, or None."""

    def __init__(self, sweep_config: DictConfig, config_loader: Any) -> None:
        self.compose = JobConfigs(sweep_config, config_loader)
        self.launcher = str(OmegaConf.select(sweep_config, "hydra.launcher._target_", default=""))

    def __call__(self, overrides: Sequence[str]) -> str | None:
        from scalinglab.planning import check_rank_start, plan
        from scalinglab.provenance import refuse_another_config

        try:
            cfg, job_dir = self.compose(overrides)
            with open_dict(cfg):  # planning needs no Hydra runtime values
                cfg.paths.output_dir = "."
            check_rank_start(plan(cfg).world_size, self.launcher)
            refuse_another_config(job_dir, cfg)
        except (ConfigError, ConfigCompositionException) as err:
            return " ".join(str(err).split())
        return None


# A grid this large is checked by a forked process per core (a worker's start costs about as much
# as checking a few dozen jobs); each takes CHUNK jobs at a time.
PARALLEL_FROM, CHUNK = 200, 25
_CHECK: JobCheck | None = None  # what the forked workers call: set before they fork


def checked(check: JobCheck, jobs: Sequence[Sequence[str]]) -> Iterator[str | None]:
    """Each job's `check`, in the jobs' order: in forked workers, one per core, for a large grid
    on a Linux machine of several cores, else here."""
    import multiprocessing

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # fork only on Linux: macOS offers it, but a forked process that has loaded torch can crash.
    forks = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
    if len(jobs) < PARALLEL_FROM or (cores or 1) < 2 or not forks:
        yield from map(check, jobs)
        return
    # The first job here: its imports (torch, for the optimizer's check), composition and parses
    # are then the workers' from the start, not each worker's few seconds.
    yield check(jobs[0])
    global _CHECK
    _CHECK = check
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(cores, initializer=_ignore_sigint) as pool:  # Ctrl-C is the parent's
            yield from pool.imap(_check_in_worker, jobs[1:], chunksize=CHUNK)
    finally:
        _CHECK = None


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _check_in_worker(overrides: Sequence[str]) -> str | None:
    assert _CHECK is not None
    return _CHECK(overrides)


@contextlib.contextmanager
def parsed_once() -> Iterator[None]:
    """OmegaConf parses an interpolation's text (an ANTLR grammar, about 0.5 ms) each time it
    resolves it; a sweep's check resolves the same few dozen texts in every job, about 60 times a
    job. Parsing is a pure function of the text and OmegaConf only reads the trees: here each text
    is parsed once. OmegaConf's private name: if it moves, the check is just slower."""
    import omegaconf.base

    parse = getattr(omegaconf.base, "parse", None)
    if parse is None:
        yield
        return
    omegaconf.base.parse = functools.lru_cache(maxsize=4096)(parse)
    try:
        yield
    finally:
        omegaconf.base.parse = parse


PROGRESS_FROM, PROGRESS_EVERY_S = 300, 5.0  # grids this large say how far their check is


def refusal(problems: dict[str, list[str]], n_jobs: int) -> str:
    """One line per reason, naming its jobs (the first three, and how many more)."""
    n_refused = sum(map(len, problems.values()))
    lines = []
    for reason, names in problems.items():
        named = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        lines.append(
            f"{named}: {reason}" if len(names) == 1 else f"{len(names)} jobs ({named}): {reason}"
        )
    refused = f"{n_refused} of {n_jobs} jobs refused before launch:"
    return f"{refused} {lines[0]}" if len(lines) == 1 else "\n  ".join([refused, *lines])


class JobConfigs:
    """Each job's composed config and directory, as Hydra's sweeper makes them
    (config_loader.load_sweep_config), but composed from its defaults once per distinct set of
    group choices: a job's plain value overrides (`seed=1`, `optimizer.lr=1e-3`) are applied to a
    copy of that composition (without its `hydra` node, which planning never reads), the way Hydra
    applies them after composing. Anything else, or a value override that fails there, is
    composed in full, for Hydra's own message."""

    # Keys the job directory interpolates: a job that sets one is composed in full.
    DIRECTORY_KEYS = ("paths.", "sweep_id", "name")

    def __init__(self, sweep_config: DictConfig, config_loader: Any) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.sweep_config, self.loader = sweep_config, config_loader
        self.parser = OverridesParser.create()
        self.groups = {str(g) for g in sweep_config.hydra.runtime.choices}
        self.composed: dict[tuple[str, ...], tuple[DictConfig, DictConfig]] = {}
        self.overrides: dict[str, Any] = {}

    def __call__(self, overrides: Sequence[str]) -> tuple[DictConfig, Path]:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

        parsed = [self._parsed(o) for o in overrides]
        values = [o for o in parsed if self._plain_value(o)]
        shape = tuple(o.input_line for o in parsed if o not in values)
        try:
            if shape not in self.composed:
                full = self.loader.load_sweep_config(self.sweep_config, list(shape))
                body = copy.deepcopy(full)
                with open_dict(body):
                    del body["hydra"]
                self.composed[shape] = full, body
            full, body = self.composed[shape]
            cfg = copy.deepcopy(body)
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except Exception:  # Hydra's own words for what is wrong with this job's overrides
            full = self.loader.load_sweep_config(self.sweep_config, list(overrides))
            return full, self.directory(full)
        job = full.hydra.job.config.override_dirname
        task = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(full.hydra):  # the directory this job's own overrides name
            full.hydra.overrides.task = [o.input_line for o in task]
            full.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task,
                kv_sep=job.kv_sep,
                item_sep=job.item_sep,
                exclude_keys=job.exclude_keys,
            )
        return cfg, self.directory(full)

    def _parsed(self, override: str) -> Any:
        """Hydra's parse of one override (a grid repeats each value in many jobs): parsed once."""
        if override not in self.overrides:
            self.overrides[override] = self.parser.parse_overrides([override])[0]
        return self.overrides[override]

    @staticmethod
    def directory(cfg: DictConfig) -> Path:
        return Path(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir))

    def _plain_value(self, override: Any) -> bool:
        key = override.key_or_group
        return (
            override.package is None
            and not override.is_hydra_override()
            and not override.is_sweep_override()
            and key not in self.groups
            and "/" not in key
            and not key.startswith(self.DIRECTORY_KEYS)
        )


def stale(then: str | None, now: str | None) -> bool:
    """Whether a record's code (its git commit) is not the code running now; unknown is not."""
    return then is not None and now is not None and then != now


def stale_jobs(rows: list[dict[str, Any]], now: str | None, launched_at: str) -> list[str]:
    """The completed jobs that a launch at commit `now`, started at `launched_at` (ISO time),
    skipped: completed before it at another commit. A job it trained may record a later commit,
    made while the sweep ran; it was not skipped."""

    def skipped(row: dict[str, Any]) -> bool:
        record = read_run(Path(row["path"])) or {}
        when = record.get("ended_at") or record.get("started_at")
        before = when is None or datetime.fromisoformat(when) < datetime.fromisoformat(launched_at)
        return before and stale(record.get("git_commit"), now)

    return [row["job"] for row in rows if row["status"] == Status.COMPLETED and skipped(row)]


class SweepFailed(CompactHydraException):
    pass


def job_row(sweep_dir: Path, job_dir: Path, error: str | None = None) -> dict[str, Any]:
    path = job_dir / RUN_FILE
    try:
        record = read_run(job_dir) or {"status": Status.FAILED}
    except DamagedRecord as err:  # its relaunch resumes it (train.previous_record)
        record = {"status": Status.DAMAGED, "error": str(err)}
    row = {key: record.get(key) for key in SUMMARY_COLUMNS}
    if row["status"] == Status.RUNNING:  # `lost` when no live process holds the job
        row["status"] = run_status(job_dir)
    # Hydra gives the sweep directory as configured (often relative) and a job's as absolute.
    job_dir = job_dir.resolve()
    row.update(job=str(job_dir.relative_to(sweep_dir.resolve())), path=str(job_dir))
    if error and record.get("status") != Status.COMPLETED:
        row["status"] = row["status"] if path.exists() else Status.FAILED
        row["error"] = record.get("error") or error
    return row


def update_summary(
    sweep_dir: Path, job_dir: Path | None = None, error: str | None = None
) -> list[dict]:
    """Refresh the summary with one job's row (or, with no job, rescan them all); return its rows.

    A lock serialises jobs that end at once; rows of jobs that failed before writing a record are
    kept from the previous summary.
    """
    import pandas as pd  # loads when a job ends, not when the sweeper plugin registers

    sweep_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(sweep_dir / ".summary.lock"):
        summary = sweep_dir / "summary.json"
        rows = {r["job"]: r for r in json.loads(summary.read_text())} if summary.exists() else {}
        for record in sweep_dir.glob(f"**/{RUN_FILE}"):  # jobs and their WSD branches
            row = job_row(sweep_dir, record.parent)
            rows[row["job"]] = row
        if job_dir is not None:
            row = job_row(sweep_dir, job_dir, error)
            rows[row["job"]] = row
        ordered = [rows[k] for k in sorted(rows)]
        write_json_atomic(summary, ordered)  # type: ignore[arg-type]
        pd.DataFrame(ordered, columns=SUMMARY_COLUMNS).to_csv(
            sweep_dir / "summary.csv", index=False
        )
    return ordered


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.launch = (git_state()[0], now_iso())  # what "skipped as stale" is measured against

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode.name != "MULTIRUN":
            return
        error = None
        if job_return.status == JobStatus.FAILED:
            error = f"{type(job_return._return_value).__name__}: {job_return._return_value}"
        update_summary(Path(config.hydra.sweep.dir), Path(config.hydra.runtime.output_dir), error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import pandas as pd

        sweep_dir = Path(config.hydra.sweep.dir)
        rows = update_summary(sweep_dir)
        counts = pd.Series([r["status"] for r in rows]).value_counts().to_dict()
        log.info(f"sweep {sweep_dir}: {len(rows)} runs, {counts}; see summary.csv")
        done = [r for r in rows if r["status"] == Status.COMPLETED]
        shared = sum(r["flops_shared"] or 0 for r in done)
        if shared:
            spent = sum(r["flops"] or 0 for r in done) - shared
            log.info(
                f"WSD branches: {shared:.3g} FLOPs reused from their trunks; the sweep spent "
                f"{spent:.3g} FLOPs for what straight runs would train with {spent + shared:.3g} "
                f"({shared / (spent + shared):.0%} saved)"
            )
        if old := stale_jobs(rows, *self.launch):
            log.warning(
                f"{len(old)} jobs were completed at another git commit and skipped: "
                f"{', '.join(old)} (rerun_stale=true retrains them)"
            )
        failed = [r["job"] for r in rows if r["status"] in FAILED]
        if failed:
            raise SweepFailed(f"{len(failed)} jobs did not complete: {', '.join(failed)}")
