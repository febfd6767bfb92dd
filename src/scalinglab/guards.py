"""Guards on a job's config: what it may build (an allow-list of classes, Hydra's own callbacks
included), which keys it may hold (each one something reads), and the values each key takes. A
refusal is a ConfigError naming the key: one line for the user, before anything runs."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import re
import zipfile
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scalinglab.errors import ConfigError
from scalinglab.hints import conforms, constructor_hints, described

if TYPE_CHECKING:  # torch loads when a job plans, not when the CLI parses its arguments
    from scalinglab.model import GPTConfig

CONFIG_DIR = Path(str(files("scalinglab.conf")))  # the shipped configs (an editable install: conf/)
TARGET_PARAMS_TOLERANCE = 0.10  # model.target_params: the size rule's promise (README, model.py)
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed_everything's largest seed


# ---- turning resolver and instantiation failures back into the user's one-line message ----------


def _config_error_in(err: BaseException | None) -> ConfigError | None:
    """The ConfigError an exception chain started from: OmegaConf and Hydra wrap what resolvers
    and constructors raise (OmegaConf keeps the original as __context__, Hydra as __cause__)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Let a ConfigError raised inside a resolver or a constructor out unwrapped."""
    try:
        yield
    except Exception as err:
        cause = _config_error_in(err)
        if cause is None and isinstance(err, OmegaConfBaseException):  # e.g. ${a.typo}
            key = f"{err.full_key}: " if getattr(err, "full_key", None) else ""
            raise ConfigError(f"{key}{str(err).splitlines()[0]}") from None
        if cause is None or cause is err:
            raise
        raise cause from None


def build(cfg: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate of allowed classes only (see target_class), letting a ConfigError
    through unwrapped (it is the user's message)."""
    with config_errors():
        resolved = OmegaConf.to_container(cfg, resolve=True)  # what instantiate will read
        for key, node in _mappings(resolved, _key(cfg)):
            if "_target_" in node:
                target_class(_child(key, "_target_"), node["_target_"])
        return instantiate(cfg, **kwargs)


# ---- what a config may build: an allow-list of classes -------------------------------------------

# A `_target_` must start with one of these, and name a class (not a function) that lives in one of
# TARGET_HOMES: scalinglab's own, torch's optimizers, Lightning's trainer, loggers, callbacks,
# strategies and plugins. Lightning callbacks, loggers and data modules of the running script
# (`__main__.`: benchmarks/throughput.py's) and of the repository's tests pass too.
TARGET_PREFIXES = (
    "scalinglab.",
    "hydra_plugins.scalinglab.",
    "torch.optim.",
    "pytorch_lightning.Trainer",
    "pytorch_lightning.loggers.",
    "pytorch_lightning.callbacks.",
    "pytorch_lightning.strategies.",
    "pytorch_lightning.plugins.",
    "__main__.",
    "tests.",
)
TARGET_HOMES = (
    "scalinglab.",
    "hydra_plugins.scalinglab.",
    "torch.optim.",
    "pytorch_lightning.",
    "lightning_fabric.",
)
# Keys of a `_target_` node that Hydra reads itself.
_INSTANTIATE_KEYS = {"_target_", "_args_", "_partial_", "_recursive_", "_convert_"}


def target_class(key: str, name: Any) -> type:
    """The class a `_target_` names, if a config may build it, else a ConfigError naming the key.

    The name is checked before anything is imported, and what it turns out to be after: under an
    allowed module, `scalinglab.train.shutil.rmtree` is still a function of shutil's."""
    refused = ConfigError(
        f"{key}={name} is not allowed: a config builds only scalinglab's classes, torch "
        "optimizers and Lightning's Trainer, loggers, callbacks, strategies and plugins"
    )
    if not isinstance(name, str) or not name.startswith(TARGET_PREFIXES):
        raise refused
    try:
        found = get_object(name)
    except Exception as err:
        raise ConfigError(f"{key}={name}: no such class ({' '.join(str(err).split())})") from None
    if not isinstance(found, type):
        raise refused
    if not found.__module__.startswith(TARGET_HOMES) and not issubclass(found, _lightning_bases()):
        raise refused
    return found


def _lightning_bases() -> tuple[type, ...]:
    import pytorch_lightning as pl

    return pl.Callback, pl.LightningDataModule, pl.loggers.Logger


def _key(node: DictConfig | ListConfig) -> str:
    """A node's dotted key from the root ("" for the root)."""
    return "" if node._get_parent() is None else str(node._get_full_key(None))


