"""Checks of a fit beyond its own objective: extrapolation to the largest scale, and residuals.
Each law says what it compares (registry.Law.held_out, Law.residuals); this is the one procedure."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from scalinglab.analysis.budgets import BUDGET_RTOL, budget_labels
from scalinglab.analysis.inputs import positive_1d
from scalinglab.analysis.registry import get as get_law
from scalinglab.analysis.result import FitResult

# Keyword arrays of a fit function that hold one value per row.
PER_ROW_KEYWORDS = ("tokens",)


def _summary(predicted: np.ndarray, observed: np.ndarray) -> dict[str, Any]:
    """Natural-log residuals log(predicted / observed) and their summary statistics."""
    r = np.log(np.asarray(predicted, dtype=float)) - np.log(np.asarray(observed, dtype=float))
    return {
        "n": int(r.size),
        "rmse": float(np.sqrt(np.mean(r * r))),
        "mean_abs": float(np.mean(np.abs(r))),
        "max_abs": float(np.max(np.abs(r))),
        "bias": float(np.mean(r)),
        "residuals": r.tolist(),
    }


def residual_summary(result: FitResult, *arrays: np.ndarray) -> dict[str, dict[str, Any]]:
    """Log residuals of a fit, per predicted quantity: {quantity: {n, rmse, mean_abs, max_abs,
    bias, residuals}}, in natural-log units (0.01 is about 1%).

    power: arrays (x, y) -> {"y": ...}; chinchilla: arrays (N, D, loss) -> {"loss": ...};
    isoflop, envelope, hparams: no arrays needed, the per-budget optima in result.extras are
    compared with the fitted laws -> {"N_opt", "D_opt"} / {"N_opt"} / {"lr", "batch_size"}.
    """
    pairs = get_law(result.law).residuals(result, *arrays)
    return {q: _summary(predicted, observed) for q, (predicted, observed) in pairs.items()}


def leave_largest_out(
    fit_fn: Callable[..., FitResult],
    *arrays: np.ndarray,
    key: np.ndarray | None = None,
    n_out: int = 1,
    rtol: float | None = None,
    full: FitResult | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Refit without the rows at the `n_out` largest values of `key` (default arrays[0]), then
    report the relative error of the extrapolation on them.

    power (x, y) and chinchilla (N, D, loss): the held-out rows' targets are predicted from their
    inputs (key None holds out the largest x or N; key=6*N*D the largest compute budget).
    isoflop (C, N, loss) and hparams (C, lr, batch_size, loss): the held-out budgets' own optima
    (from `full`, the fit on all data; refitted here only when not given) are compared with the
    laws fitted on the smaller budgets.
    rtol: key values within rtol (relative, budget_labels) count as one; default: for a fit that
    groups runs into budgets (isoflop, hparams) its own budget_tol, else 0 (each distinct value).
    kw go to fit_fn; those with one value per row (PER_ROW_KEYWORDS: isoflop's tokens) are split
    with the rows. n_bootstrap defaults to 0 here since only point estimates are compared, and the
    refits skip their own extrapolation check.
    Returns {law, key_threshold, n_train, n_held_out, errors: {quantity: {predicted, observed,
    relative_error, mean_abs_relative_error, max_abs_relative_error}}, fit: the reduced fit's dict}.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    if not arrays:
        raise ValueError("leave_largest_out needs the fit's arrays")
    key = positive_1d("key", arrays[0] if key is None else key)
    accepts = inspect.signature(fit_fn).parameters
    if rtol is None:
        rtol = kw.get("budget_tol", BUDGET_RTOL) if "budget_tol" in accepts else 0.0
    labels = budget_labels(key, rtol)
    n_distinct = labels.max() + 1
    if not 1 <= n_out < n_distinct - 1:
        raise ValueError(
            f"n_out must be in [1, {n_distinct - 2}] for {n_distinct} distinct key values, "
            f"got {n_out}"
        )
    held = labels >= n_distinct - n_out
    kw.setdefault("n_bootstrap", 0)
    if "check_extrapolation" in accepts:
        kw.setdefault("check_extrapolation", False)
    per_row = {name: np.asarray(kw[name]) for name in PER_ROW_KEYWORDS if kw.get(name) is not None}
    train_kw = kw | {name: values[~held] for name, values in per_row.items()}
    train = fit_fn(*(a[~held] for a in arrays), **train_kw)

    def on_all_data() -> FitResult:
        return full if full is not None else fit_fn(*arrays, **kw)

    predicted, observed = get_law(train.law).held_out(on_all_data, train, arrays, held, key)
    errors = {}
    for q in observed:
        guess = np.asarray(predicted[q], dtype=float)
        rel = guess / observed[q] - 1.0
        errors[q] = {
            "predicted": guess.tolist(),
            "observed": observed[q].tolist(),
            "relative_error": rel.tolist(),
            "mean_abs_relative_error": float(np.mean(np.abs(rel))),
            "max_abs_relative_error": float(np.max(np.abs(rel))),
        }
    return {
        "law": train.law,
        "key_threshold": float(key[held].min()),
        "n_train": int((~held).sum()),
        "n_held_out": int(held.sum()),
        "errors": errors,
        "fit": train.to_dict(),
    }
