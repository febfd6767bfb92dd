"""A run's record under its output directory: `run.json`, `metrics.csv` and the job's lock.

Analysis reads these, never W&B, so a study can be fitted with no network (see conventions.md).
`RUN_FIELDS` is the one list of run.json's fields: the run frame's columns, the sweep summary's,
the W&B run's flat keys and the final figures are each a view of it. Every file here is written
whole or not at all (`write_atomic`), and a `running` record is told from a dead job's by the
job's lock (`run_status`). Light on purpose: the analysis package imports it, and it loads no
torch or Lightning (metrics.csv's writer, a Lightning logger, is scalinglab.callbacks.MetricsCSV).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

log = logging.getLogger("scalinglab")

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
LOCK_FILE = ".job.lock"
# The first columns of metrics.csv, in order; other logged metrics follow, sorted.
METRIC_COLUMNS = ["step", "tokens", "flops", "lr", "train/loss", "val/loss", "perf/tokens_per_sec"]


# ---- run.json's schema -----------------------------------------------------------------------------


class Status(str, enum.Enum):
    """A run's status. A job writes the first six into its run.json; a reader infers the last
    three (`run_status`). A str, so that run.json and every frame hold the plain strings."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DIVERGED = "diverged"  # a result (the loss blew up), not a fault
    OOM = "oom"
    INTERRUPTED = "interrupted"  # a signal: resumable, not a failure
    LOST = "lost"  # `running`, and no live process holds the job's lock
    DAMAGED = "damaged"  # a run.json that does not read as a record
    MISSING = "missing"  # no run.json

    def __str__(self) -> str:  # "completed", not "Status.COMPLETED", in messages and CSVs
        return self.value

    __format__ = str.__format__
    __hash__ = str.__hash__  # Enum's hashes the name: "completed" would miss Status.COMPLETED


# Jobs in these states make a sweep's exit code non-zero; a diverged job is a result, not a fault.
FAILED = (Status.FAILED, Status.OOM)


class View(enum.Flag):
    """Where a run.json field is shown besides run.json itself."""

    NONE = 0
    RUN = enum.auto()  # a column of the run frame (scalinglab.analysis.load_runs), in this order
    SUMMARY = enum.auto()  # a column of a sweep's summary.csv
    WANDB_CONFIG = enum.auto()  # a flat key of the W&B run's config, to filter and group on
    WANDB_SUMMARY = enum.auto()  # a key of the W&B run's summary, written when the run ends
    SCALING = enum.auto()  # a scaling quantity, known from the plan before training
    FINAL = enum.auto()  # a final figure, written when the run completes


@dataclass(frozen=True)
class Field:
    name: str
    type: type
    doc: str  # its meaning and unit
    views: View = View.NONE


_R, _S, _C, _W, _N, _F = (
    View.RUN,
    View.SUMMARY,
    View.WANDB_CONFIG,
    View.WANDB_SUMMARY,
    View.SCALING,
    View.FINAL,
)

