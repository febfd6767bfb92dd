"""Train one GPT: `scaling-train [overrides]`, or a sweep with `scaling-train -m ...`.

`main` only composes the config; `train(cfg)` is a plain function that tests and scripts call.
A job's every artifact lands in its output directory (`paths.output_dir`): the run record
(`run.json`, `metrics.csv`), `checkpoints/last.ckpt`, Hydra's `.hydra/` and W&B's files. Re-running
the same command finds that directory again: a completed job is skipped, an unfinished one resumes.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import os
import pkgutil
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from scalinglab.errors import ConfigError
from scalinglab.model import GPTConfig
from scalinglab.module import Diverged, LanguageModel
from scalinglab.planning import BUDGET_KEYS, build, plan, world_size
from scalinglab.records import (
    METRICS_FILE,
    LogLines,
    MetricsCSV,
    RunRecord,
    SaveAtSteps,
    git_state,
    read_run,
)

log = logging.getLogger("scalinglab")
# Keep job logs to what the job did: Lightning 2.6 advertises a cloud logger in every job's log, and
# its own pytree helper trips a torch deprecation warning on every fit.
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: "💡 Tip" not in record.getMessage()
)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


# ---- stable ids: the same command finds its own directories again ---------------------------------


def digest(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def sweep_id_from_argv(name: str) -> str:
    """`name`-hash of the command line's overrides (launcher and hydra.* settings excluded).

    Registered with use_cache: Hydra copies the resolver cache from the sweep's config into each
    job's, so every job of a sweep (in-process or on SLURM) sees the id its launcher computed.
    """
    overrides = sorted(
        a
        for a in sys.argv[1:]
        if not a.startswith(("-", "hydra.", "hydra/", "launcher=", "sweep_id=", "run_id="))
        and "=" in a
    )
    return f"{safe_name(name)}-{digest(' '.join(overrides))}"


def safe_name(text: str, limit: int = 150) -> str:
    """A file- and W&B-safe name; long ones keep a prefix and a hash of the whole."""
    text = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text)
    return text if len(text) <= limit else f"{text[: limit - 9]}-{digest(text)}"


OmegaConf.register_new_resolver("sweep_id", sweep_id_from_argv, use_cache=True, replace=True)
OmegaConf.register_new_resolver("safe_name", safe_name, replace=True)


# ---- the job -------------------------------------------------------------------------------------


def job_identity(cfg: DictConfig, output_dir: Path) -> tuple[str, str]:
    """(run_id, display name): stable for a given sweep and job overrides."""
    name = cfg.name
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        if hc.mode == hydra.types.RunMode.MULTIRUN:
            name = hc.job.override_dirname or cfg.name
    if cfg.get("init_from"):  # a WSD branch: its trunk's name and its own token count
        name = f"{name}/{output_dir.name}"
    run_id = cfg.run_id or f"{cfg.sweep_id}-{digest(str(output_dir.resolve()), 6)}"
    return safe_name(str(run_id), 120), name


def flat_scaling_keys(model: GPTConfig, cfg: DictConfig, tokens_per_step: int) -> dict[str, Any]:
    """The quantities a scaling study filters and fits on: flat keys in run.json and W&B."""
    return {
        "n_params": model.n_params,
        "n_params_nonembedding": model.n_params_nonembedding,
        "flops_per_token": model.flops_per_token(cfg.data.seq_len),
        "flops_per_token_6n": model.flops_per_token_6n,
        "tokens_per_step": tokens_per_step,
        "batch_size": int(cfg.data.batch_size),
        "seq_len": int(cfg.data.seq_len),
        "lr": float(cfg.optimizer.lr),
        "seed": int(cfg.seed),
    }


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume, or skip) one job, then its WSD decay branches if it has any.

    Returns the job's final run record (with branches: the longest run's; each branch has its own
    record under `branches/`).
    """
    trunk, branches = wsd_branch_configs(cfg)
    save_at = {int(b.init_step): b.init_from for b in branches}
    record = run_job(trunk, save_at=save_at)
    for branch in branches:
        if record.get("status") == "completed":
            run_job(branch)
    return record


