"""The compute-optimal frontier N_opt(C), D_opt(C) that three laws end in (L(N, D), IsoFLOP, the
envelope): allocation at a budget, its bootstrap band, and what a report says of it.

Units: C in FLOPs (C = 6 N D), N in parameters, D in tokens.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import scalinglab.analysis.checks as checks
from scalinglab.analysis.bootstrap import percentile_interval
from scalinglab.analysis.inputs import positive_1d
from scalinglab.analysis.registry import OptimumLaw
from scalinglab.analysis.registry import get as get_law
from scalinglab.analysis.result import FitResult


def loglog_fit(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Least-squares y = k x^e on log10 axes, each point's residual times its weight (1 / its
    standard error; None: all alike): (k, e, sum of squared log10 residuals, unweighted)."""
    slope, intercept = np.polyfit(np.log10(x), np.log10(y), 1, w=weights)
    resid = np.log10(y) - (intercept + slope * np.log10(x))
    return float(10.0**intercept), float(slope), float(resid @ resid)


def compute_optimal_allocation(result: FitResult, C: float | np.ndarray) -> dict[str, np.ndarray]:
    """Compute-optimal model size N_opt, tokens D_opt and D_opt/N_opt at budget C = 6 N D FLOPs.

    Works for a chinchilla fit (N_opt = G (C/6)^a, D_opt = (C/6)^b / G) and for an isoflop or
    envelope fit (N_opt = k_N C^a, D_opt = k_D C^b). Scalars in, scalars out.
    """
    law = get_law(result.law)
    C_arr = positive_1d("C", np.atleast_1d(C))
    n_opt, d_opt = law.allocation(result.derived, C_arr)
    out = {"N_opt": n_opt, "D_opt": d_opt, "tokens_per_param": d_opt / n_opt}
    if np.ndim(C) == 0:
        return {k: float(v[0]) for k, v in out.items()}
    return out


def allocations(fit: FitResult, budgets: Any) -> dict[str, np.ndarray]:
    """Compute-optimal N, D at each decade of compute from the data's range to one beyond, as
    the columns of the report's allocation table."""
    lo, hi = np.log10(np.min(budgets)), np.log10(np.max(budgets))
    compute = 10.0 ** np.arange(np.round(lo), np.round(hi) + 2)
    return {"C (FLOPs)": compute, **compute_optimal_allocation(fit, compute)}


def frontier_band(
    result: FitResult, C: float | np.ndarray, *, quantity: str = "N_opt", level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap band of a compute-optimal frontier: at each budget C (FLOPs), the central
    `level` percentile interval of N_opt(C) (or D_opt(C), `quantity`) predicted by each resample's
    refitted law (extras["bootstrap"] of a chinchilla, isoflop or envelope fit).

    Each resample's parameters are used together, so the band carries the intercept's uncertainty
    and its correlation with the exponent: narrowest near the data's budgets, widening when
    extrapolated. Returns (lo, hi) arrays shaped like C. A ValueError if the fit has no draws
    (n_bootstrap=0, or no resample could be fitted): there is then no band to give.
    """
    draws = result.extras.get("bootstrap")
    if not draws:
        raise ValueError(
            f"the {result.law} fit has no bootstrap draws (n_bootstrap="
            f"{result.extras.get('n_bootstrap', 0)}, {result.extras.get('n_bootstrap_ok', 0)} "
            "fitted), so its frontier has no band; refit with n_bootstrap > 0"
        )
    if quantity not in ("N_opt", "D_opt"):
        raise ValueError(f"quantity must be 'N_opt' or 'D_opt', got {quantity!r}")
    C = np.asarray(C, dtype=float)
    per_draw = {name: np.asarray(v, dtype=float) for name, v in draws.items()}
    n_opt, d_opt = get_law(result.law).allocation(per_draw, C[..., None])  # C x resamples
    tail = 50.0 * (1.0 - level)  # as percentile_interval, vectorised over C
    lo, hi = np.nanpercentile(n_opt if quantity == "N_opt" else d_opt, [tail, 100 - tail], axis=-1)
    return lo, hi


def tokens_per_param(fit: FitResult, C: float) -> tuple[float, float, float]:
    """D_opt / N_opt at budget C (FLOPs) of a compute-optimal fit, and its 95% bootstrap interval
    (each resample's law evaluated at C; NaN without draws)."""
    law = get_law(fit.law)
    n_opt, d_opt = law.allocation(fit.derived, C)
    draws = {k: np.asarray(v, float) for k, v in fit.extras.get("bootstrap", {}).items()}
    if draws:
        n_draw, d_draw = law.allocation(draws, C)
        lo, hi = percentile_interval(d_draw / n_draw)
    else:
        lo = hi = math.nan
    return float(d_opt / n_opt), lo, hi


def frontier_intervals(result: FitResult, c_max: float) -> dict:
    """The intervals check of a compute-optimal frontier N_opt = k_N C^a, D_opt = k_D C^b: a and b
    exclude 0, and N_opt at the largest budget fitted (not k_N, a value at C = 1 FLOP, a dozen
    decades from the data) within a factor checks.MAX_PREDICTION_FACTOR."""
    value = float(get_law(result.law).allocation(result.derived, c_max)[0])
    if result.extras.get("bootstrap"):
        lo, hi = (float(v) for v in frontier_band(result, c_max))
    else:
        lo = hi = float("nan")
    return checks.intervals(
        result,
        exponents=["a", "b"],
        predictions={f"N_opt at C={c_max:.3g}": (value, lo, hi, list(result.params))},
    )


class Frontier:
    """What a compute-optimal law adds to a Law (mixed in before it): its headline results, the
    exponent a and the tokens per parameter at the largest budget it measured."""

    def largest_budget(self, fit: FitResult) -> float:
        """The largest compute budget (FLOPs) the fit measured."""
        raise NotImplementedError

    def headline(self, fit: FitResult) -> list[dict[str, Any]]:
        value = fit.params.get("a", fit.derived.get("a", math.nan))
        lo, hi = fit.ci95.get("a", (math.nan, math.nan))
        C = self.largest_budget(fit)
        ratio, ratio_lo, ratio_hi = tokens_per_param(fit, C)
        text = f"{{}} tokens per parameter at C = {C:.3g} FLOPs, the largest budget measured"
        return [
            {"quantity": "a", "text": "Compute-optimal exponent a = {}"}
            | {"value": float(value), "lo": float(lo), "hi": float(hi), "at": None},
            {"quantity": "tokens_per_param", "text": text}
            | {"value": ratio, "lo": ratio_lo, "hi": ratio_hi, "at": C},
        ]


class PowerFrontier(Frontier, OptimumLaw):
    """A frontier fitted through per-budget optima (extras[rows], each with its C and in_range):
    N_opt = k_N C^a, D_opt = k_D C^b (IsoFLOP minima, envelope winners)."""

    def predict(self, fit: FitResult, *inputs: Any) -> Any:
        (C,) = inputs
        n_opt, d_opt = self.allocation(fit.params, np.asarray(C, dtype=float))
        return {"N_opt": n_opt, "D_opt": d_opt}

    def allocation(self, derived: Any, C: Any) -> tuple[Any, Any]:
        return derived["k_N"] * C ** derived["a"], derived["k_D"] * C ** derived["b"]

    def largest_budget(self, fit: FitResult) -> float:
        return max(row["C"] for row in fit.extras[self.rows] if row["in_range"])