# run.json's fields, in the run frame's column order (then the record's others).
RUN_FIELDS: tuple[Field, ...] = (
    Field("run_id", str, "the job's id (also its W&B run id)", _R | _S | _C),
    Field("sweep_id", str, "the sweep's id (its W&B group)", _R | _C),
    Field("name", str, "the job's display name", _R),
    Field("status", Status, "see Status", _R | _S | _W),
    Field("objective", str, "clm (next token) or mlm (masked tokens)", _R),
    Field(
        "tokenizer", str, "the data's tokenizer (bpe: with 8 digits of its file's sha256)", _R | _C
    ),
    Field(
        "val_set",
        str,
        "16 digits of sha256 over the validation tokens: one set, one scale",
        _R | _C,
    ),
    Field("n_params", int, "every parameter (Chinchilla's N)", _R | _S | _C | _N),
    Field("n_params_nonembedding", int, "parameters outside the embeddings", _R | _S | _C | _N),
    Field("flops_per_token", float, "training FLOPs/token: 6N plus attention", _R | _C | _N),
    Field("tokens", int, "tokens trained on", _R | _S | _W | _F),
    Field("flops", float, "training FLOPs", _R | _S | _W | _F),
    Field("steps", int, "optimizer steps trained", _R | _S | _W | _F),
    Field("lr", float, "peak learning rate, per step", _R | _S | _C | _N),
    Field("batch_size", int, "sequences per step per device", _R | _S | _C | _N),
    Field("tokens_per_step", int, "tokens per optimizer step, all devices", _R | _C | _N),
    Field("seq_len", int, "tokens per sequence", _R | _C | _N),
    Field("val_loss", float, "the final validation loss, nats/token", _R | _S | _W | _F),
    Field("best_val_loss", float, "the lowest validation loss, nats/token", _R | _S | _W | _F),
    Field("train_loss", float, "the last logged training loss, nats/token", _R | _S | _W | _F),
    Field("wall_time_s", float, "seconds, over every attempt", _R | _S | _W),
    Field("irreducible_loss", float, "nats/token, synthetic data only", _R | _C),
    Field("seed", int, "the seed", _R | _C | _N),
    Field("flops_per_token_6n", float, "6N: FLOPs/token without attention", _C | _N),
    Field("first_step_s", float, "seconds to the end of the first step", _S | _W | _F),
    Field("flops_shared", float, "a WSD branch's FLOPs trained once, in its trunk", _S),
    Field("error", str, "why the run ended, when it did not complete", _S),
    Field("hostname", str, "the host of rank 0"),
    Field("ray_node_id", str, "launcher=ray: the node, as `ray list nodes` names it"),
    Field("started_at", datetime, "ISO time of the first attempt's start, with its timezone"),
    Field("ended_at", datetime, "ISO time of the end, with its timezone"),
    Field("attempts", int, "how many times the job started (resumes)"),
    Field("overrides", list, "the job's Hydra overrides"),
    Field("config_hash", str, "what the job trains (provenance.config_hash): one per directory"),
    Field("git_commit", str, "the code's commit"),
    Field("git_dirty", bool, "whether the code had uncommitted changes"),
    Field("model", dict, "the model's built shape (GPTConfig)"),
    Field("max_steps", int, "the steps planned"),
    Field("target_params_error", float, "model.target_params: the size rule's relative miss"),
    Field("data", dict, "the data's metadata (vocabulary, bytes per token...)"),
    Field("init_from", str, "a WSD branch: the trunk's checkpoint it started from"),
    Field("evals", dict, "scaling-eval's figures, by data name"),
)


def fields_in(view: View) -> tuple[str, ...]:
    """The names of the fields shown in `view`, in RUN_FIELDS' order."""
    return tuple(f.name for f in RUN_FIELDS if view in f.views)


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Hydra overrides as {key: value}, typed as Hydra reads them (`seed=1` -> 1, `tags=[a]` ->
    ["a"]), `+`/`++` dropped and deletions (`~key`) left out. An override Hydra's grammar
    does not read (`d=x=y`) keeps its text after the first `=`, as a number where it is one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed: dict[str, Any] = {}
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except OverrideParseException:
            key, sep, value = text.partition("=")
            if sep and not key.startswith("~"):
                parsed[key.lstrip("+")] = _number_or_text(value)
            continue
        if not override.is_delete():
            parsed[override.key_or_group] = override.value()
    return parsed


def _number_or_text(text: str) -> Any:
    for number in (int, float):
        with contextlib.suppress(ValueError):
            return number(text)
    return text


# ---- whole files or none ---------------------------------------------------------------------------


# What a write that the machine refuses says, by errno: one line naming the path.
REFUSED_WRITES = {
    errno.ENOSPC: "no space left on {}",
    errno.EDQUOT: "disk quota exceeded on {}",
    errno.EROFS: "read-only file system: cannot write {}",
    errno.EACCES: "permission denied: cannot write {}",
    errno.EPERM: "permission denied: cannot write {}",
}


