"""A row per logged step: `StepMetrics` measures it (loss, tokens, FLOPs, lr, throughput, MFU from
the accelerators' peaks) and ends a diverged run; `MetricsCSV` keeps the rows in `metrics.csv`."""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from scalinglab.records import METRIC_COLUMNS, METRICS_FILE, refused_write, set_aside, write_atomic

log = logging.getLogger("scalinglab")


class Diverged(RuntimeError):
    """Training loss became NaN, infinite or rose above the configured bound."""


# Dense bf16 tensor-core peaks in FLOP/s, by a substring of torch.cuda.get_device_name().
# Longest key first, so "H100 PCIe" wins over "H100".
PEAK_FLOPS = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM
    "H200": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "RTX 4090": 165e12,
}


def peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """The accelerator's peak FLOP/s for MFU, or None where unknown (CPUs, unlisted GPUs)."""
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_FLOPS[key]
    return None


@dataclass
class _Row:
    """A logged step's figures; its loss is on its way to the host until `done` has passed."""

    step: int
    metrics: dict[str, float]  # tokens, flops, lr
    loss: torch.Tensor  # on the CPU (pinned when copied from a GPU)
    done: torch.cuda.Event | None  # recorded on the GPU after the step's work
    time: float  # perf_counter when queued: on a CPU, the step's end
    seq_len: int
    loss_value: float = math.nan  # once written


