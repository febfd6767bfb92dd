"""One job, as its plan says (scalinglab.planning.JobPlan): train it, resume it, or skip it.

A job's every artifact lands in its output directory: the run record (`run.json`, `metrics.csv`),
`checkpoints/last.ckpt`, Hydra's `.hydra/` and W&B's files. Launching the same job again finds that
directory: a completed job is skipped, an unfinished one resumes. torch, Lightning and W&B load
with this module, when a job runs (scalinglab.train imports it then).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import Logger
from pytorch_lightning.trainer.states import TrainerStatus
from pytorch_lightning.utilities import rank_zero_only

from scalinglab.callbacks import (
    Checkpoints,
    Diverged,
    LogLines,
    MetricsCSV,
    RunRecord,
    StepMetrics,
    VerifiedCheckpointIO,
    damage,
    finish_wandb,
    resume_point,
    validated_last_step,
)
from scalinglab.errors import ConfigError, OutputError, RankFailed
from scalinglab.guards import build
from scalinglab.module import LanguageModel
from scalinglab.planning import JobPlan
from scalinglab.provenance import config_hash, refuse_another_config
from scalinglab.records import (
    METRICS_FILE,
    RUN_FILE,
    DamagedRecord,
    Status,
    View,
    fields_in,
    git_state,
    holding,
    read_run,
    reap_temporaries,
    refused_write,
    set_aside,
    write_atomic,
)
from scalinglab.sweeping import stale

log = logging.getLogger("scalinglab")
# Keep job logs to what the job did: Lightning 2.6 advertises a cloud logger in every job's log, and
# its own pytree helper trips a torch deprecation warning on every fit.
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: "💡 Tip" not in record.getMessage()
)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def train_job(job: JobPlan) -> dict[str, Any]:
    """Train (or resume, or skip) one run in its output directory; return its final run record.

    The job's lock is held throughout: a second launch of the same job (a sweep launched twice)
    skips it while this process trains it.
    """
    output_dir = job.output_dir
    if output_dir is None:
        raise ConfigError("paths.output_dir must be set: the job's record and checkpoints go there")
    if not writable(output_dir):
        return skipped_read_only(output_dir)
    # Rank 0 holds the lock for the job's ranks, whom it starts or waits for.
    lock = holding(output_dir) if rank_zero_only.rank == 0 else contextlib.nullcontext(True)
    with lock as ours:
        if not ours:
            log.warning(f"{output_dir} is held by another process (running it): skipping it here")
            return {"status": Status.RUNNING, "path": str(output_dir)}
        refuse_another_config(output_dir, job.cfg)  # before anything here is read or written
        reap_temporaries(output_dir)
        previous = previous_record(output_dir)
        if previous and previous.get("status") == Status.COMPLETED:
            then, now = previous.get("git_commit"), git_state()[0]
            if not stale(then, now):
                log.info(f"{output_dir} is completed: skipping (delete its run.json to retrain)")
                return previous
            if not job.cfg.get("rerun_stale"):
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
            save_job_config(job.cfg, output_dir)
        with SigtermOutsideLightning().installed() as sigterm:
            return fit(job, sigterm)


def writable(output_dir: Path) -> bool:
    """Make the job's directory; whether files can be written there (its lock, to begin with)."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with holding(output_dir):
            return True
    except OSError as err:
        if refused_write(err, output_dir) is err:
            raise
        return False


def skipped_read_only(output_dir: Path) -> dict[str, Any]:
    """A job whose directory takes no writes: skipped when it is completed, as it would be
    anyway (it needs no lock, nothing is written); refused in one line otherwise."""
    with contextlib.suppress(DamagedRecord):
        previous = read_run(output_dir)
        if previous and previous.get("status") == Status.COMPLETED:
            log.info(f"{output_dir} is completed: skipping (its directory takes no writes)")
            return previous
    raise OutputError(errno.EROFS, f"cannot write to {output_dir}: the job cannot run there")


