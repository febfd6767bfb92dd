"""A job's plan: what it will train, from its config alone, decided once.

`plan(cfg)` checks a composed config (scalinglab.guards) and sizes the job (scalinglab.budget):
its model, its steps, tokens per step, world size, precision, whether it compiles, its ids and
directories, and its WSD decay branches, each a plan of its own. It reads only the config: a job
plans once, before any data is read or record written, and hands the plan down (scalinglab.job);
the pre-launch check plans every job of a sweep the same way (scalinglab.sweeping).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

import scalinglab.rules  # noqa: F401  (registers the resolvers a config's `plan` node reads)
from scalinglab.budget import (
    BUDGET_KEYS,
    model_config,
    one_config,
    tokens_per_step,
    trainer_world_size,
)
from scalinglab.errors import ConfigError
from scalinglab.guards import (
    build,
    check_keys,
    check_lr_scaling,
    check_optimizer,
    check_output_paths,
    check_run_options,
    check_set,
    check_target_params,
    check_targets,
    check_trainer,
    check_types,
    check_warmup,
    config_errors,
    objective,
    require_positive,
    require_seed,
)
from scalinglab.ids import job_identity

if TYPE_CHECKING:  # torch loads when a job plans, not when the CLI parses its arguments
    from scalinglab.model import GPTConfig


@dataclass(frozen=True)
class BranchStart:
    """Where a WSD decay branch starts: its trunk's checkpoint at the trunk's step `step`."""

    checkpoint: Path
    step: int


@dataclass(frozen=True)
class JobPlan:
    """What one job trains. Everything downstream reads it, never re-derives it from `cfg`."""

    cfg: DictConfig  # the job's composed config (a branch's: with its own budget and directory)
    model: GPTConfig
    steps: int  # optimizer steps: trainer.max_steps, or the budget's
    tokens_per_step: int  # every device's batches, accumulated
    world_size: int  # the trainer's processes, all nodes
    precision: str
    compile: bool  # torch.compile the loss
    # Where it runs, and its ids (from its directory unless run_id is set); None for a config
    # composed outside a Hydra run that gives it no directory (planned to check it, as in tests).
    run_id: str | None
    name: str | None
    output_dir: Path | None
    checkpoint_dir: Path | None  # where the job's checkpoints go, its branches' starts among them
    start: BranchStart | None = None  # a WSD branch's start; None: its own checkpoint or none
    save_at: Mapping[int, str] = field(default_factory=dict)  # a trunk's: {step: branch start}
    branches: tuple[JobPlan, ...] = ()  # a trunk's decay branches, shortest first

    @property
    def flops_shared(self) -> float | None:
        """A branch's FLOPs trained once, in its trunk up to the branch point."""
        if self.start is None:
            return None
        return self.start.step * self.tokens_per_step * self.model.flops_per_token(self.seq_len)

    @property
    def seq_len(self) -> int:
        return int(self.cfg.data.seq_len)