class StepMetrics(pl.Callback):
    """A row per logged step (every log_every_n_steps, and the last) to every logger; a loss that
    is NaN, infinite or above `divergence_threshold` ends the run as diverged.

    A logged step's loss is read on the host only once the GPU has finished that step: reading it
    at once (`.item()`) would wait for the GPU to empty its queue, which then idles while the host
    prepares the next step (2% of a 30M model's step time on an H100, with a row every 10 steps).
    So a row is queued at its step with its loss on its way to the host, and written at the first
    step end that finds the GPU done with it (an event query, no wait), a step or two later; or at
    once where the loop waits for the GPU anyway: the last step, a checkpoint, a validation.
    """

    def __init__(self, divergence_threshold: float | None = None, peak_flops: float | None = None):
        self.divergence_threshold = divergence_threshold
        self.peak_flops = peak_flops
        # The last step's loss and batch shape, the rows queued and not yet written, the last one
        # written.
        self._last_step: tuple[torch.Tensor, torch.Size] | None = None
        self._queued_step = -1
        self._pending: deque[_Row] = deque()
        self._last_written: _Row | None = None
        # Wall time from the start of fit to the end of its first step: with compile=true mostly
        # compilation, which a warm compile cache (paths.compile_cache_dir) cuts.
        self.first_step_s: float | None = None
        self._fit_start = 0.0

    @staticmethod
    def logs_at(trainer: pl.Trainer, step: int) -> bool:
        """Whether this optimizer step has a row: every log_every_n_steps steps, and the last, so
        that its figures reach the run's record."""
        return step % trainer.log_every_n_steps == 0 or step >= trainer.max_steps

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        # Lightning's outputs hold the loss divided over the accumulated micro-batches.
        loss = outputs["loss"].detach() * trainer.accumulate_grad_batches
        self._last_step = (loss, batch[0].shape)
        if self.first_step_s is None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
            self.first_step_s = time.perf_counter() - self._fit_start
        step = trainer.global_step
        if self.logs_at(trainer, step):
            self._queue_row(trainer, step)
        if self._write_rows(trainer, pl_module, wait=step >= trainer.max_steps):
            # For other callbacks and the progress bar; the loggers have had it.
            bar = trainer.progress_bar_callback is not None
            loss = torch.tensor(self._last_written.loss_value)
            pl_module.log("train/loss", loss, prog_bar=bar, logger=False)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # The rows up to the checkpoint's step go to disk first, so a job killed after it loses
        # none of them (its resume starts after that step).
        step = trainer.global_step
        if self._last_step is not None and self.logs_at(trainer, step):
            self._queue_row(trainer, step)
        self._write_rows(trainer, pl_module, wait=True)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_rows(trainer, pl_module, wait=True)  # validation waits for the GPU anyway

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_rows(trainer, pl_module, wait=True)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        pl_module.log("step", float(step))
        if self._last_step is not None:  # a validation between logged steps is placed too
            for key, value in self._position(trainer, pl_module, step, self._last_step[1]).items():
                pl_module.log(key, torch.tensor(value, dtype=torch.float64))

    def _queue_row(self, trainer: pl.Trainer, step: int) -> None:
        if self._queued_step == step:  # already queued, at a checkpoint of this step
            return
        self._queued_step = step
        loss, shape = self._last_step
        module = trainer.lightning_module
        metrics = {
            **self._position(trainer, module, step, shape),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
        }
        loss, done = self._to_host(loss)
        self._pending.append(_Row(step, metrics, loss, done, time.perf_counter(), shape[1]))

    @staticmethod
    def _position(
        trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, shape: torch.Size
    ) -> dict[str, int]:
        """Tokens and FLOPs trained on by the end of `step`, for batches of `shape`."""
        tokens = step * math.prod(shape) * trainer.accumulate_grad_batches * trainer.world_size
        return {"tokens": tokens, "flops": tokens * pl_module.config.flops_per_token(shape[1])}

    @staticmethod
    def _to_host(loss: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """The loss, copied to host memory without waiting, and an event marking the end of its
        step's work on the GPU (None on a CPU, where the step is over)."""
        if loss.device.type != "cuda":
            return loss, None
        host = torch.empty(loss.shape, dtype=loss.dtype, pin_memory=True)
        host.copy_(loss, non_blocking=True)
        done = torch.cuda.Event(enable_timing=True)
        done.record()
        return host, done

    def _write_rows(self, trainer: pl.Trainer, pl_module: pl.LightningModule, wait: bool) -> bool:
        """Write the queued rows the GPU is done with, in order; with `wait`, all of them. Returns
        whether any was written."""
        written = False
        while self._pending:
            row = self._pending[0]
            if row.done is not None:  # CPU rows are done when queued
                if not (wait or row.done.query()):
                    break
                row.done.synchronize()  # that step's end: the GPU goes on with the steps after it
            self._pending.popleft()
            written = True
            row.loss_value = float(row.loss)
            self._check_divergence(row.loss_value, row.step)
            metrics = {
                **row.metrics,
                "train/loss": row.loss_value,
                **self._throughput(trainer, pl_module, row),
            }
            self._last_written = row
            for logger in trainer.loggers:  # as Lightning's own logging calls them
                logger.log_metrics(metrics, step=row.step)
                logger.save()
        return written

    def _check_divergence(self, loss: float, step: int) -> None:
        bound = self.divergence_threshold
        if not math.isfinite(loss) or (bound is not None and loss > bound):
            raise Diverged(f"train/loss={loss} at step {step} (bound {bound})")

    def _throughput(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, row: _Row
    ) -> dict[str, float]:
        """Tokens/s and MFU from the previous written row's step to this one's."""
        previous = self._last_written
        if previous is None or previous.step >= row.step:
            return {}
        if row.done is not None and previous.done is not None:
            seconds = previous.done.elapsed_time(row.done) / 1e3  # on the GPU's clock
        else:
            seconds = row.time - previous.time  # CPUs: the step was over when it was queued
        tokens_per_sec = (row.metrics["tokens"] - previous.metrics["tokens"]) / seconds
        metrics = {"perf/tokens_per_sec": tokens_per_sec}
        peak = peak_flops(pl_module.device, self.peak_flops)
        if peak:
            peak *= trainer.world_size
            config = pl_module.config
            metrics["perf/mfu"] = tokens_per_sec * config.flops_per_token(row.seq_len) / peak
            metrics["perf/mfu_6n"] = tokens_per_sec * config.flops_per_token_6n / peak
        return metrics


# ---- metrics.csv ---------------------------------------------------------------------------------


def _parsed(columns: list[str], line: str) -> dict[str, str] | None:
    """A metrics.csv line as a row: as many fields as columns, every one a number or empty, and
    an integer step; None otherwise."""
    fields = next(csv.reader([line]), [])
    if len(fields) != len(columns):
        return None
    row = dict(zip(columns, fields, strict=True))
    try:
        numbers = [float(value) for value in fields if value != ""]
        step = float(row["step"])
    except ValueError:
        return None
    return row if numbers and step == int(step) else None


class MetricsCSV(Logger):
    """metrics.csv, one row per logged step: train and validation figures of a step share a row.

    Each row is on disk as soon as it is logged: a job resumed from its checkpoint of step S goes
    on at S + 1 and never logs S again, so nothing logged may wait for a later step. On resume,
    `repair` drops the rows past the checkpoint's step (no step is counted twice) and any row that
    does not parse (a torn write, a stray edit), naming them in a warning.
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
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.path, lambda f: f.write(buffer.getvalue().encode()))
        self._columns = None  # read again when next needed

    @rank_zero_only
    def repair(self, step: int) -> None:
        """Keep the rows up to `step` (a checkpoint's) that parse; warn naming the others."""
        if not self.path.exists():
            return
        lines = self.path.read_bytes().decode(errors="replace").replace("\0", "").splitlines()
        columns = next(csv.reader(lines[:1]), [])
        if "step" not in columns:
            set_aside(self.path, "no header with a step column")
            return
        kept, dropped, past = [], [], []
        for number, line in enumerate(lines[1:], start=2):
            row = _parsed(columns, line)
            if row is None:
                dropped.append(f"line {number} {line[:60]!r}")
            elif int(float(row["step"])) > step:
                past.append(row["step"])
            else:
                kept.append(row)
        if dropped:
            log.warning(f"{self.path}: dropped unparsable rows: {'; '.join(dropped)}")
        if past:
            log.info(f"{self.path}: dropped rows past step {step} (steps {', '.join(past)})")
        if dropped or past:
            self._rewrite(columns, kept)

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
            try:  # the common case: a new step (a partial row is dropped on resume: repair)
                with self.path.open("a", newline="") as f:
                    csv.DictWriter(f, self._columns).writerow(row)
            except OSError as err:
                raise refused_write(err, self.path) from err
            self._last_step = row["step"]
            return
        # The first row, a new metric, or a step already written (its validation): merge, rewrite.
        columns, existing = self.read()
        merged = {int(float(r["step"])): {k: v for k, v in r.items() if v != ""} for r in existing}
        merged.setdefault(row["step"], {}).update(row)
        self._rewrite(columns + new, [merged[s] for s in sorted(merged)])