def save_job_config(cfg: DictConfig, output_dir: Path) -> None:
    """The job's composed config where Hydra keeps it, `.hydra/config.yaml` (with `hydra.yaml` and
    `overrides.yaml` for a job Hydra started here), written when the job trains: Hydra's own
    writing is off (conf/hydra/default.yaml), as it would rewrite a skipped or refused job's. The
    run frame's config columns, the W&B run config and the provenance check read it."""
    job = cfg.copy()
    with open_dict(job):
        job.pop("hydra", None)  # compose(..., return_hydra_config=True) leaves it in
    files = {"config.yaml": job}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        if Path(hydra_cfg.runtime.output_dir).resolve() == output_dir.resolve():
            files["hydra.yaml"] = OmegaConf.create({"hydra": hydra_cfg})
            files["overrides.yaml"] = hydra_cfg.overrides.task
    (output_dir / ".hydra").mkdir(exist_ok=True)
    for name, content in files.items():
        text = OmegaConf.to_yaml(content).encode()
        write_atomic(output_dir / ".hydra" / name, lambda f, text=text: f.write(text))


def retire(output_dir: Path, suffix: str) -> None:
    """Rename a job's record, metrics and checkpoints out of the way, so that it trains afresh."""
    for name in (RUN_FILE, METRICS_FILE, "checkpoints"):
        if (output_dir / name).exists():
            os.replace(output_dir / name, output_dir / f"{name}.{suffix}")


def previous_record(output_dir: Path) -> dict[str, Any] | None:
    """The job's run.json, if readable; a damaged one is set aside and the job's state is
    unknown: it resumes from its checkpoint, or runs from the start."""
    try:
        return read_run(output_dir)
    except DamagedRecord as err:
        log.warning(
            f"{err}: the job's state is unknown; it resumes from its checkpoint if it has one"
        )
        if rank_zero_only.rank == 0:  # the other ranks of the job read it as none too
            set_aside(output_dir / RUN_FILE, "unreadable")
        return None


class SigtermOutsideLightning:
    """A SIGTERM where Lightning's handler (installed by trainer.fit and trainer.validate, the
    previous one restored at their teardown) does not catch it. Before the fit it stops the job
    as Lightning's would: exit 143, recorded `interrupted` once the trainer runs. After the fit the
    job is writing its record and closing W&B: the signal is logged, not fatal (a second SIGTERM
    150 ms after the first killed the job there, exit -15 instead of 143)."""

    def __init__(self) -> None:
        self.trainer: pl.Trainer | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGTERM) is not self:
            return  # Lightning's handler ran first: it stops the fit at the step's end
        if self.trainer and self.trainer.state.status in (
            TrainerStatus.FINISHED,
            TrainerStatus.INTERRUPTED,
        ):
            log.info("SIGTERM: the job is already finishing its record")
            return
        raise SystemExit(128 + signal.SIGTERM)

    @contextlib.contextmanager
    def installed(self) -> Iterator[SigtermOutsideLightning]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # Python sets handlers in the main thread only
            return
        previous = signal.signal(signal.SIGTERM, self)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)


def fit(job: JobPlan, sigterm: SigtermOutsideLightning) -> dict[str, Any]:
    """Build the job's data, module, loggers, callbacks and trainer, and fit; the final record."""
    cfg = job.cfg
    if cfg.get("threads"):
        # Two threads on two cores slow ~13x when another process holds one: set it explicitly.
        torch.set_num_threads(int(cfg.threads))
    if job.compile:
        use_compile_cache(Path(cfg.paths.compile_cache_dir))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, data_info = prepared_data(job)
    module = LanguageModel(
        model=job.model.to_dict(),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        compile=job.compile,
        bytes_per_token=data_info.get("bytes_per_token"),
    )
    # Lightning's bar writes to stdout: auto shows it where stdout is a terminal.
    progress_bar = shows_progress_bar(cfg.get("progress_bar", "auto"), sys.stdout.isatty())
    loggers = build_loggers(job, progress_bar)
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values()]
    if progress_bar:  # tqdm's, named: Lightning would pick Rich's where rich is installed
        callbacks.append(pl.callbacks.TQDMProgressBar(refresh_rate=10))
    record, checkpoints = the_one(callbacks, RunRecord), the_one(callbacks, Checkpoints)
    the_one(callbacks, StepMetrics)
    checkpoints.save_at.update(job.save_at)  # a WSD trunk: its branches' starts
    checkpoints.run_id = job.run_id
    record.fields.update(run_fields(job, data_info))
    trainer = sigterm.trainer = build_trainer(job, loggers, callbacks, progress_bar)
    resume_from = starting_point(job, checkpoints.dirpath, the_one(loggers, MetricsCSV))
    wandb_env = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        try:
            if not validated_last_step(trainer):  # the final step falls between validations
                trainer.validate(module, datamodule=datamodule, verbose=False)
            trainer.strategy.barrier("scalinglab: the fit ended on every rank")
        except Exception as err:
            if (failed := rank_failure(trainer)) is None:
                raise
            raise failed from err
        return record.complete(trainer)
    except (Diverged, torch.OutOfMemoryError):
        return record.fields  # a result, recorded as such by RunRecord
    except SystemExit as err:  # a signal: recorded `interrupted`, the exit code says which
        if record.exit_code is None:
            raise
        raise SystemExit(record.exit_code) from err
    except Exception as err:
        if record.status == Status.RUNNING:  # after the fit, where Lightning's on_exception is not
            record.fail(err)
        raise
    finally:
        code = 0 if record.status == Status.COMPLETED else 1
        finish_wandb(loggers, record.fields, exit_code=code, env=wandb_env)