def plan(cfg: DictConfig) -> JobPlan:
    """Check a job's config and plan it, with its WSD decay branches if it has any.

    With `wsd_branches: [D1, D2, ...]` (tokens) the job trains to the largest count with its WSD
    schedule, saving a checkpoint where each smaller count's schedule leaves its flat phase; each
    branch resumes from there into its own decay, so it ends exactly where a run trained straight
    to that count would, for the cost of the decay alone.
    """
    tokens = sorted(wsd_branch_tokens(cfg.get("wsd_branches")))
    if not tokens:
        return plan_job(cfg)
    if not str(cfg.scheduler._target_).endswith(".WSD"):
        raise ConfigError("wsd_branches needs scheduler=wsd (a flat phase to branch from)")
    if any(cfg.budget[k] is not None for k in BUDGET_KEYS) or cfg.trainer.max_steps is not None:
        raise ConfigError(
            "wsd_branches sets each run's token budget: leave budget.* and trainer.max_steps unset"
        )
    output_dir = Path(cfg.paths.output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    schedule = build(cfg.scheduler)
    branches = []
    for count in tokens[:-1]:
        branch = _with_budget(cfg, count)
        with open_dict(branch):
            branch.paths.output_dir = str(output_dir / "branches" / f"tokens={count:g}")
            branch.run_id = None
        planned = plan_job(branch, branch=True)
        step = schedule.stable_until(planned.steps)
        if step < 1:
            raise ConfigError(f"wsd_branches: {count:g} tokens end before the flat phase begins")
        start = BranchStart(checkpoint_dir / f"branch-step{step}.ckpt", step)
        branches.append(replace(planned, start=start))
    save_at = {b.start.step: str(b.start.checkpoint) for b in branches if b.start is not None}
    trunk = plan_job(_with_budget(cfg, tokens[-1]), save_at=save_at)
    return replace(trunk, branches=tuple(branches))


def wsd_branch_tokens(branches: Any) -> list[float]:
    """`wsd_branches`: null, or a list of token counts."""
    if branches is None:
        return []
    if not OmegaConf.is_list(branches):
        raise ConfigError(f"wsd_branches must be a list of token counts, got {branches!r}")
    for i, count in enumerate(branches):
        require_positive(f"wsd_branches[{i}]", count)
    return [float(count) for count in branches]


def _with_budget(cfg: DictConfig, tokens: float) -> DictConfig:
    job = cfg.copy()
    with open_dict(job):
        job.wsd_branches = None
        job.budget.tokens = tokens
    return job


def plan_job(
    cfg: DictConfig, branch: bool = False, save_at: Mapping[int, str] | None = None
) -> JobPlan:
    """One job's plan (no branches; a branch's start is set by `plan`). Classes are checked against
    the allow-list before anything is resolved or built."""
    with config_errors(), one_config():
        check_targets(cfg)
        check_output_paths(cfg)
        check_set(cfg)
        check_keys(cfg)
        for key in ("optimizer.lr", "data.batch_size", "data.seq_len"):
            require_positive(key, OmegaConf.select(cfg, key))
        require_seed("seed", cfg.seed)
        for name in ("seed", "language_seed"):  # the data's: its windows' order, its language
            if name in cfg.data:
                require_seed(f"data.{name}", cfg.data[name])
        check_types(cfg)
        check_trainer(cfg.trainer)
        check_run_options(cfg)
        check_optimizer(cfg.optimizer)
        model: GPTConfig = model_config(cfg.model)
        check_target_params(model)
        if cfg.data.seq_len > model.max_seq_len:
            raise ConfigError(
                f"data.seq_len={cfg.data.seq_len} exceeds model.max_seq_len={model.max_seq_len}"
            )
        objective(cfg.data.get("objective", "clm"), model.causal)
        check_lr_scaling(cfg.optimizer, model)
        steps = int(cfg.plan.steps)
        check_warmup(cfg.scheduler, steps)
        processes = trainer_world_size(cfg.trainer)
        if (launcher := in_sweep_launcher()) is not None:
            check_rank_start(processes, launcher)
        where = OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False)
        output_dir = None if where is None else Path(where)
        run_id, name = (None, None) if output_dir is None else job_identity(cfg, output_dir, branch)
        return JobPlan(
            cfg=cfg,
            model=model,
            steps=steps,
            tokens_per_step=tokens_per_step(cfg.data, cfg.trainer, processes),
            world_size=processes,
            precision=cfg.trainer.precision or ("bf16-mixed" if on_gpu(cfg) else "32-true"),
            compile=compiles(cfg, processes),
            run_id=run_id,
            name=name,
            output_dir=output_dir,
            checkpoint_dir=None if output_dir is None else output_dir / "checkpoints",
            save_at=dict(save_at or {}),
        )


# Launchers that start a multi-process job's ranks from outside (torchrun, SLURM tasks, Ray).
RANK_STARTING_LAUNCHERS = "hydra_plugins.scalinglab.launchers."


def check_rank_start(processes: int, launcher: str) -> None:
    """Lightning starts the other ranks of a job by running the process's command line again: in a
    sweep whose launcher (its _target_) does not start them, that runs the whole sweep again for
    each job (a rank then joins another job, or fails while its job is recorded completed)."""
    if processes > 1 and not launcher.startswith(RANK_STARTING_LAUNCHERS):
        raise ConfigError(
            f"a job of {processes} processes in a sweep needs launcher=local_gpus, slurm or ray, "
            f"which start its ranks (hydra/launcher {launcher.rsplit('.', 1)[-1]} cannot: "
            "Lightning would run the whole sweep again for each rank)"
        )


def in_sweep_launcher() -> str | None:
    """The launcher's _target_ of the sweep this job runs in; None outside a sweep."""
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return str(OmegaConf.select(HydraConfig.get(), "launcher._target_", default=""))


def on_gpu(cfg: DictConfig) -> bool:
    import torch

    return torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")


def compiles(cfg: DictConfig, processes: int) -> bool:
    """Whether to compile the loss: `compile`, or by default on one GPU. Eager, a GPU step took 1.5
    to 2.2 times as long on an H100 (benchmarks/RESULTS.md). Compiled DDP and FSDP jobs are not
    measured yet: there compile=true opts in."""
    if cfg.compile is None:
        return on_gpu(cfg) and processes == 1
    return bool(cfg.compile)