def _child(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _mappings(container: Any, key: str = "") -> Iterator[tuple[str, dict]]:
    """(dotted key, mapping) for every mapping in a plain container, itself included."""
    if isinstance(container, dict):
        yield key, container
        children = ((_child(key, str(k)), v) for k, v in container.items())
    elif isinstance(container, list):
        children = ((f"{key}[{i}]", v) for i, v in enumerate(container))
    else:
        return
    for child_key, child in children:
        yield from _mappings(child, child_key)


def check_targets(cfg: DictConfig) -> None:
    """Refuse any `_target_` of a job's config outside the allow-list, before anything is built or
    resolved (a resolver may build a node: `${n_params:${model}}`). Hydra's own `hydra.*` nodes
    are Hydra's to build, before any of this runs."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra", None)
    for key, node in _mappings(raw):
        if "_target_" in node:
            name = node["_target_"]
            if isinstance(name, str) and "${" in name:  # e.g. ${oc.env:X}: only that value
                name = OmegaConf.select(cfg, _child(key, "_target_"))
            target_class(_child(key, "_target_"), name)


# What a config may put in a job's environment: the settings of the libraries a job runs. Never
# what decides which program or library loads, or what git, a compiler or a shell runs
# (LD_PRELOAD, PYTHONPATH, PATH, GIT_CONFIG_*, CC, BASH_ENV...): configs are not code.
ENV_PREFIXES = (
    "CUDA_", "NCCL_", "TORCH_NCCL_", "GLOO_", "MASTER_ADDR", "MASTER_PORT", "OMP_", "MKL_", "KMP_",
    "OPENBLAS_", "PYTORCH_CUDA_ALLOC_CONF", "TORCH_DISTRIBUTED_DEBUG", "TORCHINDUCTOR_CACHE_DIR",
    "TRITON_CACHE_DIR", "PL_", "WANDB_", "HF_", "TOKENIZERS_", "SCALINGLAB_",
)  # fmt: skip
ENV_NODES = ("hydra.job.env_set", "hydra.launcher.init.runtime_env.env_vars")  # Hydra's; Ray's


def check_environment(cfg: DictConfig) -> None:
    """Refuse an environment variable a config sets (ENV_NODES) outside ENV_PREFIXES."""
    for where in ENV_NODES:
        for name in OmegaConf.select(cfg, where) or {}:
            if not str(name).startswith(ENV_PREFIXES):
                raise ConfigError(
                    f"{where}.{name} is not allowed: a config may set only the environment of the "
                    "libraries a job runs (guards.ENV_PREFIXES: CUDA_, NCCL_, OMP_, WANDB_, ...)"
                )


def check_output_paths(cfg: DictConfig) -> None:
    """Refuse ids and an output root that would place a job's directory outside the output root:
    an empty root (`/runs/...`), a sweep_id or run_id that is a path (`../x`, `a/b`); and a
    `paths.*` directory that is a file, or lies under one."""
    root = OmegaConf.select(cfg, "paths.output_root", default="outputs")
    if root is not None and not str(root).strip():
        raise ConfigError("paths.output_root is empty: it must name the directory runs go under")
    for name in OmegaConf.select(cfg, "paths") or {}:
        where = OmegaConf.select(cfg, f"paths.{name}", throw_on_resolution_failure=False)
        if isinstance(where, str) and where.strip():
            path = Path(where).expanduser()
            existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
            if not existing.is_dir():
                where = "is a file" if existing == path else f"lies under {existing}, a file"
                raise ConfigError(f"paths.{name}={path} {where}: it must be a directory")
    for key in ("sweep_id", "run_id"):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and (
            not re.fullmatch(r"[A-Za-z0-9._=,+-]+", str(value)) or str(value) in (".", "..")
        ):
            raise ConfigError(
                f"{key}={value!r} must be a name (letters, digits and . _ = , + -), not a path: "
                "it names a directory under paths.output_root"
            )


def check_hydra_callbacks(cfg: DictConfig) -> None:
    """Refuse a `hydra.callbacks` node outside the allow-list, or not a Hydra callback at all.

    Hydra builds these itself (hydra._internal.callbacks.Callbacks), before any job plans, so
    check_targets cannot see them in time: `_guard_hydra_callbacks` runs this first."""
    from hydra.experimental.callback import Callback

    for name, node in (OmegaConf.select(cfg, "hydra.callbacks") or {}).items():
        key = f"hydra.callbacks.{name}._target_"
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        refused = ConfigError(
            f"{key}={target} is not allowed: hydra.callbacks builds only Hydra's own callbacks "
            "(hydra.experimental.callbacks) and scalinglab's"
        )
        if not isinstance(target, str) or not target.startswith(
            (*TARGET_PREFIXES, "hydra.experimental.callbacks.")
        ):
            raise refused
        try:
            found = get_object(target)
        except Exception as err:
            raise ConfigError(f"{key}={target}: no such class ({err})") from None
        if not (isinstance(found, type) and issubclass(found, Callback)):
            raise refused


def _guard_hydra_callbacks() -> None:
    """Make Hydra check its callbacks before it builds them: it offers no hook of its own, so its
    Callbacks class is wrapped once, in every process that imports this module (the launcher's
    and each job's)."""
    from hydra._internal.callbacks import Callbacks

    if getattr(Callbacks.__init__, "_checks_targets", False):
        return
    build_callbacks = Callbacks.__init__

    def checked(self: Callbacks, config: DictConfig | None = None) -> None:
        if config is not None:  # before Hydra sets any job's environment or builds a callback
            check_environment(config)
            check_output_paths(config)
            check_hydra_callbacks(config)
        build_callbacks(self, config)

    checked._checks_targets = True  # type: ignore[attr-defined]
    Callbacks.__init__ = checked  # type: ignore[method-assign]


_guard_hydra_callbacks()


# ---- keys: each one something reads --------------------------------------------------------------


def _accepted(cls: type) -> set[str] | None:
    """The keywords a class takes (None: any). A scalinglab class's **kwargs go to its base, whose
    own are added; another library's **kwargs take anything (e.g. WandbLogger's go to wandb)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names - {"self"}
        if not klass.__module__.startswith("scalinglab."):
            return None
    return names - {"self"}


def _is_global(file: Path) -> bool:
    """A config file that sets keys of the whole config (`# @package _global_`)."""
    return "@package _global_" in file.read_text()[:200]


def _root_config() -> tuple[dict[str, Any], list[str]]:
    """train.yaml's own keys, and the config groups its defaults list."""
    root = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "train.yaml"), resolve=False)
    return root, [next(iter(d)) for d in root.pop("defaults") if isinstance(d, dict)]


