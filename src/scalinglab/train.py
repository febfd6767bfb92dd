"""Train one GPT: `scaling-train [overrides]`, or a sweep with `scaling-train -m ...`.

`main` only composes the config; `train(cfg)` is a plain function that tests and scripts call.
A job's every artifact lands in its output directory (`paths.output_dir`): the run record
(`run.json`, `metrics.csv`), `checkpoints/last.ckpt`, Hydra's `.hydra/` and W&B's files. Re-running
the same command finds that directory again: a completed job is skipped, an unfinished one resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import pkgutil
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from scalinglab.errors import ConfigError
from scalinglab.planning import BUDGET_KEYS, build, plan, world_size
from scalinglab.planning import CONFIG_DIR as _CONFIG_DIR
from scalinglab.records import Status, View, fields_in
from scalinglab.sweeping import stale

# torch, Lightning and W&B load when a job runs, not before Hydra reads the command line: `--help`,
# `--cfg` and shell completion take well under a second instead of five.
if TYPE_CHECKING:
    from pytorch_lightning.loggers import Logger

    from scalinglab.callbacks import MetricsCSV
    from scalinglab.model import GPTConfig

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


# Options that say how to run a command or label it (W&B tags), not what it trains: the same
# command with them finds its own directories (conf/hydra/default.yaml leaves them out of the jobs'
# directory names too).
HOW_TO_RUN = ("rerun_stale=", "progress_bar=", "tags=", "+tags=")


def sweep_id_from_argv(name: str) -> str:
    """`name`-hash of the command line's overrides (launcher and hydra.* settings excluded).

    Registered with use_cache: Hydra copies the resolver cache from the sweep's config into each
    job's, so every job of a sweep (in-process or on SLURM) sees the id its launcher computed.
    """
    overrides = sorted(
        a
        for a in sys.argv[1:]
        if not a.startswith(
            ("-", "hydra.", "hydra/", "launcher=", "sweep_id=", "run_id=", *HOW_TO_RUN)
        )
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
    """The quantities a scaling study filters and fits on (the record's View.SCALING fields): flat
    keys in run.json and W&B."""
    values = {
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
    return {key: values[key] for key in fields_in(View.SCALING)}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume, or skip) one job, then its WSD decay branches if it has any.

    Returns the job's final run record (with branches: the longest run's; each branch has its own
    record under `branches/`).
    """
    trunk, branches = wsd_branch_configs(cfg)
    plan(trunk)  # all that can refuse the config, before the job's directory and lock exist
    record = train_job(trunk)
    for branch in branches:
        if record.get("status") == Status.COMPLETED:
            train_job(branch)
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
    schedule = build(cfg.scheduler)

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
    trunk = with_budget(tokens[-1])
    with open_dict(trunk):  # the trunk saves each branch's start
        trunk.callbacks.checkpoint.save_at = {int(b.init_step): b.init_from for b in branches}
    return trunk, branches


def train_job(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume, or skip) one run in cfg.paths.output_dir; return its final run record.

    The job's lock is held throughout: a second launch of the same job (a sweep launched twice)
    skips it while this process trains it.
    """
    from pytorch_lightning.utilities import rank_zero_only

    from scalinglab.records import git_state, holding

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Rank 0 holds the lock for the job's ranks, whom it starts or waits for.
    lock = holding(output_dir) if rank_zero_only.rank == 0 else contextlib.nullcontext(True)
    with lock as ours:
        if not ours:
            log.warning(f"{output_dir} is held by another process (running it): skipping it here")
            return {"status": Status.RUNNING, "path": str(output_dir)}
        previous = previous_record(output_dir)
        if previous and previous.get("status") == Status.COMPLETED:
            then, now = previous.get("git_commit"), git_state()[0]
            if not stale(then, now):
                log.info(f"{output_dir} is completed: skipping (delete its run.json to retrain)")
                return previous
            if not cfg.get("rerun_stale"):
                log.warning(
                    f"{output_dir} was completed at commit {then[:10]}, the code is now at "
                    f"{now[:10]}: skipping it (rerun_stale=true retrains it)"
                )
                return previous
            log.warning(
                f"{output_dir} was completed at commit {then[:10]}: retraining it at {now[:10]} "
                f"(rerun_stale=true); its old outputs keep the suffix .{then[:10]}"
            )
            retire(output_dir, suffix=then[:10])
        if rank_zero_only.rank == 0:
            save_job_config(cfg, output_dir)
        return fit(cfg, output_dir)


def save_job_config(cfg: DictConfig, output_dir: Path) -> None:
    """The job's composed config where Hydra keeps it, `.hydra/config.yaml`, for a job Hydra did
    not start in this directory (a WSD branch; `train(cfg)` called from Python): the run frame's
    config columns and the W&B run config are read from there, for every job alike."""
    from scalinglab.records import write_atomic

    if HydraConfig.initialized():
        started_here = Path(HydraConfig.get().runtime.output_dir).resolve() == output_dir.resolve()
        if started_here:
            return  # Hydra wrote it, with its overrides.yaml beside it
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)  # compose(..., return_hydra_config=True) leaves it in
    path = output_dir / ".hydra" / "config.yaml"
    path.parent.mkdir(exist_ok=True)
    write_atomic(path, lambda f: f.write(OmegaConf.to_yaml(job).encode()))


def retire(output_dir: Path, suffix: str) -> None:
    """Rename a job's record, metrics and checkpoints out of the way, so that it trains afresh."""
    from scalinglab.records import METRICS_FILE, RUN_FILE

    for name in (RUN_FILE, METRICS_FILE, "checkpoints"):
        if (output_dir / name).exists():
            os.replace(output_dir / name, output_dir / f"{name}.{suffix}")


def previous_record(output_dir: Path) -> dict[str, Any] | None:
    """The job's run.json, if readable; a damaged one is set aside and the job's state is
    unknown: it resumes from its checkpoint, or runs from the start."""
    from pytorch_lightning.utilities import rank_zero_only

    from scalinglab.records import RUN_FILE, DamagedRecord, read_run, set_aside

    try:
        return read_run(output_dir)
    except DamagedRecord as err:
        log.warning(
            f"{err}: the job's state is unknown; it resumes from its checkpoint if it has one"
        )
        if rank_zero_only.rank == 0:  # the other ranks of the job read it as none too
            set_aside(output_dir / RUN_FILE, "unreadable")
        return None


def fit(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    import pytorch_lightning as pl
    import torch

    from scalinglab.callbacks import (
        Checkpoints,
        Diverged,
        MetricsCSV,
        RunRecord,
        StepMetrics,
        VerifiedCheckpointIO,
        finish_wandb,
        validated_last_step,
    )
    from scalinglab.module import LanguageModel

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
    module = LanguageModel(
        model=model_cfg.to_dict(),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        compile=compile_loss(cfg),
        bytes_per_token=data_info.get("bytes_per_token"),
    )
    run_id, run_name = job_identity(cfg, output_dir)
    # Lightning's bar writes to stdout: auto shows it where stdout is a terminal.
    progress_bar = shows_progress_bar(cfg.get("progress_bar", "auto"), sys.stdout.isatty())
    loggers = build_loggers(cfg, output_dir, run_id, run_name, max_steps, progress_bar)
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values()]
    if progress_bar:  # tqdm's, named: Lightning would pick Rich's where rich is installed
        callbacks.append(pl.callbacks.TQDMProgressBar(refresh_rate=10))
    record, checkpoints = the_one(callbacks, RunRecord), the_one(callbacks, Checkpoints)
    the_one(callbacks, StepMetrics)
    record.fields.update(run_fields(cfg, model_cfg, data_info, tokens_per_step, max_steps))
    record.fields.update(run_id=run_id, name=run_name)
    plugins = [build(p) for p in cfg.trainer.get("plugins") or []]
    trainer: pl.Trainer = build(
        cfg.trainer,
        max_steps=max_steps,
        precision=cfg.trainer.precision or ("bf16-mixed" if on_gpu(cfg) else "32-true"),
        logger=loggers,
        callbacks=callbacks,
        plugins=[*plugins, VerifiedCheckpointIO()],
        enable_progress_bar=progress_bar,
        default_root_dir=str(output_dir),
    )
    planned = world_size(cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.accelerator)
    if trainer.world_size != planned:  # tokens per step would be wrong in every record
        raise ConfigError(
            f"the trainer runs {trainer.world_size} processes where trainer.devices="
            f"{cfg.trainer.devices} x num_nodes={cfg.trainer.num_nodes} counts {planned}"
        )
    resume_from = starting_point(cfg, checkpoints.dirpath, the_one(loggers, MetricsCSV))
    wandb_env = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        if not validated_last_step(trainer):  # the final step falls between validations
            trainer.validate(module, datamodule=datamodule, verbose=False)
        return record.complete(trainer)
    except (Diverged, torch.OutOfMemoryError):
        return record.fields  # a result, recorded as such by RunRecord
    except SystemExit as err:  # a signal: recorded `interrupted`, the exit code says which
        if record.exit_code is None:
            raise
        raise SystemExit(record.exit_code) from err
    finally:
        code = 0 if record.status == Status.COMPLETED else 1
        finish_wandb(loggers, record.fields, exit_code=code, env=wandb_env)


T = TypeVar("T")


def the_one(items: list[Any], kind: type[T]) -> T:
    found = [item for item in items if isinstance(item, kind)]
    if len(found) != 1:
        raise ConfigError(
            f"a job needs exactly one {kind.__name__} (conf/callbacks/default.yaml, "
            f"conf/logger/): found {len(found)}"
        )
    return found[0]


def shows_progress_bar(setting: Any, tty: bool) -> bool:
    """`progress_bar`: on, off, or auto (on at a terminal; a log file gets plain lines instead).
    YAML reads an unquoted on/off as a boolean, so those are accepted too."""
    choices = {"auto": tty, "on": True, "true": True, "off": False, "false": False}
    if str(setting).lower() not in choices:
        raise ConfigError(f"progress_bar must be auto, on or off, got {setting!r}")
    return choices[str(setting).lower()]


def on_gpu(cfg: DictConfig) -> bool:
    import torch

    return torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")


def compile_loss(cfg: DictConfig) -> bool:
    """Whether to compile the loss: `compile`, or by default on one GPU. Eager, a GPU step took 1.5
    to 2.2 times as long on an H100 (benchmarks/RESULTS.md). Compiled DDP and FSDP jobs are not
    measured yet: there compile=true opts in."""
    trainer = cfg.trainer
    compile_loss = cfg.compile
    if compile_loss is None:
        one = world_size(trainer.devices, trainer.num_nodes, trainer.accelerator) == 1
        compile_loss = on_gpu(cfg) and one
    if compile_loss:
        use_compile_cache(Path(cfg.paths.compile_cache_dir))
    return bool(compile_loss)


def run_fields(
    cfg: DictConfig,
    model: GPTConfig,
    data_info: dict[str, Any],
    tokens_per_step: int,
    max_steps: int,
) -> dict[str, Any]:
    """What run.json says of the job before it trains."""
    from scalinglab.records import git_state

    target_params_error = None
    if model.target_params:
        target_params_error = model.n_params_nonembedding / model.target_params - 1
        log.info(
            f"model.target_params={model.target_params:.3g}: d_model={model.d_model} "
            f"n_layers={model.n_layers}, {model.n_params_nonembedding:,} non-embedding "
            f"parameters ({target_params_error:+.1%})"
        )
    commit, dirty = git_state()
    scaling = flat_scaling_keys(model, cfg, tokens_per_step)
    fields = {
        "sweep_id": cfg.sweep_id,
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "git_commit": commit,
        "git_dirty": dirty,
        "model": model.to_dict(),
        **scaling,
        "max_steps": max_steps,
        "target_params_error": target_params_error,
        "irreducible_loss": data_info.get("irreducible_loss"),
        "data": data_info,
    }
    if cfg.get("init_from"):  # the FLOPs of the trunk up to the branch point, trained once
        fields["init_from"] = cfg.init_from
        fields["flops_shared"] = cfg.init_step * tokens_per_step * scaling["flops_per_token"]
    return fields


def build_loggers(
    cfg: DictConfig,
    output_dir: Path,
    run_id: str,
    run_name: str,
    max_steps: int,
    progress_bar: bool,
) -> list[Logger]:
    """The configured loggers, metrics.csv always among them, and plain progress lines where no
    progress bar is shown. A W&B run gets the job's id and name, and the scaling keys in its config."""
    from scalinglab.callbacks import LogLines, MetricsCSV

    loggers: list[Logger] = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        is_wandb = "Wandb" in logger_cfg._target_
        loggers.append(build(logger_cfg, **({"id": run_id, "name": run_name} if is_wandb else {})))
    if not any(isinstance(lg, MetricsCSV) for lg in loggers):  # the run record needs it
        loggers.insert(0, MetricsCSV(output_dir))
    if not progress_bar:
        # About 20 lines a job, on steps whose figures were logged (every log_every_n_steps).
        every = cfg.trainer.log_every_n_steps
        loggers.append(LogLines(max(1, max_steps // 20 // every) * every, max_steps))
    return loggers


def starting_point(cfg: DictConfig, checkpoint_dir: Path, metrics: MetricsCSV) -> str | None:
    """The checkpoint fit starts from: the job's newest intact one, else `ckpt_path` (the user's:
    its weights, optimizer, schedule and step), else `init_from` (a WSD branch's start, set by
    wsd_branch_configs: its trunk's curve up to there is copied), else none. metrics.csv keeps the
    rows up to that step."""
    import torch
    from pytorch_lightning.utilities import rank_zero_only

    from scalinglab.callbacks import damage, resume_point
    from scalinglab.records import METRICS_FILE

    resume_from = resume_point(checkpoint_dir)
    given = next((key for key in ("ckpt_path", "init_from") if cfg.get(key)), None)
    if resume_from is None and given is not None:
        resume_from = Path(str(cfg[given])).expanduser()
        if not resume_from.exists():
            raise ConfigError(f"{given}={resume_from}: no such checkpoint")
        if why := damage(resume_from):
            raise ConfigError(f"{given}={resume_from} is damaged ({why})")
        if given == "init_from" and rank_zero_only.rank == 0:
            shutil.copy(resume_from.parents[1] / METRICS_FILE, metrics.path)
    step = 0
    if resume_from is not None:
        step = torch.load(resume_from, map_location="cpu", weights_only=True, mmap=True)[
            "global_step"
        ]
        log.info(f"resuming {metrics.path.parent} from step {step} of {resume_from}")
    metrics.repair(step)
    return None if resume_from is None else str(resume_from)


def use_compile_cache(directory: Path) -> None:
    """Point torch.compile's on-disk caches (inductor's graphs and kernels, Triton's binaries) at
    one directory: every job that sees it, in any process or on any node of a shared disk,
    compiles a given shape once, and the others load the result."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(directory / "triton")


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


def share_repository_across_group_queries() -> None:
    """Make `--help` answer in under a second instead of 1.7 s.

    Hydra's help lists every config group by asking its config loader about 110 times for a
    group's options, and each query deep-copies the whole config repository first (about 20 ms; a
    known Hydra cost, facebookresearch/hydra#2907). Help only reads the repository, so here queries
    with the same search path share one copy. Hydra's private API: if it changes, help is just slow.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.object_type import ObjectType

    create_repo = getattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo", None)
    if create_repo is None:
        return
    repos: dict[tuple, Any] = {}

    def get_group_options(
        self: ConfigLoaderImpl,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        key = (id(self), config_name, tuple(overrides or ()))
        if key not in repos:
            repos[key] = create_repo(self, config_name, list(overrides or ()))[1]
        return repos[key].get_group_options(group_name, results_filter)

    ConfigLoaderImpl.get_group_options = get_group_options


if {"--help", "-h"} & set(sys.argv[1:]):
    share_repository_across_group_queries()

# The shipped configs (in an editable install, the repository's conf/, live): as a path for tests
# and scripts that compose with initialize_config_dir, and as the package Hydra reads them from.
CONFIG_DIR = str(_CONFIG_DIR)


@hydra.main(version_base="1.3", config_path="pkg://scalinglab.conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except SystemExit:
        # A signal stopped the job (recorded `interrupted`): the sweep stops with it, launching no
        # further job, its summary up to date. The same command again resumes it.
        from scalinglab.sweeping import update_summary

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == hydra.types.RunMode.MULTIRUN:
            update_summary(Path(hydra_cfg.sweep.dir))
        raise


if __name__ == "__main__":
    main()
