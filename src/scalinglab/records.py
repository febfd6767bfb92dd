"""A run's record under its output directory: `run.json` and `metrics.csv`.

Analysis reads these, never W&B, so a study can be fitted with no network (see conventions.md).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger("scalinglab")

RUN_FILE = "run.json"
METRICS_FILE = "metrics.csv"
# The first columns of metrics.csv, in order; other logged metrics follow, sorted.
METRIC_COLUMNS = ["step", "tokens", "flops", "lr", "train/loss", "val/loss", "perf/tokens_per_sec"]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write then rename, so a reader (or a killed job) never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


def read_run(output_dir: Path) -> dict[str, Any] | None:
    path = Path(output_dir) / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else None


def git_state(cwd: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code's repository, or (None, None) outside one."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_lost(output_dir: Path, error: str) -> None:
    """A job whose process died before it could finish its record (killed, its node lost): a
    run.json still `running` becomes `failed`, so that no reader waits for it."""
    record = read_run(Path(output_dir))
    if record is not None and record.get("status") == "running":
        lost = {**record, "status": "failed", "error": error, "ended_at": now_iso()}
        write_json_atomic(Path(output_dir) / RUN_FILE, lost)


class RunRecord:
    """run.json: written at start with status `running`, rewritten atomically at the end."""

    def __init__(self, output_dir: Path, fields: dict[str, Any]):
        self.path = Path(output_dir) / RUN_FILE
        self.fields = {"status": "running", "hostname": socket.gethostname(), **fields}
        # launcher=ray: the node as `ray list nodes` names it (one host may run several nodes).
        if os.environ.get("SCALINGLAB_RAY_NODE_ID"):
            self.fields["ray_node_id"] = os.environ["SCALINGLAB_RAY_NODE_ID"]
        self._t0 = time.perf_counter()

    @rank_zero_only
    def start(self) -> None:
        previous = read_run(self.path.parent) or {}
        self.fields["started_at"] = previous.get("started_at", now_iso())
        # Wall time accumulates over resumed attempts.
        self._wall_before = float(previous.get("wall_time_s") or 0.0)
        self.fields["attempts"] = int(previous.get("attempts", 0)) + 1
        write_json_atomic(self.path, self.fields)

    @rank_zero_only
    def finish(self, status: str, **final: Any) -> dict[str, Any]:
        elapsed = time.perf_counter() - self._t0
        self.fields.update(final, status=status, ended_at=now_iso())
        self.fields["wall_time_s"] = getattr(self, "_wall_before", 0.0) + elapsed
        write_json_atomic(self.path, self.fields)
        return self.fields


class MetricsCSV(Logger):
    """metrics.csv, one row per logged step: train and validation figures of a step share a row.

    Each row is on disk as soon as it is logged: a job resumed from its checkpoint of step S goes
    on at S + 1 and never logs S again, so nothing logged may wait for a later step. On resume,
    rows past the checkpoint's step are dropped first, so no step is counted twice.
    """

    def __init__(self, output_dir: str | Path):
        super().__init__()
        self.path = Path(output_dir) / METRICS_FILE
        self._columns: list[str] | None = None  # the header on disk, and its last step
        self._last_step = -1

    name = "metrics_csv"
    version = ""

    @property
    def save_dir(self) -> str:
        return str(self.path.parent)

    def read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not self.path.exists():
            return list(METRIC_COLUMNS), []
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or METRIC_COLUMNS), list(reader)

    def _rewrite(self, columns: list[str], rows: list[dict[str, Any]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)
        self._columns = None  # read again when next needed

    @rank_zero_only
    def truncate_after(self, step: int) -> None:
        columns, rows = self.read()
        if self.path.exists():
            self._rewrite(columns, [r for r in rows if int(float(r["step"])) <= step])

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        pass  # the config lives in .hydra/ and run.json

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row: dict[str, Any] = {"step": int(step or 0)}
        row.update({k: float(v) for k, v in metrics.items() if k != "epoch"})
        if self._columns is None:
            columns, existing = self.read()
            self._columns = columns
            self._last_step = int(float(existing[-1]["step"])) if existing else -1
        new = sorted(set(row) - set(self._columns))
        if self.path.exists() and not new and row["step"] > self._last_step:
            with self.path.open("a", newline="") as f:  # the common case: a new step
                csv.DictWriter(f, self._columns).writerow(row)
            self._last_step = row["step"]
            return
        # The first row, a new metric, or a step already written (its validation): merge, rewrite.
        columns, existing = self.read()
        merged = {int(float(r["step"])): {k: v for k, v in r.items() if v != ""} for r in existing}
        merged.setdefault(row["step"], {}).update(row)
        self._rewrite(columns + new, [merged[s] for s in sorted(merged)])


class SaveAtSteps(pl.Callback):
    """Checkpoints after given optimizer steps (the points WSD decay branches start from)."""

    def __init__(self, paths: dict[int, str]):
        self.paths = paths

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        path = self.paths.get(trainer.global_step)
        if path and not Path(path).exists():
            trainer.save_checkpoint(path)


class LogLines(Logger):
    """Plain progress lines in the job's log, for logs that are files (SLURM, CI), where bars garble:
    the rows of every every_n_steps-th step and of the last, and each validation's."""

    def __init__(self, every_n_steps: int, max_steps: int):
        super().__init__()
        self.every_n_steps, self.max_steps = every_n_steps, max_steps

    name = "log_lines"
    version = ""

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        step = int(step or 0)
        if "val/loss" not in metrics and step % self.every_n_steps and step < self.max_steps:
            return
        parts = [f"step {step}/{self.max_steps}"]
        for key in ("train/loss", "val/loss", "perf/tokens_per_sec", "perf/mfu"):
            if key in metrics:
                parts.append(f"{key} {float(metrics[key]):.4g}")
        log.info("  ".join(parts))