@functools.cache
def global_groups() -> frozenset[str]:
    """The config groups whose options set keys of the whole config, as every shipped file of
    theirs does: sweep=, experiment=, hparams=, launcher=, debug=, objective=."""
    groups = _root_config()[1]
    return frozenset(g for g in groups if all(map(_is_global, (CONFIG_DIR / g).glob("*.yaml"))))


@functools.cache
def _declared() -> dict[str, set[str]]:
    """Root keys that conf/ declares, each with the keys its node may hold: train.yaml's own (e.g.
    `budget`) and its config groups' (the union over the group's files; `# @package _global_`
    groups such as sweep= add no node of their own)."""
    root, groups = _root_config()
    declared = {k: set(v) if isinstance(v, dict) else set() for k, v in root.items()}
    for group in groups:
        files = [f for f in sorted((CONFIG_DIR / group).glob("*.yaml")) if not _is_global(f)]
        if files:
            nodes = [OmegaConf.to_container(OmegaConf.load(f), resolve=False) for f in files]
            declared[group] = {k for node in nodes for k in node if k != "defaults"}
    return declared


def _is_collection(node: Any) -> bool:
    """A node whose entries each build one object (logger, callbacks)."""
    return isinstance(node, dict) and all(
        isinstance(v, dict) and "_target_" in v for v in node.values()
    )


def _referenced(raw: dict) -> set[str]:
    """Root keys that an interpolation reads (a sweep's own `size_step`, hparams' `hparams_file`)."""
    return {m.split(".")[0] for m in re.findall(r"\$\{([\w.]+)\}", json.dumps(raw, default=str))}


