"""A job's plan from its config alone: its model, the steps that spend its budget, and the rules
that set its learning rate and batch size.

Each is an OmegaConf resolver, so the composed config says what every job will do before any runs
(`scaling-train -m sweep=isoflop --cfg job --resolve` prints each job's `plan.steps`), sweep files
can interpolate it, and the pre-launch check and the job read one and the same value. The root
config (conf/train.yaml) holds:

    plan:
      n_params: ${n_params:${model}}
      budget_flops: ${budget_flops:${budget},${model},${data}}
      steps: ${budget_steps:${budget},${model},${data},${trainer}}

and conf/hparams/ the learning-rate and batch-size rules, in the same terms.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from scalinglab.errors import ConfigError
from scalinglab.model import GPTConfig

log = logging.getLogger("scalinglab")

BUDGET_KEYS = ("tokens", "tokens_per_param", "flops")  # budget.*: at most one is set


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
        if cause is None or cause is err:
            raise
        raise cause from None


def build(cfg: DictConfig, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, letting a ConfigError through unwrapped (it is the user's message)."""
    with config_errors():
        return instantiate(cfg, **kwargs)


# ---- what a job is: model, tokens per step, steps ------------------------------------------------


def vocab_size(data: DictConfig) -> int:
    """The vocabulary a data config produces, known before any data is read: the model's
    vocabulary (a tokenizer may use fewer ids, e.g. BPE on a small corpus; never more)."""
    from scalinglab.data.datamodule import META_FILE, resolve_files
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


def n_params(model: DictConfig) -> int:
    """Every parameter of the model (Chinchilla's N, as budget.tokens_per_param counts it)."""
    return build(model).n_params


def world_size(devices: int | str, num_nodes: int = 1) -> int:
    """Processes of a job: trainer.devices (an int; "auto" counts as one) on each node."""
    return int(num_nodes) * (devices if isinstance(devices, int) else 1)


def _world_size(trainer: DictConfig) -> int:
    return world_size(trainer.devices, trainer.get("num_nodes", 1))


def tokens_per_step(data: DictConfig, trainer: DictConfig) -> int:
    """Tokens per optimizer step: every device's batches, accumulated."""
    return int(
        data.batch_size * data.seq_len * trainer.accumulate_grad_batches * _world_size(trainer)
    )


