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
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

from scalinglab.errors import ConfigError
from scalinglab.model import GPT, GPTConfig, is_hidden_matrix


class LanguageModel(pl.LightningModule):
    """The steps, the loss and the optimizer; what happens around them (the run record, the logged
    rows, checkpoints) is in scalinglab.callbacks."""

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        compile: bool = False,
        bytes_per_token: float | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.config = GPTConfig(**model)
        self.model = GPT(self.config)
        self.loss_fn = self._loss_fn()

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
        return self.loss_fn(x, y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        loss = self.model.loss(x, y)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        # Bits per byte are a code length of the text: a masked-token loss (mlm) is not one.
        if self.hparams.bytes_per_token and self.config.causal:
            bpb = loss / math.log(2) / self.hparams.bytes_per_token
            self.log("val/bpb", bpb, on_epoch=True, sync_dist=True, batch_size=x.shape[0])

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
        # Built directly: instantiate would wrap the parameter tensors in OmegaConf containers.
        kwargs = dict(self.hparams.optimizer)
        groups = parameter_groups(self.model, self.config, kwargs)
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


def parameter_groups(
    model: torch.nn.Module, cfg: GPTConfig, optimizer: dict[str, Any]
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: weight decay on matrices only, and under mup/completep
    the hidden matrices' own lr, weight decay and eps (GPTConfig's hidden_* multipliers).

    No weight decay on norms, biases and embeddings (GPT-2 / nanoGPT practice). A tied head is the
    embedding matrix (named `embed.weight`, listed once): it gets the embedding's lr and no decay,
    which is also muP's rule for a readout with an output multiplier (the mup package's
    MuSharedReadout), so tying needs no exception. An untied head decays at the base lr.
    Group 0 always runs at the base lr (the logged `lr`), and LambdaLR multiplies each group's own
    initial lr, so the ratios between groups hold through the schedule. Under sp there are the two
    groups there always were (a checkpoint's optimizer state still loads).
    """
    decay, no_decay, hidden = [], [], []
    for name, p in model.named_parameters():
        if p.dim() < 2 or name.startswith(("embed.", "pos_embed.")):
            no_decay.append(p)
        elif is_hidden_matrix(name, p) and cfg.parametrization != "sp":
            hidden.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    if hidden:
        group = {"params": hidden, "lr": optimizer["lr"] * cfg.hidden_lr_multiplier}
        if "weight_decay" in optimizer:
            group["weight_decay"] = optimizer["weight_decay"] * cfg.hidden_weight_decay_multiplier
        if "eps" in optimizer:
            group["eps"] = optimizer["eps"] * cfg.hidden_eps_multiplier
        groups.append(group)
    return [group for group in groups if group["params"]]