def refused_write(err: BaseException, path: Path) -> BaseException:
    """A full disk, a read-only file system or a denied permission found in `err` or what caused
    it (torch's writer reports ENOSPC as "unexpected pos"), as scalinglab.errors.OutputError
    naming `path`; any other error unchanged."""
    cause: BaseException | None = err
    while cause is not None and not (isinstance(cause, OSError) and cause.errno in REFUSED_WRITES):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return err
    from scalinglab.errors import OutputError  # Hydra's: loaded only when a write fails

    return OutputError(cause.errno, REFUSED_WRITES[cause.errno].format(path))


TEMPORARY = ".tmp"  # write_atomic's files: `.NAME.8HEX.tmp`, beside the file they become


def reap_temporaries(output_dir: Path) -> list[Path]:
    """Remove the temporary files a killed job's writes left (kill -9 mid-write: no `finally`
    runs) in its directory and checkpoints/. Call it holding the job's lock: no live process then
    writes there. Returns what was removed."""
    reaped = []
    for directory in (Path(output_dir), Path(output_dir) / "checkpoints"):
        for path in directory.glob(f".*{TEMPORARY}") if directory.is_dir() else ():
            if re.fullmatch(rf"\..+\.[0-9a-f]{{8}}{re.escape(TEMPORARY)}", path.name):
                path.unlink(missing_ok=True)
                reaped.append(path)
    if reaped:
        log.info(f"{output_dir}: removed {len(reaped)} partial files of a killed write")
    return reaped


def write_atomic(
    path: Path,
    write: Callable[[IO[bytes]], None],
    before_replace: Callable[[], None] | None = None,
) -> None:
    """`write` to a temporary file beside `path`, then rename it over `path`.

    The temporary file is in the same directory, so the rename is atomic (never a copy across
    filesystems), and it is created with the umask's permissions (not mkstemp's 0600: others on a
    shared disk read records). On any failure the temporary file is removed and `path` is as it
    was; a write the machine refuses (a full disk, a read-only file system) raises
    `refused_write`'s one-line error. `before_replace` runs once the new file is whole (to keep
    the old one under another name, say).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMPORARY}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        refused = refused_write(err, path)
        if refused is not err:
            raise refused from err
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, default=str) + "\n"
    write_atomic(Path(path), lambda f: f.write(text.encode()))


# ---- run.json ------------------------------------------------------------------------------------


class DamagedRecord(ValueError):
    """A run.json that is not a run record (truncated, overwritten): readers skip it, naming it."""


def read_record(path: Path) -> dict[str, Any] | None:
    """The run record in the file `path`; None when there is none. Raises DamagedRecord when it is
    unreadable or not a JSON object. The one reader of run.json: training's and analysis'."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedRecord(f"{path}: unreadable ({err})") from None
    if not isinstance(record, dict):
        raise DamagedRecord(f"{path}: not a run record (a JSON {type(record).__name__})")
    wrong = mistyped(record)
    if wrong:
        raise DamagedRecord(f"{path}: not a run record ({wrong})")
    return record


def mistyped(record: Mapping[str, Any]) -> str | None:
    """The first field whose value is not of its RUN_FIELDS type, in words (None: all are).
    A number is never a bool (`n_params: true` is not N = 1); an int field takes a whole float."""
    for field in RUN_FIELDS:
        value = record.get(field.name)
        if value is None:
            continue
        if field.type in (int, float):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            whole = isinstance(value, int) or (number and float(value).is_integer())
            if number and (field.type is float or whole):
                continue
            wanted = "a number" if field.type is float else "a whole number"
        elif field.type is datetime:
            if isinstance(value, str) and aware_time(value) is not None:
                continue
            wanted = "an ISO time with a timezone"
        else:
            expected = str if field.type is Status else field.type
            if isinstance(value, expected):
                continue
            wanted = f"a {expected.__name__}"
        return f"{field.name} is {json.dumps(value)[:40]}, not {wanted}"
    return None


