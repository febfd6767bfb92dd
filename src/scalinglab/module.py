"""The LightningModule: a GPT trained by next-token prediction with AdamW and a warm-up schedule.

Its hyperparameters are plain dicts and scalars (what Hydra composed, converted to containers), so
checkpoints load under torch's `weights_only=True` and resume works across versions.

Under Lightning's ModelParallelStrategy (`trainer=fsdp`) `configure_model` shards the model with
torch's FSDP2 (`fully_shard`), one unit per transformer block. The model is built in `__init__` in
every case, on the CPU, so a seed gives the same initial weights whatever the strategy: a sharded run
starts where a single-device or DDP run of the same seed starts; a GPU never holds the whole model.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

from scalinglab.errors import ConfigError
from scalinglab.model import GPT, GPTConfig

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


class Diverged(RuntimeError):
    """Training loss became NaN, infinite or rose above the configured bound."""


class LanguageModel(pl.LightningModule):
    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        compile: bool = False,
        bytes_per_token: float | None = None,
        divergence_threshold: float | None = None,
        peak_flops: float | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.config = GPTConfig(**model)
        self.model = GPT(self.config)
        self.loss_fn = self._loss_fn()
        # The logged rows (see on_train_batch_end): the last step's loss and batch shape, the rows
        # queued and not yet written, and the last one written.
        self._last_step: tuple[torch.Tensor, torch.Size] | None = None
        self._queued_step = -1
        self._pending: deque[_Row] = deque()
        self._last_written: _Row | None = None
        # Wall time from the start of fit to the end of its first step: with compile=true mostly
        # compilation, which a warm compile cache (paths.compile_cache_dir) cuts.
        self.first_step_s: float | None = None
        self._fit_start = 0.0

    def _loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        # Compile the loss, not the module, so state_dict keys stay free of `_orig_mod`.
        return torch.compile(self.model.loss) if self.hparams.compile else self.model.loss

    def configure_model(self) -> None:
        """Shard the model over the job's ranks when the strategy gives a device mesh (trainer=fsdp).

        Parameters, gradients and optimizer states are split across ranks one transformer block at
        a time, the embeddings, final norm and (tied) head forming the root unit. Lightning calls
        this hook on every fit and validate; the model is sharded once.
        """
        if self.device_mesh is None or isinstance(self.model, FSDPModule):
            return
        mesh = self.device_mesh["data_parallel"]
        world_size = torch.distributed.get_world_size()
        if mesh.size() != world_size:
            # Ranks outside a shard group would keep replicas whose gradients nobody averages.
            raise ConfigError(
                f"trainer.strategy.data_parallel_size={mesh.size()} must be the job's "
                f"{world_size} processes (trainer.num_nodes x trainer.devices), and "
                "tensor_parallel_size 1: scalinglab shards, it does not split tensors"
            )
        blocks = self.model.blocks
        for i, block in enumerate(blocks):
            # Backward starts with the last block: resharding it after forward would only gather it
            # again at once.
            fully_shard(block, mesh=mesh, reshard_after_forward=i < len(blocks) - 1)
        fully_shard(self.model, mesh=mesh)
        # Training calls GPT.loss, not forward: its calls must gather the root unit as forward's do.
        register_fsdp_forward_method(self.model, "loss")
        self.loss_fn = self._loss_fn()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        loss = self.loss_fn(x, y)
        self._last_step = (loss.detach(), x.shape)
        return loss

    def _logs_at(self, step: int) -> bool:
        """Whether this optimizer step has a row in the logs: every log_every_n_steps steps, and the
        last, so that its figures reach the run's record."""
        return step % self.trainer.log_every_n_steps == 0 or step >= self.trainer.max_steps

    # A logged step's loss is read on the host only once the GPU has finished that step: reading it
    # at once (`.item()`) would wait for the GPU to empty its queue, which then idles while the host
    # prepares the next step (2% of a 30M model's step time on an H100, with a row every 10 steps).
    # So a row is queued at its step with its loss on its way to the host, and written at the first
    # step end that finds the GPU done with it (an event query, no wait), a step or two later; or
    # at once where the loop waits for the GPU anyway: the last step, a checkpoint, a validation.

    def on_train_start(self) -> None:
        self._fit_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.first_step_s is None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.first_step_s = time.perf_counter() - self._fit_start
        step = self.trainer.global_step
        if self._logs_at(step):
            self._queue_row(step)
        if self._write_rows(wait=step >= self.trainer.max_steps):
            # For callbacks and the progress bar; the loggers have had it.
            bar = self.trainer.progress_bar_callback is not None
            loss = torch.tensor(self._last_written.loss_value)
            self.log("train/loss", loss, prog_bar=bar, logger=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints are saved before this module's on_train_batch_end: the rows up to the
        # checkpoint's step go to disk first, so a job killed after it loses none of them.
        step = self.trainer.global_step
        if self._last_step is not None and self._logs_at(step):
            self._queue_row(step)
        self._write_rows(wait=True)

    def on_validation_start(self) -> None:
        self._write_rows(wait=True)  # validation waits for the GPU: the rows it follows first

    def on_train_end(self) -> None:
        self._write_rows(wait=True)

    def _queue_row(self, step: int) -> None:
        if self._queued_step == step:  # already queued, at a checkpoint of this step
            return
        self._queued_step = step
        trainer = self.trainer
        loss, shape = self._last_step
        metrics = {**self._position(step, shape), "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        loss, done = self._to_host(loss)
        self._pending.append(_Row(step, metrics, loss, done, time.perf_counter(), shape[1]))

    def _position(self, step: int, shape: torch.Size) -> dict[str, int]:
        """Tokens and FLOPs trained on by the end of `step`, for batches of `shape`."""
        trainer = self.trainer
        tokens = step * math.prod(shape) * trainer.accumulate_grad_batches * trainer.world_size
        return {"tokens": tokens, "flops": tokens * self.config.flops_per_token(shape[1])}

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

    def _write_rows(self, wait: bool) -> bool:
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
            metrics = {**row.metrics, "train/loss": row.loss_value, **self._throughput(row)}
            self._last_written = row
            for logger in self.loggers:  # as Lightning's own logging calls them
                logger.log_metrics(metrics, step=row.step)
                logger.save()
        return written

    def _check_divergence(self, loss: float, step: int) -> None:
        bound = self.hparams.divergence_threshold
        if not math.isfinite(loss) or (bound is not None and loss > bound):
            raise Diverged(f"train/loss={loss} at step {step} (bound {bound})")

    def _throughput(self, row: _Row) -> dict[str, float]:
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
        peak = peak_flops(self.device, self.hparams.peak_flops)
        if peak:
            peak *= self.trainer.world_size
            metrics["perf/mfu"] = tokens_per_sec * self.config.flops_per_token(row.seq_len) / peak
            metrics["perf/mfu_6n"] = tokens_per_sec * self.config.flops_per_token_6n / peak
        return metrics

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        loss = self.model.loss(x, y)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        if self.hparams.bytes_per_token:
            bpb = loss / math.log(2) / self.hparams.bytes_per_token
            self.log("val/bpb", bpb, on_epoch=True, sync_dist=True, batch_size=x.shape[0])

    def on_validation_epoch_end(self) -> None:
        step = self.trainer.global_step
        self.log("step", float(step))
        if self._last_step is not None:  # a validation between logged steps is placed too
            for key, value in self._position(step, self._last_step[1]).items():
                self.log(key, torch.tensor(value, dtype=torch.float64))

    def _loss_scaler(self) -> torch.amp.GradScaler | None:
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # Lightning refuses to clip for an optimizer that unscales its own gradients (fused AdamW):
        # a guard for fp16's loss scaler. Without a scaler (bf16-mixed, fp32) the gradients are the
        # true ones, so they are clipped here as Lightning would clip them.
        if not gradient_clip_val or self._loss_scaler() is not None:
            return super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
        plugin = self.trainer.precision_plugin
        if gradient_clip_algorithm == "value":
            plugin.clip_grad_by_value(optimizer, gradient_clip_val)
        else:
            plugin.clip_grad_by_norm(optimizer, gradient_clip_val)

    def configure_optimizers(self):
        # No weight decay on norms, biases and embeddings (GPT-2 / nanoGPT practice).
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            is_matrix = p.dim() >= 2 and not name.startswith(("embed.", "pos_embed."))
            (decay if is_matrix else no_decay).append(p)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        # Built directly: instantiate would wrap the parameter tensors in OmegaConf containers.
        kwargs = dict(self.hparams.optimizer)
        if "fused" in kwargs and kwargs["fused"] is None:
            # Fused on CUDA, unless an fp16 loss scaler must unscale the gradients before clipping.
            kwargs["fused"] = self.device.type == "cuda" and self._loss_scaler() is None
        optimizer = get_class(kwargs.pop("_target_"))(groups, **kwargs)
        schedule = instantiate(self.hparams.scheduler)
        total_steps = self.trainer.max_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: schedule(step, total_steps)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