def check_keys(cfg: DictConfig) -> None:
    """Refuse a key that nothing reads: `+foo=1` (Hydra refuses `foo=1`, but `+` adds any key), a
    constructor argument the class does not take (`+optimizer.lrr=1e-3`), a typo in a sweep file."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra", None)
    declared, referenced = _declared(), _referenced(raw)
    for key, value in raw.items():
        if key not in declared and key not in referenced:
            raise ConfigError(
                f"{key} is not a key of scalinglab's config (nothing reads it); "
                f"its keys: {', '.join(sorted(set(declared) - {'hydra'}))}"
            )
        if not isinstance(value, dict) or "_target_" in value or _is_collection(value):
            continue  # a value, a node checked against its class below, or a collection of them
        for child in sorted(set(value) - declared.get(key, set())):
            known = declared.get(key, set())
            if _is_collection({k: v for k, v in value.items() if k in known}):
                raise ConfigError(f"{key}.{child} must be a config with a _target_")
            raise ConfigError(
                f"{key}.{child} is not a key of {key} (it has {', '.join(sorted(known))})"
            )
    for key, node in _mappings(raw):
        if "_target_" not in node:
            continue
        cls = target_class(_child(key, "_target_"), OmegaConf.select(cfg, _child(key, "_target_")))
        accepted = _accepted(cls)
        if accepted is None:
            continue
        for name in sorted(set(node) - _INSTANTIATE_KEYS - accepted):
            raise ConfigError(
                f"{key}.{name} is not a parameter of {node['_target_']} "
                f"(it takes {', '.join(sorted(accepted - {'params'}))})"
            )


# ---- values ------------------------------------------------------------------------------------


def require_positive(key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise ConfigError(f"{key} must be a positive number, got {value!r}")


def _require_positive_int(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")


def require_seed(key: str, value: Any) -> None:
    """A seed is an integer numpy and seed_everything take: 0 to MAX_SEED."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{key} must be an integer from 0 to {MAX_SEED}, got {value!r}")


# Keys whose null means "the job's own": it passes them when it builds (job.build_trainer).
SET_BY_THE_JOB = {"trainer.max_steps"}


def check_types(cfg: DictConfig) -> None:
    """Refuse a value that a class's constructor does not take by its type hints, naming the key:
    `model.d_model=32.0` or `=''` (an int), `data.path=[a,b]` (a str), `optimizer.betas=[0.9]` (a
    pair). A value that does not resolve is left to the check that resolves it."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra", None)
    values = resolved_values(cfg)
    for key, node in _mappings(raw):
        if "_target_" not in node:
            continue
        target = _child(key, "_target_")
        hints = constructor_hints(target_class(target, _resolved(cfg, values, target)))
        for name in sorted(set(node) & set(hints)):
            value = _resolved(cfg, values, _child(key, name))
            if value is _UNRESOLVED or (value is None and _child(key, name) in SET_BY_THE_JOB):
                continue
            if not conforms(value, hints[name]):
                raise ConfigError(
                    f"{_child(key, name)} must be {described(hints[name])}, got {value!r}"
                )


_UNRESOLVED = object()


def resolved_values(cfg: DictConfig) -> dict[str, Any]:
    """Each top-level node of a job's config resolved once, as plain values (without `hydra`, and
    without `plan`, whose resolvers size the job once the checks have passed): checks read a
    sweep's every job, and each OmegaConf.select would resolve, and parse, again. A node that does
    not resolve is left out."""
    values = {}
    for key in cfg:
        if key in ("hydra", "plan"):
            continue
        try:
            node = cfg[key]
            values[key] = (
                OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
            )
        except Exception:  # noqa: BLE001 (its keys are looked up one by one instead)
            continue
    return values


def _resolved(cfg: DictConfig, values: dict[str, Any], key: str) -> Any:
    """A dotted key's value, from `values` where its node resolved, else resolved alone."""
    value: Any = values
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            break
        value = value[part]
    else:
        return value
    try:
        value = OmegaConf.select(cfg, key)
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    except Exception:  # noqa: BLE001 (reported by whatever resolves it)
        return _UNRESOLVED


def objective(data_objective: str, causal: bool) -> str:
    """The job's training objective, clm or mlm: the data's (masked batches or not), refused
    where the model's attention does not match it (`objective=mlm` sets both)."""
    if (data_objective == "mlm") == causal:
        raise ConfigError(
            f"data.objective={data_objective} with model.causal={causal}: choose both "
            "with objective=clm or objective=mlm"
        )
    return data_objective


def check_set(cfg: DictConfig) -> None:
    """Refuse a required value left unset (`???`: data=text without data.path)."""
    raw = OmegaConf.to_container(cfg, resolve=False)  # nothing resolved: only `???` is looked for
    raw.pop("hydra", None)
    missing = sorted(
        _child(key, name)
        for key, node in _mappings(raw)
        for name, value in node.items()
        if value == "???"
    )
    if missing:
        raise ConfigError(f"{missing[0]} must be set (e.g. {missing[0]}=...): it has no default")