def wsd_branch_configs(cfg: DictConfig) -> tuple[DictConfig, list[DictConfig]]:
    """The job to train, and one config per WSD decay branch (none without `wsd_branches`).

    With `wsd_branches: [D1, D2, ...]` (tokens) the job trains to the largest count with its WSD
    schedule, saving a checkpoint where each smaller count's schedule leaves its flat phase; each
    branch resumes from there into its own decay, so it ends exactly where a run trained straight
    to that count would, for the cost of the decay alone.
    """
    tokens = sorted(float(t) for t in cfg.get("wsd_branches") or [])
    if not tokens:
        return cfg, []
    if not str(cfg.scheduler._target_).endswith(".WSD"):
        raise ConfigError("wsd_branches needs scheduler=wsd (a flat phase to branch from)")
    if any(cfg.budget[k] is not None for k in BUDGET_KEYS):
        raise ConfigError("wsd_branches sets each run's token budget: leave budget.* unset")
    output_dir = Path(cfg.paths.output_dir)
    schedule = instantiate(cfg.scheduler)

    def with_budget(tokens: float) -> DictConfig:
        job = cfg.copy()
        with open_dict(job):
            job.wsd_branches = None
            job.budget.tokens = tokens
        return job

    branches = []
    for count in tokens[:-1]:
        branch = with_budget(count)
        _, _, steps = plan(branch)
        start = schedule.stable_until(steps)
        if start < 1:
            raise ConfigError(f"wsd_branches: {count:g} tokens end before the flat phase begins")
        with open_dict(branch):
            branch.paths.output_dir = str(output_dir / "branches" / f"tokens={count:g}")
            branch.run_id = None
            branch.init_step = start
            branch.init_from = str(output_dir / "checkpoints" / f"branch-step{start}.ckpt")
        branches.append(branch)
    return with_budget(tokens[-1]), branches


