"""Checks of a fit beyond its own objective: extrapolation to the largest scale, and residuals."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from scalinglab.analysis.laws import _positive_1d
from scalinglab.analysis.load import BUDGET_RTOL, budget_labels
from scalinglab.analysis.result import FitResult

# Keyword arrays of a fit function that hold one value per row.
PER_ROW_KEYWORDS = ("tokens",)

# Per-budget optima each optimum law reports in extras, and the predict() key for each.
_OPTIMA = {
    "isoflop": ("budgets", {"N_opt": "N_opt", "D_opt": "D_opt"}),
    "envelope": ("envelope", {"N_opt": "N"}),
    "hparams": ("budgets", {"lr": "lr_opt", "batch_size": "batch_size_opt"}),
}


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


def _observed_optima(result: FitResult) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """C and the per-budget (or per-envelope-point) optima a fit used for its laws."""
    key, names = _OPTIMA[result.law]
    rows = [row for row in result.extras[key] if row.get("in_range", True)]
    c = np.array([row["C"] for row in rows])
    return c, {q: np.array([row[field] for row in rows]) for q, field in names.items()}


def residual_summary(result: FitResult, *arrays: np.ndarray) -> dict[str, dict[str, Any]]:
    """Log residuals of a fit, per predicted quantity: {quantity: {n, rmse, mean_abs, max_abs,
    bias, residuals}}, in natural-log units (0.01 is about 1%).

    power: arrays (x, y) -> {"y": ...}; chinchilla: arrays (N, D, loss) -> {"loss": ...};
    isoflop, envelope, hparams: no arrays needed, the per-budget optima in result.extras are
    compared with the fitted laws -> {"N_opt", "D_opt"} / {"N_opt"} / {"lr", "batch_size"}.
    """
    if result.law in ("power", "chinchilla"):
        if len(arrays) != (2 if result.law == "power" else 3):
            raise ValueError(
                f"residual_summary of a {result.law} fit needs its inputs and "
                f"targets: {'(x, y)' if result.law == 'power' else '(N, D, loss)'}"
            )
        *inputs, target = arrays
        name = "y" if result.law == "power" else "loss"
        return {name: _summary(result.predict(*inputs), target)}
    if result.law not in _OPTIMA:
        raise ValueError(f"no residuals for law {result.law!r}")
    c, observed = _observed_optima(result)
    predicted = result.predict(c)
    return {q: _summary(predicted[q], observed[q]) for q in observed}


def leave_largest_out(
    fit_fn: Callable[..., FitResult],
    *arrays: np.ndarray,
    key: np.ndarray | None = None,
    n_out: int = 1,
    rtol: float | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Refit without the rows at the `n_out` largest values of `key` (default arrays[0]), then
    report the relative error of the extrapolation on them.

    power (x, y) and chinchilla (N, D, loss): the held-out rows' targets are predicted from their
    inputs (key None holds out the largest x or N; key=6*N*D the largest compute budget).
    isoflop (C, N, loss) and hparams (C, lr, batch_size, loss): the held-out budgets' own optima
    (from a fit on all data) are compared with the laws fitted on the smaller budgets.
    rtol: key values within rtol (relative, budget_labels) count as one; default: for a fit that
    groups runs into budgets (isoflop, hparams) its own budget_tol, else 0 (each distinct value).
    kw go to fit_fn; those with one value per row (PER_ROW_KEYWORDS: isoflop's tokens) are split
    with the rows. n_bootstrap defaults to 0 here since only point estimates are compared, and the refits
    skip their own extrapolation check.
    Returns {law, key_threshold, n_train, n_held_out, errors: {quantity: {predicted, observed,
    relative_error, mean_abs_relative_error, max_abs_relative_error}}, fit: the reduced fit's dict}.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    if not arrays:
        raise ValueError("leave_largest_out needs the fit's arrays")
    key = _positive_1d("key", arrays[0] if key is None else key)
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
    threshold = key[held].min()
    kw.setdefault("n_bootstrap", 0)
    if "check_extrapolation" in accepts:
        kw.setdefault("check_extrapolation", False)

    def rows(mask: np.ndarray) -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
        per_row = {
            name: np.asarray(kw[name])[mask]
            for name in PER_ROW_KEYWORDS
            if kw.get(name) is not None
        }
        return tuple(a[mask] for a in arrays), kw | per_row

    train_arrays, train_kw = rows(~held)
    train = fit_fn(*train_arrays, **train_kw)

    if train.law in ("power", "chinchilla"):
        *inputs, target = (a[held] for a in arrays)
        name = "y" if train.law == "power" else "loss"
        predicted, observed = {name: train.predict(*inputs)}, {name: target.astype(float)}
    elif train.law in ("isoflop", "hparams"):
        full = fit_fn(*arrays, **kw)
        c, optima = _observed_optima(full)
        outside = c > key[~held].max()  # a budget's C is its runs' geometric mean
        if not outside.any():
            raise ValueError("the held-out budgets have no optimum inside their sampled range")
        predicted = train.predict(c[outside])
        observed = {q: v[outside] for q, v in optima.items()}
    else:
        raise ValueError(f"leave_largest_out does not support law {train.law!r}")

    errors = {}
    for q in observed:
        rel = np.asarray(predicted[q], dtype=float) / observed[q] - 1.0
        errors[q] = {
            "predicted": np.asarray(predicted[q], dtype=float).tolist(),
            "observed": observed[q].tolist(),
            "relative_error": rel.tolist(),
            "mean_abs_relative_error": float(np.mean(np.abs(rel))),
            "max_abs_relative_error": float(np.max(np.abs(rel))),
        }
    return {
        "law": train.law,
        "key_threshold": float(threshold),
        "n_train": int((~held).sum()),
        "n_held_out": int(held.sum()),
        "errors": errors,
        "fit": train.to_dict(),
    }