def _require_positive(key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{key} must be a positive number, got {value!r}")


def _budget(budget: DictConfig) -> str | None:
    """Which budget is set (None: train for trainer.max_steps); refuses several or a bad value."""
    chosen = [k for k in BUDGET_KEYS if budget[k] is not None]
    if len(chosen) > 1:
        raise ConfigError(f"set at most one of budget.{', budget.'.join(chosen)}")
    for key in chosen:
        _require_positive(f"budget.{key}", budget[key])
    return chosen[0] if chosen else None


def budget_flops(budget: DictConfig, model: DictConfig, data: DictConfig) -> float | None:
    """The job's compute budget C in FLOPs (scalinglab's count: 6N plus attention per token), from
    whichever budget is set; None when only trainer.max_steps is. What rules of C read."""
    kind = _budget(budget)
    if kind is None:
        return None
    if kind == "flops":
        return float(budget.flops)
    gpt: GPTConfig = build(model)
    tokens = budget.tokens if kind == "tokens" else budget.tokens_per_param * gpt.n_params
    return float(tokens * gpt.flops_per_token(data.seq_len))


def budget_steps(
    budget: DictConfig, model: DictConfig, data: DictConfig, trainer: DictConfig
) -> int:
    """trainer.max_steps, or the optimizer steps that spend the budget to within one step (the
    learning-rate schedule spans exactly these). Refuses fewer than budget.min_steps."""
    kind = _budget(budget)
    if kind is None:
        steps = trainer.max_steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
            raise ConfigError(f"trainer.max_steps must be a positive integer, got {steps!r}")
        return steps
    gpt: GPTConfig = build(model)
    per_step = tokens_per_step(data, trainer)
    if kind == "tokens":
        steps, what = budget.tokens / per_step, f"budget.tokens={budget.tokens:g}"
    elif kind == "tokens_per_param":
        tokens = budget.tokens_per_param * gpt.n_params
        steps = tokens / per_step
        what = f"budget.tokens_per_param={budget.tokens_per_param:g} ({tokens:.3g} tokens)"
    else:
        steps = budget.flops / (per_step * gpt.flops_per_token(data.seq_len))
        what = f"budget.flops={budget.flops:g}"
    steps = round(steps)
    if steps < max(1, budget.min_steps):
        raise ConfigError(
            f"{what} gives {steps} steps of {per_step} tokens for a model of "
            f"{gpt.n_params:,} parameters, below budget.min_steps={budget.min_steps}"
        )
    return steps


def plan(cfg: DictConfig) -> tuple[GPTConfig, int, int]:
    """Check a job's config and size it: (model config, tokens per step, steps).

    Reads only the config: it runs in each job before any data is read or record written, and for
    a whole sweep before launch (see scalinglab.sweeping).
    """
    with config_errors():
        for key in ("optimizer.lr", "data.batch_size", "data.seq_len"):
            _require_positive(key, OmegaConf.select(cfg, key))
        if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
            raise ConfigError(f"seed must be an integer, got {cfg.seed!r}")
        model: GPTConfig = build(cfg.model)
        if cfg.data.seq_len > model.max_seq_len:
            raise ConfigError(
                f"data.seq_len={cfg.data.seq_len} exceeds model.max_seq_len={model.max_seq_len}"
            )
        return model, tokens_per_step(cfg.data, cfg.trainer), int(cfg.plan.steps)


# ---- learning-rate and batch-size rules (conf/hparams/) ------------------------------------------


def inverse_width_lr(base_lr: float, base_width: int, d_model: int) -> float:
    """Adam's learning rate scaled as 1/width from a tuned base width: muP's rule for hidden
    weights (Yang et al. 2022), applied to the whole model. In a config:
    `optimizer.lr: ${inverse_width_lr:3e-3,64,${model.d_model}}`."""
    return float(base_lr) * int(base_width) / int(d_model)


def geometric_step(centre: float, ratio: float, k: int) -> int:
    """round(centre * ratio^k): the k-th point of a geometric grid around `centre`. An IsoFLOP
    sweep centres each budget's widths on a guess of its optimum:
    `model.d_model: ${geometric_step:${power_law:0.0018,0.35,${budget.flops}},1.35,${size_step}}`."""
    return max(1, round(float(centre) * float(ratio) ** int(k)))


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b): e.g. validate about 8 times a run, `${ceil_div:${plan.steps},8}`."""
    return -(-int(a) // int(b))


def _of_compute(x: float | None, what: str) -> float:
    if x is None:
        raise ConfigError(
            f"{what} is a function of the compute budget: set budget.flops, budget.tokens or "
            "budget.tokens_per_param (trainer.max_steps alone gives no budget)"
        )
    return float(x)


def power_law(coefficient: float, exponent: float, x: float | None) -> float:
    """coefficient * x^exponent: a published rule, e.g. `${power_law:0.3118,-0.125,C}`."""
    return float(coefficient) * _of_compute(x, "this rule") ** float(exponent)


@functools.lru_cache(maxsize=16)
def _read_rules(path: str, mtime: float) -> dict[str, Any]:
    del mtime  # part of the cache key only: a refitted file is read again
    rules = yaml.safe_load(Path(path).read_text())
    if not isinstance(rules, dict):
        raise ConfigError(
            f"hparams_file={path}: not a rules file from `scaling-fit hparams --rules`"
        )
    return rules


def fitted_law(path: str, name: str, x: float | None) -> float:
    """The law `name` (lr or batch_tokens) that `scaling-fit hparams --rules FILE` wrote, at C=x."""
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError(f"hparams_file={path}: no such file (write one with scaling-fit hparams)")
    rules = _read_rules(str(file.resolve()), file.stat().st_mtime)
    if name not in rules:
        raise ConfigError(f"hparams_file={path} has no `{name}` law (it has {sorted(rules)})")
    x = _of_compute(x, f"the fitted {name} rule")
    low, high = rules.get("fitted_range", [x, x])
    if not low <= x <= high:
        log.warning(
            f"{name} rule of {path}: C={x:.3g} is outside the budgets it was fitted on "
            f"[{low:.3g}, {high:.3g}] (an extrapolation)"
        )
    law = rules[name]
    return float(law["coefficient"]) * x ** float(law["exponent"])


def batch_size_for(tokens: float, seq_len: int, trainer: DictConfig) -> int:
    """data.batch_size (sequences per device) nearest to `tokens` per optimizer step."""
    per_sequence = seq_len * trainer.accumulate_grad_batches * _world_size(trainer)
    return max(1, round(float(tokens) / per_sequence))


for _name, _resolver in {
    "vocab_size": vocab_size,
    "n_params": n_params,
    "world_size": world_size,
    "budget_flops": budget_flops,
    "budget_steps": budget_steps,
    "inverse_width_lr": inverse_width_lr,
    "geometric_step": geometric_step,
    "ceil_div": ceil_div,
    "power_law": power_law,
    "fitted_law": fitted_law,
    "batch_size_for": batch_size_for,
}.items():
    OmegaConf.register_new_resolver(_name, _resolver, replace=True)
