"""Learning-rate and batch-size rules (conf/hparams/), and the registration of every resolver a
config may use: the rules here and the budget arithmetic of scalinglab.budget.

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

import functools
import logging
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from scalinglab.budget import (
    budget_flops,
    budget_steps,
    budget_tokens,
    model_config,
    n_params,
    trainer_world_size,
    vocab_size,
    world_size,
)
from scalinglab.errors import ConfigError

log = logging.getLogger("scalinglab")


def inverse_width_lr(base_lr: float, base_width: int, d_model: int | DictConfig) -> float:
    """Adam's learning rate scaled as 1/width from a tuned base width: muP's rule for hidden
    weights (Yang et al. 2022), applied to the whole model. In a config:
    `optimizer.lr: ${inverse_width_lr:3e-3,64,${model.d_model}}`, or `...,${model}}` for the width
    the model is built with (the size rule's, with model.target_params)."""
    if isinstance(d_model, DictConfig):
        d_model = model_config(d_model).d_model
    if d_model is None:
        raise ConfigError(
            "inverse_width_lr got model.d_model=null (the shape is left to the size rule): "
            "pass ${model} for the width the model is built with"
        )
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


def fitted_law(
    path: str, name: str, x: float | None, n_params: int | None = None, tokens: float | None = None
) -> float:
    """The law `name` (lr or batch_tokens) that `scaling-fit hparams --rules FILE` wrote, in the
    form the file holds: at C=x (form compute, or no form: files written before the nd form), or
    at N=n_params and D=tokens (form nd). A value outside the fitted range is used, with a
    warning (an extrapolation)."""
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError(f"hparams_file={path}: no such file (write one with scaling-fit hparams)")
    rules = _read_rules(str(file.resolve()), file.stat().st_mtime)
    if name not in rules:
        raise ConfigError(f"hparams_file={path} has no `{name}` law (it has {sorted(rules)})")
    law, form = rules[name], rules.get("form", "compute")
    if form == "nd":
        if n_params is None:
            raise ConfigError(f"hparams_file={path} holds laws of N and D: pass N (plan.n_params)")
        values = {"n_params": float(n_params), "tokens": _of_compute(tokens, f"the {name} rule")}
        for key, value in values.items():
            low, high = rules.get("fitted_range", {}).get(key, [value, value])
            if not low <= value <= high:
                log.warning(
                    f"{name} rule of {path}: {key}={value:.3g} is outside the range it was "
                    f"fitted on [{low:.3g}, {high:.3g}] (an extrapolation)"
                )
        return (
            float(law["coefficient"])
            * values["n_params"] ** float(law["exponent_n"])
            * values["tokens"] ** float(law["exponent_d"])
        )
    if form != "compute":
        raise ConfigError(f"hparams_file={path}: unknown form {form!r} (compute or nd)")
    x = _of_compute(x, f"the fitted {name} rule")
    low, high = rules.get("fitted_range", [x, x])
    if not low <= x <= high:
        log.warning(
            f"{name} rule of {path}: C={x:.3g} is outside the budgets it was fitted on "
            f"[{low:.3g}, {high:.3g}] (an extrapolation)"
        )
    return float(law["coefficient"]) * x ** float(law["exponent"])


def batch_size_for(tokens: float, seq_len: int, trainer: DictConfig) -> int:
    """data.batch_size (sequences per device) nearest to `tokens` per optimizer step."""
    per_sequence = seq_len * trainer.accumulate_grad_batches * trainer_world_size(trainer)
    return max(1, round(float(tokens) / per_sequence))


for _name, _resolver in {
    "vocab_size": vocab_size,
    "n_params": n_params,
    "world_size": world_size,
    "budget_flops": budget_flops,
    "budget_steps": budget_steps,
    "budget_tokens": budget_tokens,
    "inverse_width_lr": inverse_width_lr,
    "geometric_step": geometric_step,
    "ceil_div": ceil_div,
    "power_law": power_law,
    "fitted_law": fitted_law,
    "batch_size_for": batch_size_for,
}.items():
    OmegaConf.register_new_resolver(_name, _resolver, replace=True)