def read_run(output_dir: Path) -> dict[str, Any] | None:
    """The job's run.json; None when it has none. Raises DamagedRecord when it is unreadable."""
    return read_record(Path(output_dir) / RUN_FILE)


def set_aside(path: Path, why: str) -> Path:
    """Rename a damaged file out of the way (kept for inspection), and say so."""
    aside = path.with_name(f"{path.name}.damaged")
    os.replace(path, aside)
    log.warning(f"{path} is damaged ({why}): set aside as {aside.name}")
    return aside


# ---- the job's lock: one process per job directory -----------------------------------------------


def job_lock(output_dir: Path) -> FileLock:
    """The lock a job holds while it runs (an OS lock: released when its process dies)."""
    return FileLock(Path(output_dir) / LOCK_FILE, is_singleton=False)


@contextlib.contextmanager
def holding(output_dir: Path) -> Iterator[bool]:
    """Take the job's lock if no other process holds it; yields whether it was taken."""
    lock = job_lock(output_dir)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def lock_held(output_dir: Path) -> bool:
    """Whether a live process (this one included) holds the job's lock."""
    if not (Path(output_dir) / LOCK_FILE).exists():
        return False
    with holding(output_dir) as taken:
        return not taken


def run_status(output_dir: Path) -> Status | str | None:
    """The job's status as a reader should see it (see `seen_status`); an unreadable record is
    `damaged` and a missing one `missing`."""
    try:
        record = read_run(output_dir)
    except DamagedRecord:
        return Status.DAMAGED
    if record is None:
        return Status.MISSING
    return seen_status(record, output_dir)


def seen_status(record: Mapping[str, Any], output_dir: Path) -> Status | str | None:
    """A record's Status, except that a `running` record whose lock nobody holds is `lost` (its
    process is gone). A status this code does not know (or none) is kept as written."""
    status = record.get("status")
    if status == Status.RUNNING and not lock_held(output_dir):
        return Status.LOST
    known = isinstance(status, str) and status in Status._value2member_map_
    return Status(status) if known else status


# git, found once where this module loads, and run with an environment of its own: a job's
# environment is partly a config's (hydra.job.env_set), and GIT_CONFIG_* or a repository's
# core.fsmonitor would make `git status` run a command.
GIT = shutil.which("git")
GIT_ARGS = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null")


def git_env() -> dict[str, str]:
    """No inherited GIT_* variable; the system config skipped; HOME from the user database (the
    global config keeps its safe.directory), not from the environment."""
    env = {"GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C", "PATH": os.defpath}
    with contextlib.suppress(ImportError, KeyError):  # no user database: no global config either
        import pwd

        env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
    return env


def git_state(cwd: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code's repository, or (None, None) outside one (or without git)."""
    cwd = cwd or Path(__file__).resolve().parent
    if GIT is None:
        return None, None

    def git(*args: str) -> str:
        return subprocess.run(
            [GIT, *GIT_ARGS, *args],
            cwd=cwd,
            env=git_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def aware_time(text: str) -> datetime | None:
    """An ISO time as now_iso writes it, or None where it is not one or has no timezone (it cannot
    be compared with one that has)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def record_lost(output_dir: Path, error: str) -> None:
    """A job whose process died before it could finish its record (killed, its node lost): a
    run.json still `running` becomes `failed`, so that no reader waits for it."""
    with contextlib.suppress(DamagedRecord):
        record = read_run(Path(output_dir))
        if record is not None and record.get("status") == Status.RUNNING:
            lost = {**record, "status": Status.FAILED, "error": error, "ended_at": now_iso()}
            write_json_atomic(Path(output_dir) / RUN_FILE, lost)