def check_trainer(trainer: DictConfig) -> None:
    """The trainer's counts: Lightning divides by them, or takes 0 for "never"."""
    for key in ("val_check_interval", "accumulate_grad_batches", "log_every_n_steps", "num_nodes"):
        _require_positive_int(f"trainer.{key}", trainer.get(key))
    devices = trainer.devices
    if (
        isinstance(devices, int)
        and not isinstance(devices, bool)
        and (devices == 0 or devices < -1)
    ):
        raise ConfigError(f"trainer.devices must be positive, -1 (all) or auto, got {devices}")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not (isinstance(clip, (int, float)) and 0 <= clip < math.inf):
        raise ConfigError(f"trainer.gradient_clip_val must be >= 0 or null, got {clip!r}")


def check_run_options(cfg: DictConfig) -> None:
    """The root config's options: null, or a value that means something."""
    for key in ("divergence_threshold", "peak_flops"):
        if cfg.get(key) is not None:
            require_positive(key, cfg[key])
    if cfg.get("threads") is not None:
        _require_positive_int("threads", cfg.threads)
    if cfg.get("compile") not in (None, True, False):
        raise ConfigError(f"compile must be true, false or null, got {cfg.compile!r}")
    if cfg.get("ckpt_path"):
        checkpoint = Path(str(cfg.ckpt_path)).expanduser()
        if not checkpoint.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint")
        if not zipfile.is_zipfile(checkpoint):  # what torch.save writes
            raise ConfigError(f"ckpt_path={cfg.ckpt_path} is not a checkpoint (not torch.save's)")


def check_optimizer(optimizer: DictConfig) -> None:
    """Let the optimizer check its own values (weight_decay=-1, betas out of range) on one dummy
    parameter, as the module will build it: a ConfigError now rather than a traceback later."""
    kwargs = OmegaConf.to_container(optimizer, resolve=True)
    cls = target_class("optimizer._target_", kwargs.pop("_target_"))
    if kwargs.get("fused") is None:
        kwargs.pop("fused", None)  # the module decides by device
    import torch

    try:
        cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    except (ValueError, TypeError, RuntimeError) as err:
        raise ConfigError(f"optimizer ({cls.__name__}): {' '.join(str(err).split())}") from None


def check_lr_scaling(optimizer: DictConfig, model: GPTConfig) -> None:
    """muP and CompleteP scale the hidden matrices' learning rate with width themselves: an
    optimizer.lr already scaled by inverse_width_lr would be scaled twice."""
    written = OmegaConf.to_container(optimizer, resolve=False).get("lr")
    if model.parametrization != "sp" and "inverse_width_lr" in str(written):
        raise ConfigError(
            f"optimizer.lr={written} with model.parametrization={model.parametrization}: the "
            "parametrization scales the hidden learning rates with width already; give the "
            "base width's lr"
        )


def check_target_params(model: GPTConfig) -> None:
    """The size rule lands within TARGET_PARAMS_TOLERANCE of model.target_params, as the README
    promises, at an aspect ratio near its own; a target outside the shapes it can make is refused
    rather than missed (or, past its deepest shape, widened without bound: 1e30 asked for 13 PB)."""
    from scalinglab.model import ASPECT_RATIO

    if not model.target_params:
        return
    error = model.n_params_nonembedding / model.target_params - 1
    aspect = model.d_model / model.n_layers
    nearest = f"its nearest shape (d_model={model.d_model:,}, n_layers={model.n_layers})"
    if abs(error) > TARGET_PARAMS_TOLERANCE:
        miss = f"has {model.n_params_nonembedding:,} non-embedding parameters ({error:+.0%}), "
        miss += f"beyond {TARGET_PARAMS_TOLERANCE:.0%}"
    elif aspect > 2 * ASPECT_RATIO:
        miss = f"has d_model/n_layers={aspect:.3g}, beyond twice the rule's {ASPECT_RATIO}"
    else:
        return
    raise ConfigError(
        f"model.target_params={model.target_params:g} is out of the size rule's reach: "
        f"{nearest} {miss}; give an explicit shape instead"
    )


def check_warmup(scheduler: DictConfig, steps: int) -> None:
    """Build the schedule (it checks its own values) and refuse a warm-up as long as the run: the
    schedule would clamp it and the run would never train at its peak rate for long."""
    build(scheduler)
    warmup = scheduler.get("warmup_steps", 0)
    if warmup >= steps:
        raise ConfigError(
            f"scheduler.warmup_steps={warmup} is not shorter than the run's {steps} steps "
            "(trainer.max_steps or the budget's): shorten the warm-up"
        )
