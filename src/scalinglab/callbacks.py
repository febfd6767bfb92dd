"""A run's lifecycle, as Lightning callbacks (listed in conf/callbacks/default.yaml).

- `RunRecord` owns `run.json`: `running` when fit starts, then `completed`, `failed`, `diverged`,
  `oom` or `interrupted` (a signal: resumable, not a failure), from Lightning's `on_exception`.
- `StepMetrics` writes a row per logged step (loss, tokens, FLOPs, lr, throughput, MFU) and ends
  a diverged run.
- `Checkpoints` keeps `checkpoints/last.ckpt` (every n steps, at the final step and at SIGTERM)
  and the extra checkpoints WSD branches start from; `VerifiedCheckpointIO` writes each one whole,
  with a sha256 beside it, and keeps the previous one, so that a damaged checkpoint is never
  loaded (`resume_point`).
- `WandbRun` makes a job's W&B run comparable with the others: the job's whole config, tags,
  tokens and FLOPs as the losses' axes, the final checkpoint as an artifact.
- `LogLines` is a logger: plain progress lines for logs that are files.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from scalinglab.planning import objective
from scalinglab.records import (
    RUN_FILE,
    DamagedRecord,
    MetricsCSV,
    now_iso,
    read_run,
    set_aside,
    write_atomic,
    write_json_atomic,
)

log = logging.getLogger("scalinglab")


class Diverged(RuntimeError):
    """Training loss became NaN, infinite or rose above the configured bound."""


# ---- run.json --------------------------------------------------------------------------------------


def outcome(err: BaseException) -> tuple[str, int | None]:
    """(status, exit code) a job ends with when `err` ends its fit. A signal interrupts (the job
    resumes when launched again) and exits as a process killed by it would (128 + signal)."""
    if isinstance(err, Diverged):
        return "diverged", None
    if isinstance(err, torch.OutOfMemoryError):
        return "oom", None
    if isinstance(err, SIGTERMException):
        return "interrupted", 128 + signal.SIGTERM
    if isinstance(err, KeyboardInterrupt):
        return "interrupted", 128 + signal.SIGINT
    if isinstance(err, SystemExit):  # submitit's requeue on SLURM's warning signal, say
        return "interrupted", None
    return "failed", None


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
        self.fields: dict[str, Any] = {"status": "running", "hostname": socket.gethostname()}
        # launcher=ray: the node as `ray list nodes` names it (one host may run several nodes).
        if os.environ.get("SCALINGLAB_RAY_NODE_ID"):
            self.fields["ray_node_id"] = os.environ["SCALINGLAB_RAY_NODE_ID"]
        self.exit_code: int | None = None  # set when a signal ends the run
        self._t0 = time.perf_counter()
        self._wall_before = 0.0

    @property
    def status(self) -> str:
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
        self._write("running")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        status, self.exit_code = outcome(exception)
        final: dict[str, Any] = {"error": describe(exception)}
        if status == "diverged":
            log.warning(f"diverged: {exception}")
            tokens_per_step = self.fields.get("tokens_per_step") or 0
            final.update(steps=trainer.global_step, tokens=trainer.global_step * tokens_per_step)
        elif status == "oom":
            log.warning(f"out of memory: {exception}")
            final["error"] = "out of memory"
        elif status == "interrupted":
            log.warning(f"interrupted at step {trainer.global_step} ({final['error']}): resumable")
        self._write(status, **final)

    def complete(self, trainer: pl.Trainer) -> dict[str, Any]:
        """Record the final figures (from metrics.csv, the final step's validation in it)."""
        self._write("completed", **final_figures(trainer, self.fields))
        return self.fields

    @rank_zero_only
    def _write(self, status: str, **final: Any) -> None:
        self.fields.update(final, status=status)
        if status != "running":
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
    _, rows = metrics_csv(trainer).read()
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    train_losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    tokens = trainer.global_step * fields["tokens_per_step"]
    figures = {
        "steps": trainer.global_step,
        "tokens": tokens,
        "flops": tokens * fields["flops_per_token"],
        "train_loss": train_losses[-1] if train_losses else math.nan,
        "val_loss": val[-1],
        "best_val_loss": min(val),
    }
    steps = next((c for c in trainer.callbacks if isinstance(c, StepMetrics)), None)
    if steps is not None and steps.first_step_s is not None:
        figures["first_step_s"] = round(steps.first_step_s, 3)
    return figures


# ---- step metrics ----------------------------------------------------------------------------------

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


# ---- checkpoints -----------------------------------------------------------------------------------

LAST = "last.ckpt"


def checksum_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def previous_path(path: Path) -> Path:
    """Where a checkpoint's predecessor is kept: last.ckpt -> last.previous.ckpt."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


class _Hashing:
    """A file that hashes what is written to it (torch.save streams the checkpoint through it)."""

    def __init__(self, f: IO[bytes], sha256: Any):
        self.f, self.sha256 = f, sha256

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def save_verified(checkpoint: dict[str, Any], path: Path) -> None:
    """Write a checkpoint whole (a temporary file beside it, renamed), then its sha256 beside it;
    the checkpoint it replaces is kept as `previous_path`, with its checksum."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sha256 = hashlib.sha256()

    def write(f: IO[bytes]) -> None:
        torch.save(checkpoint, _Hashing(f, sha256))  # type: ignore[arg-type]

    def keep_previous() -> None:
        if not path.exists():
            return
        previous = previous_path(path)
        checksum_path(previous).unlink(missing_ok=True)
        os.replace(path, previous)
        if checksum_path(path).exists():
            digest = checksum_path(path).read_text().split()[0]
            write_checksum(previous, digest)
            checksum_path(path).unlink()

    write_atomic(path, write, before_replace=keep_previous)
    write_checksum(path, sha256.hexdigest())


def write_checksum(path: Path, digest: str) -> None:
    """`path.sha256`, as sha256sum writes it (`sha256sum -c` checks it)."""
    line = f"{digest}  {path.name}\n"
    write_atomic(checksum_path(path), lambda f: f.write(line.encode()))


def damage(path: Path) -> str | None:
    """Why a checkpoint cannot be trusted (None: its bytes are the ones written)."""
    checksum = checksum_path(path)
    if not checksum.exists():
        return "no checksum beside it: its write never completed"
    expected = checksum.read_text().split()[:1]
    if expected != [sha256_of(path)]:
        return "its sha256 differs from the one written with it"
    return None


def verified(path: Path) -> bool:
    """Whether a checkpoint is intact; rank 0 sets a damaged one aside (renamed, with its
    checksum), the job's other ranks skip it as well."""
    try:
        why = damage(path)
    except FileNotFoundError:  # set aside by rank 0 meanwhile
        return False
    if why is None:
        return True
    if rank_zero_only.rank != 0:
        return False
    set_aside(path, why)
    if checksum_path(path).exists():
        os.replace(checksum_path(path), checksum_path(path).with_suffix(".sha256.damaged"))
    return False


def resume_point(dirpath: Path) -> Path | None:
    """The newest intact checkpoint of a job (last.ckpt, else the one before it); None: start
    from scratch. Damaged ones are named in the log and set aside."""
    for path in (dirpath / LAST, previous_path(dirpath / LAST)):
        if path.exists() and verified(path):
            return path
    return None


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing through `save_verified` (whole or not at all, with a
    checksum, the previous one kept). Rank 0 alone calls it. It loads with weights_only=True."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        save_verified(checkpoint, Path(path))

    def load_checkpoint(
        self,
        path: Any,
        map_location: Any = lambda storage, loc: storage,  # Lightning's: tensors on the CPU
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        # A checkpoint is data, never code, whatever the caller asks: a strategy that restores
        # after setup gets no weights_only from trainer.fit, and None is torch's default, which
        # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns into False.
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


class Checkpoints(pl.callbacks.Checkpoint):
    """`dirpath/last.ckpt` after every `every_n_train_steps`-th optimizer step, the final step and
    the step a SIGTERM stops at; and one at each step of `save_at` ({step: path}, the points WSD
    decay branches start from)."""

    def __init__(
        self,
        dirpath: str | Path,
        every_n_train_steps: int,
        save_at: dict[int, str] | None = None,
    ):
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = int(every_n_train_steps)
        self.save_at = dict(save_at or {})
        self._last_saved = -1

    @property
    def last(self) -> Path:
        return self.dirpath / LAST

    def _save(self, trainer: pl.Trainer, path: Path) -> None:
        trainer.save_checkpoint(path, weights_only=False)  # the full state: resumable
        if path == self.last:
            self._last_saved = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        step = trainer.global_step
        due = step % self.every_n_train_steps == 0 or step >= trainer.max_steps
        if due and step > self._last_saved:
            self._save(trainer, self.last)
        path = self.save_at.get(step)
        if path and not Path(path).exists():
            self._save(trainer, Path(path))

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # Lightning raises SIGTERMException between steps (or validation batches), where the state
        # is whole: save it, so that the job resumes where the signal stopped it.
        if isinstance(exception, SIGTERMException) and trainer.global_step > self._last_saved:
            self._save(trainer, self.last)
            log.info(f"SIGTERM: saved {self.last} at step {trainer.global_step}")


# ---- W&B -----------------------------------------------------------------------------------------

# run.json keys that W&B's config holds as flat keys beside the job's composed config (conventions:
# the scaling quantities are top-level keys that W&B filters and the analysis loader read); the
# final figures (steps, tokens, flops, losses) go to the summary when the run ends.
WANDB_FLAT_KEYS = (
    "sweep_id",
    "run_id",
    "n_params",
    "n_params_nonembedding",
    "flops_per_token",
    "flops_per_token_6n",
    "tokens_per_step",
    "batch_size",
    "seq_len",
    "lr",
    "seed",
    "irreducible_loss",
)
# The metrics StepMetrics and validation log, plotted against tokens. W&B gives a metric a single
# step metric; `flops` is logged on every row too, so any chart can switch its x-axis to it.
WANDB_CURVES = (
    "train/loss",
    "val/loss",
    "val/bpb",
    "perf/tokens_per_sec",
    "perf/mfu",
    "perf/mfu_6n",
)


def parsed_overrides(overrides: list[str]) -> dict[str, Any]:
    """Hydra overrides as {key: value}, typed as Hydra reads them (deletions left out)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return {o.key_or_group: o.value() for o in parsed if not o.is_delete()}


def job_config(output_dir: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """The job's composed config, resolved, from `.hydra/config.yaml` (Hydra's copy, or the one
    `train_job` writes for a job Hydra did not start there). The ids are the record's: `sweep_id` is
    computed once, from the launching command line, which a job on another node does not see."""
    path = output_dir / ".hydra" / "config.yaml"
    if not path.exists():
        log.warning(f"W&B: no {path}: the job's config is not logged")
        return {}
    cfg = OmegaConf.load(path)
    cfg.sweep_id, cfg.run_id = fields.get("sweep_id"), fields.get("run_id")
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:  # logged as composed rather than not at all
        log.warning(f"W&B: {path} does not resolve here ({err}): logged unresolved")
        return OmegaConf.to_container(cfg, resolve=False)


def wandb_config(config: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """A W&B run's config: the job's config (nested), the flat scaling keys of its record, and its
    overrides as a list and as {key: value} (`override`), to filter and group runs by what a sweep
    varied."""
    overrides = list(fields.get("overrides") or [])
    flat = {key: fields[key] for key in WANDB_FLAT_KEYS if key in fields}
    return {**config, **flat, "overrides": overrides, "override": parsed_overrides(overrides)}


def wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


class WandbRun(pl.Callback):
    """What makes a job's W&B run comparable with others' (nothing without a WandbLogger; rank 0):

    - tags: `tags` and the study's name;
    - tokens and FLOPs as the curves' axes (`wandb.define_metric`), logged with every row;
    - the config: the job's composed config, resolved and nested, with the flat scaling keys and the
      overrides (`wandb_config`). It is written at train start, after Lightning has logged the
      module's hyperparameters, whose `model` (the built shape) it replaces with the config's own;
    - with `log_model`, the final `checkpoints/last.ckpt` and its checksum as a `model` artifact
      (the checkpoint callback is not Lightning's ModelCheckpoint, which WandbLogger's own
      log_model uploads from).
    """

    def __init__(
        self,
        output_dir: str | Path,
        tags: list[str] | None = None,
        study: str | None = None,
        log_model: bool | str = False,
    ):
        self.output_dir = Path(output_dir)
        self.tags = [str(t) for t in [*(tags or []), *([study] if study else [])]]
        self.log_model = bool(log_model)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._start(trainer)

    @rank_zero_only
    def _start(self, trainer: pl.Trainer) -> None:
        for logger in wandb_loggers(trainer):
            run = logger.experiment
            run.tags = tuple(dict.fromkeys([*run.tags, *self.tags]))
            run.define_metric("tokens")
            run.define_metric("flops")
            for name in WANDB_CURVES:  # names win over WandbLogger's "*" -> trainer/global_step
                run.define_metric(name, step_metric="tokens")

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        fields = next(c for c in trainer.callbacks if isinstance(c, RunRecord)).fields
        config = wandb_config(job_config(self.output_dir, fields), fields)
        for logger in loggers:
            logger.experiment.config.update(config, allow_val_change=True)

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.log_model:
            return
        checkpoint = next(c for c in trainer.callbacks if isinstance(c, Checkpoints)).last
        for logger in wandb_loggers(trainer):
            log_checkpoint(logger.experiment, checkpoint, trainer.global_step)


def log_checkpoint(run: Any, path: Path, step: int) -> None:
    """A checkpoint and its sha256 as the run's `model-<run id>` artifact (Lightning's name): the
    checksum lets `ckpt_path=` load a downloaded copy, which refuses a checkpoint without one."""
    import wandb

    name = re.sub(r"[^\w.-]", "_", f"model-{run.id}")  # W&B's charset; run ids may hold = , +
    artifact = wandb.Artifact(name, type="model", metadata={"step": step})
    artifact.add_file(str(path))
    artifact.add_file(str(checksum_path(path)))
    run.log_artifact(artifact, aliases=["latest", f"step-{step}"])


# ---- log lines -------------------------------------------------------------------------------------


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
