"""`RunRecord` owns `run.json`: `running` when fit starts, then `completed`, `failed`, `diverged`,
`oom` or `interrupted` (a signal: resumable, not a failure), from Lightning's `on_exception`. The
fields it writes are records.RUN_FIELDS."""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from scalinglab.callbacks.metrics import Diverged, MetricsCSV, StepMetrics
from scalinglab.guards import objective
from scalinglab.records import (
    RUN_FILE,
    DamagedRecord,
    Status,
    View,
    fields_in,
    now_iso,
    read_run,
    write_json_atomic,
)

log = logging.getLogger("scalinglab")


def outcome(err: BaseException) -> tuple[Status, int | None]:
    """(status, exit code) a job ends with when `err` ends its fit. A signal interrupts (the job
    resumes when launched again) and exits as a process killed by it would (128 + signal)."""
    if isinstance(err, Diverged):
        return Status.DIVERGED, None
    if isinstance(err, torch.OutOfMemoryError):
        return Status.OOM, None
    if isinstance(err, SIGTERMException):
        return Status.INTERRUPTED, 128 + signal.SIGTERM
    if isinstance(err, KeyboardInterrupt):
        return Status.INTERRUPTED, 128 + signal.SIGINT
    if isinstance(err, SystemExit):  # submitit's requeue on SLURM's warning signal, say
        return Status.INTERRUPTED, None
    return Status.FAILED, None


def describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def training_objective(datamodule: Any, module: pl.LightningModule) -> str:
    """clm or mlm: what the batches train (the datamodule masks them or not)."""
    return objective(getattr(datamodule, "objective", "clm"), module.config.causal)


class RunRecord(pl.Callback):
    """run.json: `running` from the start of fit, rewritten atomically when the run ends.

    `fields` (ids, model, scaling quantities) are set by `train` before fit; `complete` writes the
    final figures. Only rank 0 writes.
    """

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / RUN_FILE
        self.fields: dict[str, Any] = {"status": Status.RUNNING, "hostname": socket.gethostname()}
        # launcher=ray: the node as `ray list nodes` names it (one host may run several nodes).
        if os.environ.get("SCALINGLAB_RAY_NODE_ID"):
            self.fields["ray_node_id"] = os.environ["SCALINGLAB_RAY_NODE_ID"]
        self.exit_code: int | None = None  # set when a signal ends the run
        self._t0 = time.perf_counter()
        self._wall_before = 0.0

    @property
    def status(self) -> Status:
        return self.fields["status"]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.fields["objective"] = training_objective(trainer.datamodule, pl_module)
            self._start()

    @rank_zero_only
    def _start(self) -> None:
        try:
            previous = read_run(self.path.parent) or {}
        except DamagedRecord:
            previous = {}  # `train` has said so, and set it aside
        self.fields["started_at"] = previous.get("started_at", now_iso())
        # Wall time accumulates over resumed attempts.
        self._wall_before = float(previous.get("wall_time_s") or 0.0)
        self.fields["attempts"] = int(previous.get("attempts", 0)) + 1
        self._t0 = time.perf_counter()
        self._write(Status.RUNNING)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        status, self.exit_code = outcome(exception)
        final: dict[str, Any] = {"error": describe(exception)}
        if status == Status.DIVERGED:
            log.warning(f"diverged: {exception}")
            tokens_per_step = self.fields.get("tokens_per_step") or 0
            final.update(steps=trainer.global_step, tokens=trainer.global_step * tokens_per_step)
        elif status == Status.OOM:
            log.warning(f"out of memory: {exception}")
            final["error"] = "out of memory"
        elif status == Status.INTERRUPTED:
            log.warning(f"interrupted at step {trainer.global_step} ({final['error']}): resumable")
        self._write(status, **final)

    def complete(self, trainer: pl.Trainer) -> dict[str, Any]:
        """Record the final figures (from metrics.csv, the final step's validation in it)."""
        self._write(Status.COMPLETED, **final_figures(trainer, self.fields))
        return self.fields

    def fail(self, err: BaseException) -> None:
        """Record a failure found after the fit (a rank's)."""
        self._write(Status.FAILED, error=describe(err))

    @rank_zero_only
    def _write(self, status: Status, **final: Any) -> None:
        self.fields.update(final, status=status)
        if status != Status.RUNNING:
            self.fields["ended_at"] = now_iso()
            self.fields["wall_time_s"] = self._wall_before + time.perf_counter() - self._t0
        write_json_atomic(self.path, self.fields)


def metrics_csv(trainer: pl.Trainer) -> MetricsCSV:
    return next(lg for lg in trainer.loggers if isinstance(lg, MetricsCSV))


def validated_last_step(trainer: pl.Trainer) -> bool:
    """Whether metrics.csv has a validation at the final step (the same answer on every rank)."""
    _, rows = metrics_csv(trainer).read()
    val_steps = [int(float(r["step"])) for r in rows if r.get("val/loss")]
    return trainer.strategy.broadcast(bool(val_steps) and val_steps[-1] == trainer.global_step)


def final_figures(trainer: pl.Trainer, fields: dict[str, Any]) -> dict[str, Any]:
    """The record's View.FINAL fields, from metrics.csv (the final step's validation in it)."""
    _, rows = metrics_csv(trainer).read()
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    train_losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    tokens = trainer.global_step * fields["tokens_per_step"]
    steps = next((c for c in trainer.callbacks if isinstance(c, StepMetrics)), None)
    first_step_s = None if steps is None else steps.first_step_s
    figures = {
        "steps": trainer.global_step,
        "tokens": tokens,
        "flops": tokens * fields["flops_per_token"],
        "train_loss": train_losses[-1] if train_losses else math.nan,
        "val_loss": val[-1],
        "best_val_loss": min(val),
        "first_step_s": None if first_step_s is None else round(first_step_s, 3),
    }
    # A figure a run does not have is left out of its record, rather than written as null.
    return {key: figures[key] for key in fields_in(View.FINAL) if figures[key] is not None}
