"""Budget arithmetic, from the config alone: the model's vocabulary and size, the job's processes
(`world_size`, the one count of devices), tokens per step, and the tokens, FLOPs and steps that a
budget (budget.tokens, budget.tokens_per_param or budget.flops) gives. Each is also an OmegaConf
resolver (scalinglab.rules registers them), read by the root config's `plan` node."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from scalinglab.errors import ConfigError
from scalinglab.guards import build, require_positive

if TYPE_CHECKING:  # torch loads when a job plans, not when the CLI parses its arguments
    from scalinglab.model import GPTConfig

T = TypeVar("T")
BUDGET_KEYS = ("tokens", "tokens_per_param", "flops")  # budget.*: at most one is set

# Within `one_config()`, each function below gives its value once per node it is asked about: a
# plan resolves `${plan.steps}` wherever a key reads it (4 times a job) and every quantity reads the
# model, and a config does not change while it is planned.
_ONCE: dict[tuple, Any] | None = None


@contextlib.contextmanager
def one_config() -> Iterator[None]:
    """Compute each budget quantity of each config node once, until the block ends."""
    global _ONCE
    outer, _ONCE = _ONCE, {} if _ONCE is None else _ONCE
    try:
        yield
    finally:
        _ONCE = outer


def _node(value: Any) -> Any:
    """A node as a key: its config (root, kept alive while the block runs, so that its id is
    not another's) and place in it; a plain value as itself."""
    if isinstance(value, DictConfig | ListConfig):
        root = value._get_root()
        _ONCE.setdefault(("roots",), []).append(root)
        return id(root), value._get_full_key(None)
    return value


def once(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def within_one_config(*args: Any) -> T:
        if _ONCE is None:
            return fn(*args)
        key = (fn.__name__, *map(_node, args))
        if key not in _ONCE:
            _ONCE[key] = fn(*args)  # a raise is not kept: the next ask raises it again
        return _ONCE[key]

    return within_one_config


@once
def vocab_size(data: DictConfig) -> int:
    """The vocabulary a data config produces, known before any data is read: the model's
    vocabulary (a tokenizer may use fewer ids, e.g. BPE on a small corpus; never more), with the
    mask token after the data's tokens under data.objective=mlm."""
    return data_vocab_size(data) + (data.get("objective", "clm") == "mlm")


def data_vocab_size(data: DictConfig) -> int:
    from scalinglab.data.corpus import META_FILE, resolve_files
    from scalinglab.data.tokenizer import FIXED_VOCAB_SIZES

    if data.get("vocab_size"):
        return int(data.vocab_size)
    if str(data.get("_target_", "")).endswith("ShardsDataModule") and data.get("path"):
        # scaling-prepare writes meta.json beside the shards it makes.
        meta = resolve_files(data.path, "data.path", pattern="*.bin")[0].parent / META_FILE
        if meta.exists() and (announced := json.loads(meta.read_text()).get("vocab_size")):
            return int(announced)
    tokenizer = data.get("tokenizer", "bytes")
    return FIXED_VOCAB_SIZES.get(tokenizer) or int(data.get("bpe_vocab_size", 256))


def model_config(model: DictConfig) -> GPTConfig:
    """The model's built shape (a copy): built once per distinct resolved model config, since a
    plan asks for it several times (N, D, C, steps) and a sweep's check plans every job."""
    return copy.copy(_built(model))


@once
def _built(model: DictConfig) -> GPTConfig:
    key = json.dumps(OmegaConf.to_container(model, resolve=True), sort_keys=True, default=str)
    if key not in _BUILT:
        if len(_BUILT) >= 1024:
            _BUILT.clear()
        _BUILT[key] = build(model)  # the node itself: its errors name its keys
    return _BUILT[key]


_BUILT: dict[str, GPTConfig] = {}
DEFAULT_STEPS = 200  # trainer.max_steps unset and no budget


@once
def n_params(model: DictConfig) -> int:
    """Every parameter of the model (Chinchilla's N, as budget.tokens_per_param counts it)."""
    return model_config(model).n_params


def world_size(devices: Any, num_nodes: int = 1, accelerator: str = "auto") -> int:
    """Processes of a job, as Lightning's Trainer starts them: trainer.devices on each node, with
    `auto` and -1 meaning every GPU this process sees (`auto` on the CPU: one process). The one
    count of devices: tokens per step, the launchers' checks and the trainer's (checked in train)."""
    if isinstance(devices, str) and "," in devices:  # "0,1": GPU ids
        devices = [d for d in devices.split(",") if d.strip()]
    elif isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        per_node = len(devices)
    elif devices in ("auto", -1):
        import torch

        gpus = torch.cuda.device_count() if str(accelerator) in ("auto", "gpu", "cuda") else 0
        if not gpus and devices == -1:
            raise ConfigError("trainer.devices=-1 means every GPU, and there is none: give a count")
        per_node = gpus or 1
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        per_node = devices
    else:
        raise ConfigError(
            f"trainer.devices must be a positive integer, a list, -1 or auto, got {devices!r}"
        )
    return int(num_nodes) * per_node


def trainer_world_size(trainer: DictConfig) -> int:
    """`world_size` of a trainer config."""
    return world_size(
        trainer.devices, trainer.get("num_nodes", 1), trainer.get("accelerator", "auto")
    )


def tokens_per_step(data: DictConfig, trainer: DictConfig, processes: int | None = None) -> int:
    """Tokens per optimizer step: every device's batches, accumulated. `processes`: the job's
    world size where it is known already (a plan's), else counted from the trainer config."""
    if processes is None:
        processes = trainer_world_size(trainer)
    return int(data.batch_size * data.seq_len * trainer.accumulate_grad_batches * processes)


def _budget(budget: DictConfig) -> str | None:
    """Which budget is set (None: train for trainer.max_steps); refuses several or a bad value."""
    chosen = [k for k in BUDGET_KEYS if budget[k] is not None]
    if len(chosen) > 1:
        raise ConfigError(f"set at most one of budget.{', budget.'.join(chosen)}")
    for key in chosen:
        require_positive(f"budget.{key}", budget[key])
    return chosen[0] if chosen else None


@once
def budget_tokens(budget: DictConfig, model: DictConfig, data: DictConfig) -> float | None:
    """The job's training tokens D, from whichever budget is set (budget.flops: over the model's
    FLOPs per token); None when only trainer.max_steps is. What rules of D read; the budget's
    FLOPs and steps follow from it."""
    kind = _budget(budget)
    if kind is None:
        return None
    if kind == "tokens":
        return float(budget.tokens)
    gpt = model_config(model)
    if kind == "tokens_per_param":
        return float(budget.tokens_per_param * gpt.n_params)
    return float(budget.flops / gpt.flops_per_token(data.seq_len))


@once
def budget_flops(budget: DictConfig, model: DictConfig, data: DictConfig) -> float | None:
    """The job's compute budget C in FLOPs (scalinglab's count: 6N plus attention per token), from
    whichever budget is set; None when only trainer.max_steps is. What rules of C read."""
    if _budget(budget) == "flops":
        return float(budget.flops)
    tokens = budget_tokens(budget, model, data)
    if tokens is None:
        return None
    gpt = model_config(model)
    return float(tokens * gpt.flops_per_token(data.seq_len))


@once
def budget_steps(
    budget: DictConfig, model: DictConfig, data: DictConfig, trainer: DictConfig
) -> int:
    """trainer.max_steps, or the optimizer steps that spend the budget to within one step (the
    learning-rate schedule spans exactly these). Refuses fewer than budget.min_steps."""
    kind, steps = _budget(budget), trainer.max_steps
    if kind is None:
        steps = DEFAULT_STEPS if steps is None else steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
            raise ConfigError(f"trainer.max_steps must be a positive integer, got {steps!r}")
        return steps
    if steps is not None:  # it trained the budget's steps, and the config said these
        raise ConfigError(
            f"trainer.max_steps={steps} and budget.{kind}={budget[kind]:g} both set the run's "
            "steps: give one"
        )
    gpt = model_config(model)
    per_step = tokens_per_step(data, trainer)
    tokens = budget_tokens(budget, model, data)
    what = f"budget.{kind}={budget[kind]:g}" + (
        f" ({tokens:.3g} tokens)" if kind == "tokens_per_param" else ""
    )
    steps = round(tokens / per_step)
    if steps < max(1, budget.min_steps):
        raise ConfigError(
            f"{what} gives {steps} steps of {per_step} tokens for a model of "
            f"{gpt.n_params:,} parameters, below budget.min_steps={budget.min_steps}"
        )
    return steps