def rank_failure(trainer: pl.Trainer, wait_s: float = 60) -> RankFailed | None:
    """Which of the ranks Lightning started (it runs the command line again for each) ended in
    failure, when the job's last collective failed on rank 0. Lightning's own watch polls every
    5 s: a rank failing near the end left the job exit 0, or its record `running`."""
    ranks = getattr(trainer.strategy.launcher, "procs", None) or []
    codes = {}
    for rank, process in enumerate(ranks, 1):
        with contextlib.suppress(subprocess.TimeoutExpired):
            codes[rank] = process.wait(timeout=wait_s)
    failed = [f"rank {rank} exited with {code}" for rank, code in codes.items() if code]
    if failed:
        return RankFailed(f"{'; '.join(failed)}: the job failed (each rank logs to the job's log)")
    return None


def prepared_data(job: JobPlan) -> tuple[pl.LightningDataModule, dict[str, Any]]:
    """The job's data module, set up for fit, and its metadata; refused where its token ids do not
    fit the model's vocabulary."""
    datamodule: pl.LightningDataModule = build(job.cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    vocab = job.model.vocab_size
    if datamodule.vocab_size > vocab:
        raise ConfigError(
            f"the data has {datamodule.vocab_size} token ids, more than the {vocab} "
            "its config announces (the model's vocabulary): set data.vocab_size"
        )
    return datamodule, datamodule.metadata()


def build_trainer(
    job: JobPlan, loggers: list[Logger], callbacks: list[pl.Callback], progress_bar: bool
) -> pl.Trainer:
    """Lightning's Trainer for the plan, checked to run the processes the plan counted."""
    cfg = job.cfg
    plugins = [build(p) for p in cfg.trainer.get("plugins") or []]
    trainer: pl.Trainer = build(
        cfg.trainer,
        max_steps=job.steps,
        precision=job.precision,
        logger=loggers,
        callbacks=callbacks,
        plugins=[*plugins, VerifiedCheckpointIO()],
        enable_progress_bar=progress_bar,
        default_root_dir=str(job.output_dir),
    )
    if trainer.world_size != job.world_size:  # tokens per step would be wrong in every record
        raise ConfigError(
            f"the trainer runs {trainer.world_size} processes where trainer.devices="
            f"{cfg.trainer.devices} x num_nodes={cfg.trainer.num_nodes} counts {job.world_size}"
        )
    return trainer


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


def scaling_fields(job: JobPlan) -> dict[str, Any]:
    """The quantities a scaling study filters and fits on (the record's View.SCALING fields): flat
    keys in run.json and W&B."""
    model, cfg = job.model, job.cfg
    values = {
        "n_params": model.n_params,
        "n_params_nonembedding": model.n_params_nonembedding,
        "flops_per_token": model.flops_per_token(job.seq_len),
        "flops_per_token_6n": model.flops_per_token_6n,
        "tokens_per_step": job.tokens_per_step,
        "batch_size": int(cfg.data.batch_size),
        "seq_len": job.seq_len,
        "lr": float(cfg.optimizer.lr),
        "seed": int(cfg.seed),
    }
    return {key: values[key] for key in fields_in(View.SCALING)}


def run_fields(job: JobPlan, data_info: dict[str, Any]) -> dict[str, Any]:
    """What run.json says of the job before it trains."""
    model = job.model
    target_params_error = None
    if model.target_params:
        target_params_error = model.n_params_nonembedding / model.target_params - 1
        log.info(
            f"model.target_params={model.target_params:.3g}: d_model={model.d_model} "
            f"n_layers={model.n_layers}, {model.n_params_nonembedding:,} non-embedding "
            f"parameters ({target_params_error:+.1%})"
        )
    commit, dirty = git_state()
    fields = {
        "sweep_id": job.cfg.sweep_id,
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "config_hash": config_hash(job.cfg),
        "git_commit": commit,
        "git_dirty": dirty,
        "model": model.to_dict(),
        **scaling_fields(job),
        "max_steps": job.steps,
        "target_params_error": target_params_error,
        "irreducible_loss": data_info.get("irreducible_loss"),
        "tokenizer": tokenizer_id(data_info),
        "val_set": data_info["val_fingerprint"][:16],
        "data": data_info,
    }
    if job.start is not None:  # the FLOPs of the trunk up to the branch point, trained once
        fields["init_from"] = str(job.start.checkpoint)
        fields["flops_shared"] = job.flops_shared
    return {**fields, "run_id": job.run_id, "name": job.name}


def tokenizer_id(data_info: dict[str, Any]) -> str | None:
    """The tokenizer's name, with 8 digits of its file's sha256 where it was trained (bpe): two
    BPE tokenizers of one size share a name, not their ids."""
    name, digest = data_info.get("tokenizer"), data_info.get("tokenizer_sha256")
    return f"{name}:{digest[:8]}" if name and digest else name


def build_loggers(job: JobPlan, progress_bar: bool) -> list[Logger]:
    """The configured loggers, metrics.csv always among them, and plain progress lines where no
    progress bar is shown. A W&B run gets the job's id and name, and the scaling keys in its config."""
    cfg = job.cfg
    loggers: list[Logger] = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        is_wandb = "Wandb" in logger_cfg._target_
        named = {"id": job.run_id, "name": job.name} if is_wandb else {}
        loggers.append(build(logger_cfg, **named))
    if not any(isinstance(lg, MetricsCSV) for lg in loggers):  # the run record needs it
        loggers.insert(0, MetricsCSV(job.output_dir))
    if not progress_bar:
        # About 20 lines a job, on steps whose figures were logged (every log_every_n_steps).
        every = cfg.trainer.log_every_n_steps
        loggers.append(LogLines(max(1, job.steps // 20 // every) * every, job.steps))
    return loggers


def starting_point(job: JobPlan, checkpoint_dir: Path, metrics: MetricsCSV) -> str | None:
    """The checkpoint fit starts from: the job's newest intact one, else `ckpt_path` (the user's:
    its weights, optimizer, schedule and step), else a WSD branch's start (its trunk's curve up to
    there is copied), else none. metrics.csv keeps the rows up to that step."""
    resume_from = resume_point(checkpoint_dir)
    given: tuple[str, Path] | None = None  # (what the message calls it, the checkpoint)
    if job.cfg.get("ckpt_path"):
        given = ("ckpt_path=", Path(str(job.cfg.ckpt_path)).expanduser())
    elif job.start is not None:
        given = ("the WSD branch's start ", job.start.checkpoint)
    if resume_from is None and given is not None:
        what, resume_from = given
        if not resume_from.exists():
            raise ConfigError(f"{what}{resume_from}: no such checkpoint")
        if why := damage(resume_from):
            raise ConfigError(f"{what}{resume_from} is damaged ({why})")
        if job.start is not None and rank_zero_only.rank == 0:
            shutil.copy(resume_from.parents[1] / METRICS_FILE, metrics.path)
    step = 0
    if resume_from is not None:
        step = torch.load(resume_from, map_location="cpu", weights_only=True, mmap=True)[
            "global_step"
        ]
        if given is not None and str(resume_from) == str(given[1]) and step >= job.steps:
            raise ConfigError(  # it would be recorded completed at its own step, not this plan's
                f"{given[0]}{resume_from} is at step {step}, not before this run's last step "
                f"{job.steps} (trainer.max_steps or the budget's): nothing would train"
            )
        log.info(f"resuming {metrics.path.parent} from step {step} of {resume_from}")
    metrics.repair(step)
    return None if resume_from is None else str(resume_from)


def use_compile_cache(directory: Path) -> None:
    """Point torch.compile's on-disk caches (inductor's graphs and kernels, Triton's binaries) at
    one directory: every job that sees it, in any process or on any node of a shared disk,
    compiles a given shape once, and the others load the result."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(directory / "triton")