def run_job(cfg: DictConfig, save_at: dict[int, str] | None = None) -> dict[str, Any]:
    """Train (or resume, or skip) one run in cfg.paths.output_dir; return its final run record.

    save_at: extra checkpoints to save, by optimizer step (WSD branch points).
    """
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    previous = read_run(output_dir)
    if previous and previous.get("status") == "completed":
        log.info(f"{output_dir} is completed: skipping (delete its run.json to retrain)")
        return previous

    # Everything that can reject the config happens before the first record is written.
    model_cfg, tokens_per_step, max_steps = plan(cfg)
    if cfg.get("threads"):
        # Two threads on two cores slow ~13x when another process holds one: set it explicitly.
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: pl.LightningDataModule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    data_info = datamodule.metadata()
    if datamodule.vocab_size > model_cfg.vocab_size:
        raise ConfigError(
            f"the data has {datamodule.vocab_size} token ids, more than the {model_cfg.vocab_size} "
            "its config announces (the model's vocabulary): set data.vocab_size"
        )
    trainer_cfg = cfg.trainer
    on_gpu = torch.cuda.is_available() and trainer_cfg.accelerator in ("auto", "gpu", "cuda")
    # Eager, a GPU step took 1.5 to 2.2 times as long on an H100 (benchmarks/RESULTS.md). Compiled
    # DDP and FSDP jobs are not measured yet: there compile=true opts in.
    compile_loss = cfg.compile
    if compile_loss is None:
        compile_loss = on_gpu and world_size(trainer_cfg.devices, trainer_cfg.num_nodes) == 1
    if compile_loss:
        use_compile_cache(Path(cfg.paths.compile_cache_dir))
    module = LanguageModel(
        model=model_cfg.to_dict(),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        compile=bool(compile_loss),
        bytes_per_token=data_info.get("bytes_per_token"),
        divergence_threshold=cfg.divergence_threshold,
        peak_flops=cfg.peak_flops,
    )
    target_params_error = None
    if model_cfg.target_params:
        target_params_error = model_cfg.n_params_nonembedding / model_cfg.target_params - 1
        log.info(
            f"model.target_params={model_cfg.target_params:.3g}: d_model={model_cfg.d_model} "
            f"n_layers={model_cfg.n_layers}, {model_cfg.n_params_nonembedding:,} non-embedding "
            f"parameters ({target_params_error:+.1%})"
        )
    run_id, run_name = job_identity(cfg, output_dir)
    commit, dirty = git_state()
    scaling = flat_scaling_keys(model_cfg, cfg, tokens_per_step)
    record = RunRecord(
        output_dir,
        {
            "run_id": run_id,
            "sweep_id": cfg.sweep_id,
            "name": run_name,
            "overrides": list(HydraConfig.get().overrides.task)
            if HydraConfig.initialized()
            else [],
            "git_commit": commit,
            "git_dirty": dirty,
            "model": model_cfg.to_dict(),
            **scaling,
            "max_steps": max_steps,
            "target_params_error": target_params_error,
            "irreducible_loss": data_info.get("irreducible_loss"),
            "data": data_info,
        },
    )

    loggers: list[pl.loggers.Logger] = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        is_wandb = "Wandb" in logger_cfg._target_
        loggers.append(build(logger_cfg, **({"id": run_id, "name": run_name} if is_wandb else {})))
    metrics_csv = next((lg for lg in loggers if isinstance(lg, MetricsCSV)), None)
    if metrics_csv is None:  # the run record needs it, whatever else is logged to
        metrics_csv = MetricsCSV(output_dir)
        loggers.insert(0, metrics_csv)
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values()]
    if sys.stderr.isatty():
        callbacks.append(pl.callbacks.TQDMProgressBar(refresh_rate=10))
    else:
        # About 20 lines a job, on steps whose figures were logged (every log_every_n_steps).
        every = trainer_cfg.log_every_n_steps
        loggers.append(LogLines(max(1, max_steps // 20 // every) * every, max_steps))
    if save_at:
        callbacks.append(SaveAtSteps(save_at))
    if cfg.get("init_from"):  # the FLOPs of the trunk up to the branch point, trained once
        record.fields["init_from"] = cfg.init_from
        record.fields["flops_shared"] = cfg.init_step * tokens_per_step * scaling["flops_per_token"]
    precision = trainer_cfg.precision or ("bf16-mixed" if on_gpu else "32-true")
    trainer: pl.Trainer = build(
        trainer_cfg,
        max_steps=max_steps,
        precision=precision,
        logger=loggers,
        callbacks=callbacks,
        enable_progress_bar=sys.stderr.isatty(),
        default_root_dir=str(output_dir),
    )

    ckpt = output_dir / "checkpoints" / "last.ckpt"
    resume_from = str(ckpt) if ckpt.exists() else cfg.get("init_from")
    if resume_from:
        if not Path(resume_from).exists():
            raise ConfigError(f"init_from={resume_from}: no such checkpoint")
        step = torch.load(resume_from, map_location="cpu", weights_only=True)["global_step"]
        if resume_from == cfg.get("init_from"):
            # A branch's curve starts with its trunk's, up to the branch point.
            shutil.copy(Path(resume_from).parents[1] / METRICS_FILE, output_dir / METRICS_FILE)
        metrics_csv.truncate_after(step)
        log.info(f"resuming {output_dir} from step {step} of {resume_from}")

    wandb_env = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    record.start()
    status, final = "failed", {}
    try:
        for logger in loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.experiment.config.update(
                    {**scaling, "max_steps": max_steps}, allow_val_change=True
                )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        if trainer.interrupted:
            raise KeyboardInterrupt
        final = final_figures(trainer, module, datamodule, metrics_csv, scaling)
        if final and module.first_step_s is not None:
            final["first_step_s"] = round(module.first_step_s, 3)
        status = "completed"
    except Diverged as err:
        log.warning(f"diverged: {err}")
        steps = trainer.global_step
        status = "diverged"
        final = {"error": str(err), "steps": steps, "tokens": steps * tokens_per_step}
    except torch.OutOfMemoryError as err:
        log.warning(f"out of memory: {err}")
        status, final = "oom", {"error": "out of memory"}
    except BaseException as err:
        final = {"error": f"{type(err).__name__}: {err}"}
        raise
    finally:
        result = record.finish(status, **final) or {}
        finish_wandb(loggers, result, exit_code=0 if status == "completed" else 1, env=wandb_env)
    return result


def use_compile_cache(directory: Path) -> None:
    """Point torch.compile's on-disk caches (inductor's graphs and kernels, Triton's binaries) at
    one directory: every job that sees it, in any process or on any node of a shared disk,
    compiles a given shape once, and the others load the result."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(directory / "triton")


def final_figures(
    trainer: pl.Trainer,
    module: LanguageModel,
    datamodule: pl.LightningDataModule,
    metrics_csv: MetricsCSV,
    scaling: dict[str, Any],
) -> dict[str, Any]:
    """Final step, tokens, FLOPs and losses; validates once more if the last step was not."""
    _, rows = metrics_csv.read()
    val_steps = [int(float(r["step"])) for r in rows if r.get("val/loss")]
    # Validating is collective, so every rank decides as rank 0 (which writes the file) does.
    if not trainer.strategy.broadcast(bool(val_steps) and val_steps[-1] == trainer.global_step):
        trainer.validate(module, datamodule=datamodule, verbose=False)
        _, rows = metrics_csv.read()
    if trainer.global_rank != 0:  # only rank 0 keeps the record
        return {}
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    train_losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    tokens = trainer.global_step * scaling["tokens_per_step"]
    return {
        "steps": trainer.global_step,
        "tokens": tokens,
        "flops": tokens * scaling["flops_per_token"],
        "train_loss": train_losses[-1] if train_losses else math.nan,
        "val_loss": val[-1],
        "best_val_loss": min(val),
    }


def finish_wandb(
    loggers: list, summary: dict[str, Any], exit_code: int, env: dict[str, str]
) -> None:
    """Close this job's W&B run (a later job must not reuse it) and restore WANDB_* variables."""
    try:
        for logger in loggers:
            if isinstance(logger, pl.loggers.WandbLogger) and logger._experiment is not None:
                keys = (
                    "status",
                    "steps",
                    "tokens",
                    "flops",
                    "train_loss",
                    "val_loss",
                    "best_val_loss",
                    "wall_time_s",
                    "first_step_s",
                )
                logger.experiment.summary.update({k: summary[k] for k in keys if k in summary})
        wandb = sys.modules.get("wandb")  # never imported: no run to finish
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=exit_code)
    finally:
        for key in [k for k in os.environ if k.startswith("WANDB_")]:
            if key not in env:
                del os.environ[key]
        os.environ.update(env)


def register_plugins() -> None:
    """Register scalinglab's Hydra plugins (the sweeper and launchers in hydra_plugins.scalinglab).

    Hydra finds plugins by scanning the hydra_plugins namespace, which an editable install's
    import hook hides from its scan. The scan also re-executes Hydra's own plugin modules, so it
    runs first, and our subclasses are imported against the classes it leaves behind.
    """
    from hydra.core.plugins import Plugins
    from hydra.plugins.plugin import Plugin

    import hydra_plugins.scalinglab as ours

    plugins = Plugins.instance()
    for module_info in pkgutil.iter_modules(ours.__path__):
        module = importlib.import_module(f"{ours.__name__}.{module_info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Plugin)
                and value.__module__ == module.__name__
            ):
                plugins.register(value)


register_plugins()

# The repository's conf/ (an editable install, as the README sets up).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
