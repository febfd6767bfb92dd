"""W&B: `WandbRun` makes a job's W&B run comparable with the others (the job's whole config,
tags, tokens and FLOPs as the losses' axes, the final checkpoint as an artifact) and
`finish_wandb` closes it with the record's figures. `LogLines` is a logger: plain progress lines
for logs that are files."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from scalinglab.callbacks.checkpoints import Checkpoints, checksum_path
from scalinglab.callbacks.record import RunRecord
from scalinglab.records import View, fields_in, parse_overrides

log = logging.getLogger("scalinglab")

# ---- W&B -----------------------------------------------------------------------------------------

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
    """A W&B run's config: the job's config (nested), its record's View.WANDB_CONFIG fields (the
    scaling quantities as top-level keys, which W&B filters and the analysis loader read), and its
    overrides as a list and as {key: value} (`override`), to filter and group runs by what a sweep
    varied. Its `model` is the model as built (the record's), where the config leaves the shape
    to the size rule (model.target_params, model.d_model null)."""
    overrides = list(fields.get("overrides") or [])
    flat = {key: fields[key] for key in fields_in(View.WANDB_CONFIG) if key in fields}
    if isinstance(fields.get("model"), dict):
        config = {**config, "model": {**(config.get("model") or {}), **fields["model"]}}
    return {**config, **flat, "overrides": overrides, "override": parse_overrides(overrides)}


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


def finish_wandb(
    loggers: list[Logger], record: dict[str, Any], exit_code: int, env: dict[str, str]
) -> None:
    """Close this job's W&B run (a later job must not reuse it) with the record's View.WANDB_SUMMARY
    fields in its summary, and restore the WANDB_* variables the run changed."""
    try:
        summary = {k: record[k] for k in fields_in(View.WANDB_SUMMARY) if k in record}
        if "status" in summary:
            summary["status"] = str(summary["status"])  # W&B's JSON, not an enum
        for logger in loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.summary.update(summary)
        wandb = sys.modules.get("wandb")  # never imported: no run to finish
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=exit_code)
    finally:
        for key in [k for k in os.environ if k.startswith("WANDB_")]:
            if key not in env:
                del os.environ[key]
        os.environ.update(env)


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
