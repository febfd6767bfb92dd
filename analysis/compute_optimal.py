"""Compute-optimal allocation from sweeps: IsoFLOP profiles (Approach 2) and the training-curve
envelope (Approach 1) of Hoffmann et al. 2022, each ending in N_opt = k_N C^a, D_opt = k_D C^b.

Units: C and flops in FLOPs (C = 6 N D), N and n_params in parameters, tokens in tokens,
losses in nats per token.
"""

from __future__ import annotations

import numpy as np

from scalinglab.analysis import checks
from scalinglab.analysis.bootstrap import bootstrap_draws, intervals, skipped_note
from scalinglab.analysis.laws import (
    _enough_points,
    _positive_1d,
    _same_length,
    optimal_allocation,
)
from scalinglab.analysis.load import BUDGET_RTOL, budget_flops, budget_labels
from scalinglab.analysis.result import FitResult


def loglog_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares y = k x^e on log10 axes: (k, e, sum of squared log10 residuals)."""
    slope, intercept = np.polyfit(np.log10(x), np.log10(y), 1)
    resid = np.log10(y) - (intercept + slope * np.log10(x))
    return float(10.0**intercept), float(slope), float(resid @ resid)


def _parabola_minimum(log_x: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Parabola coefficients [c2, c1, c0] of loss in log_x, its vertex and the loss there;
    NaN vertex if fewer than 3 distinct points or the parabola opens downward."""
    if np.unique(log_x).size < 3:
        return np.full(3, np.nan), np.nan, np.nan
    coef = np.polyfit(log_x, loss, 2)
    if coef[0] <= 0:
        return coef, np.nan, np.nan
    vertex = -coef[1] / (2.0 * coef[0])
    return coef, vertex, coef[2] - coef[1] ** 2 / (4.0 * coef[0])


def _isoflop_profiles(C, N, loss, tokens, labels):
    """Per budget: the parabola in log10 N (and log10 D when tokens are given) and its minimum."""
    rows = []
    for k, c_budget in enumerate(budget_flops(C, labels)):
        member = labels == k
        log_n = np.log10(N[member])
        coef, x_opt, loss_opt = _parabola_minimum(log_n, loss[member])
        in_range = bool(np.isfinite(x_opt) and log_n.min() <= x_opt <= log_n.max())
        n_opt = 10.0**x_opt
        if tokens is None:
            d_opt = c_budget / (6.0 * n_opt)
        else:
            log_d = np.log10(tokens[member])
            _, xd_opt, _ = _parabola_minimum(log_d, loss[member])
            in_range &= bool(np.isfinite(xd_opt) and log_d.min() <= xd_opt <= log_d.max())
            d_opt = 10.0**xd_opt
        rows.append(
            {
                "C": float(c_budget),
                "coef": coef,
                "N_opt": n_opt,
                "D_opt": d_opt,
                "loss_opt": loss_opt,
                "in_range": in_range,
            }
        )
    return rows


def _parabola_residuals(
    N: np.ndarray, loss: np.ndarray, labels: np.ndarray, profiles: list[dict]
) -> tuple[np.ndarray, np.ndarray]:
    """Each run's loss on its budget's parabola, and its residual scaled by sqrt(n / (n - 3)) so
    that resampled residuals keep the noise's variance (a parabola spends 3 of a budget's n
    points). A budget with no residual degrees of freedom (3 sizes or fewer) borrows residuals
    from the other budgets: an exact fit through 3 points is not a noiseless one."""
    fitted = loss.astype(float).copy()
    residuals = np.zeros_like(fitted)
    exact = np.zeros(len(loss), dtype=bool)
    for k, profile in enumerate(profiles):
        member = labels == k
        n_k = member.sum()
        if n_k <= 3 or not np.all(np.isfinite(profile["coef"])):
            exact |= member
            continue
        fitted[member] = np.polyval(profile["coef"], np.log10(N[member]))
        residuals[member] = (loss[member] - fitted[member]) * np.sqrt(n_k / (n_k - 3))
    if exact.any() and (~exact).any():
        pooled = residuals[~exact]
        residuals[exact] = np.resize(pooled, exact.sum())  # copies, not zeros, in the pool
        fitted[exact] = loss[exact] - residuals[exact]
    return fitted, residuals


def fit_isoflop(
    C: np.ndarray,
    N: np.ndarray,
    loss: np.ndarray,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    tokens: np.ndarray | None = None,
    budget_tol: float = BUDGET_RTOL,
    check_extrapolation: bool = True,
) -> FitResult:
    """Chinchilla Approach 2: a parabola of loss in log10 N per compute budget, its minimum
    N_opt(C), then N_opt = k_N C^a and D_opt = k_D C^b (D_opt = C / (6 N_opt) unless `tokens`,
    the tokens each run trained on, are given; then D_opt is the minimum of a parabola in log10 D).

    C: the run's compute budget (FLOPs; runs whose FLOPs step by at most budget_tol share a
    budget, load.budget_labels); N: parameters;
    loss: final loss. A budget whose parabola opens downward, has fewer than 3 distinct sizes, or
    has its minimum outside the sampled N (or D) range is flagged (in_range False) and left out of
    the power-law fits. Intervals: a residual bootstrap: each resample adds residuals redrawn
    from every budget's parabola (pooled: a 5-size budget alone leaves 2 degrees of freedom) to
    the parabolas, and refits everything. The sizes are the study's design, so they stay fixed:
    resampling runs instead would drop whole sides of a five-size profile and measure that, not
    the noise (7x wider on the demo's runs). Calibration: tests/analysis/test_compute_optimal.py.
    The per-budget N_opt intervals come from the same resamples.
    params and derived: k_N, a, k_D, b. objective: sum of squared log10 residuals of the N_opt law.
    extras["budgets"]: per budget {C, N, loss, coef, N_opt, N_opt_ci95 (None without bootstrap),
    D_opt, loss_opt, in_range}. extras["bootstrap"]: {k_N, a, k_D, b: per-resample values}, the
    i-th entries from one resample, for frontier_band; {} without bootstrap.
    checks: design (at least 3 budgets used, with at least 4 sizes each), centering (each minimum
    in the middle half of its budget's log-N range), intervals (a, b exclude 0; N_opt at the
    largest budget used within a factor 10), extrapolation (refit without the largest budget:
    its N_opt within 35%; check_extrapolation=False skips it and the check fails as not run).
    """
    C = _positive_1d("C", C)
    N = _positive_1d("N", N)
    loss = _positive_1d("loss", loss)
    arrays = {"C": C, "N": N, "loss": loss}
    if tokens is not None:
        tokens = arrays["tokens"] = _positive_1d("tokens", tokens)
    n = _same_length(**arrays)
    labels = budget_labels(C, budget_tol)
    n_budgets = labels.max() + 1
    if n_budgets < 2:
        raise ValueError(f"IsoFLOP needs at least two compute budgets, got one (C={C[0]:.3g})")
    _enough_points(n, 3 * 2, "IsoFLOP (a parabola per budget, at least two budgets)")

    profiles = _isoflop_profiles(C, N, loss, tokens, labels)
    used = [p for p in profiles if p["in_range"]]
    flagged = [p["C"] for p in profiles if not p["in_range"]]
    if len(used) < 2:
        raise ValueError(
            f"IsoFLOP needs at least two budgets with a minimum inside the sampled range; "
            f"{len(flagged)} of {n_budgets} flagged (C={[f'{c:.3g}' for c in flagged]}): "
            "sample sizes on both sides of the optimum"
        )
    used_budgets = np.array([p["in_range"] for p in profiles])

    def law(rows) -> dict[str, float]:
        c = np.array([p["C"] for p in rows])
        k_n, a, _ = loglog_fit(c, np.array([p["N_opt"] for p in rows]))
        k_d, b, _ = loglog_fit(c, np.array([p["D_opt"] for p in rows]))
        return {"k_N": k_n, "a": a, "k_D": k_d, "b": b}

    values = law(used)
    _, _, objective = loglog_fit(
        np.array([p["C"] for p in used]), np.array([p["N_opt"] for p in used])
    )

    fitted, residuals = _parabola_residuals(N, loss, labels, profiles)

    def fit_resample(idx: np.ndarray) -> dict[str, float] | None:
        resampled = fitted + residuals[idx]  # residuals pooled over every budget
        if np.any(resampled <= 0):
            return None
        rows = _isoflop_profiles(C, N, resampled, tokens, labels)
        kept = [r for r, u in zip(rows, used_budgets, strict=True) if u and r["in_range"]]
        if len(kept) < 2:
            return None
        out = law(kept)
        out.update({f"N_opt[{k}]": r["N_opt"] for k, r in enumerate(rows)})
        return out

    draws, n_ok = bootstrap_draws(fit_resample, n, n_bootstrap=n_bootstrap, seed=seed)
    ci95 = intervals(draws)
    law_draws = {name: draws[name] for name in values if name in draws}  # not per-budget N_opt
    budgets = []
    for k, p in enumerate(profiles):
        member = labels == k
        budgets.append(
            {
                "C": p["C"],
                "N": N[member].tolist(),
                "loss": loss[member].tolist(),
                "coef": [float(c) for c in p["coef"]],
                "N_opt": float(p["N_opt"]),
                "N_opt_ci95": list(ci95.pop(f"N_opt[{k}]")) if n_ok else None,
                "D_opt": float(p["D_opt"]),
                "loss_opt": float(p["loss_opt"]),
                "in_range": p["in_range"],
            }
        )
    message = f"{len(used)} of {n_budgets} budgets used" + skipped_note(n_ok, n_bootstrap)
    if flagged:
        message += (
            f"; flagged (minimum outside the sampled range or no minimum), left out: "
            f"C={[f'{c:.3g}' for c in flagged]}"
        )
    result = FitResult(
        law="isoflop",
        params=dict(values),
        ci95=ci95,
        derived=dict(values),
        n_points=n,
        converged=True,
        message=message,
        objective=objective,
        extras={
            "budgets": budgets,
            "flagged_budgets": flagged,
            "budget_tol": budget_tol,
            "n_bootstrap": n_bootstrap,
            "n_bootstrap_ok": n_ok,
            "bootstrap": law_draws,
        },
    )
    sizes = [np.unique(b["N"]).size for b in budgets]
    well_sampled = sum(
        b["in_range"] and k >= checks.MIN_ISOFLOP_SIZES for b, k in zip(budgets, sizes, strict=True)
    )
    result.checks = [
        checks.enough(
            well_sampled,
            checks.MIN_ISOFLOP_BUDGETS,
            f"budgets with their minimum inside the sampled sizes and at least "
            f"{checks.MIN_ISOFLOP_SIZES} sizes (sizes per budget: {sizes})",
            "a line through the minima with a point to spare",
            list(values),
        ),
        checks.centering(budgets),
        _frontier_intervals(result, max(p["C"] for p in used)),
        checks.extrapolation(
            fit_isoflop,
            (C, N, loss),
            quantity="N_opt",
            statistic="max_abs_relative_error",
            threshold=checks.MAX_N_OPT_ERROR,
            held_out="the largest budget",
            run=check_extrapolation,
            tokens=tokens,
            budget_tol=budget_tol,
        ),
    ]
    return result


def _frontier_intervals(result: FitResult, c_max: float) -> dict:
    """The intervals check of a compute-optimal frontier N_opt = k_N C^a, D_opt = k_D C^b: a and b
    exclude 0, and N_opt at the largest budget fitted (not k_N, a value at C = 1 FLOP, a dozen
    decades from the data) within a factor checks.MAX_PREDICTION_FACTOR."""
    value = float(optimal_allocation(result.law, result.derived, c_max)[0])
    if result.extras.get("bootstrap"):
        lo, hi = (float(v) for v in frontier_band(result, c_max))
    else:
        lo = hi = float("nan")
    return checks.intervals(
        result,
        exponents=["a", "b"],
        predictions={f"N_opt at C={c_max:.3g}": (value, lo, hi, list(result.params))},
    )


def _envelope_points(flops, loss, n_params, edges, smallest, largest):
    """Per log-spaced FLOP bin, the row with the lowest loss: (C, loss, N, in_range) where the
    winner being the smallest or largest model means the optimum may lie outside the sweep."""
    bins = np.clip(np.searchsorted(edges, flops, side="right") - 1, 0, len(edges) - 2)
    order = np.lexsort((loss, bins))  # by bin, then loss: the first row of each bin wins
    first = order[np.r_[True, bins[order][1:] != bins[order][:-1]]]
    wins = n_params[first]
    return flops[first], loss[first], wins, (wins > smallest) & (wins < largest)


def fit_envelope(
    flops: np.ndarray,
    loss: np.ndarray,
    n_params: np.ndarray,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    run_id: np.ndarray | None = None,
    n_bins: int = 40,
    schedule_end: np.ndarray | None = None,
) -> FitResult:
    """Chinchilla Approach 1: the lowest loss reached at each FLOP count across training curves,
    the model size reaching it, then N_opt = k_N C^a and D_opt = C / (6 N_opt) = k_D C^b.

    flops, loss, n_params: one row per (run, logged step): cumulative training FLOPs, loss there,
    the run's parameters. run_id: curve label per row (default: n_params, one curve per size).
    n_bins: log-spaced FLOP bins over the logged range. Bins won by the smallest or largest model
    are left out of the fits (flagged in extras), since the optimum may lie beyond the sweep.
    Intervals: bootstrap over whole curves (runs).
    params and derived: k_N, a, k_D, b. objective: sum of squared log10 residuals of the N_opt law.
    extras["envelope"]: per bin {C, loss, N, in_range}. extras["bootstrap"]: {k_N, a, k_D, b:
    per-resample values}, the i-th entries from one resample, for frontier_band; {} without.
    schedule_end: per row, the token count at which its curve's schedule ends (the run's final
    tokens); default: each curve's last FLOPs / (6 N), which the attention term inflates.
    checks: design (the curves' schedules end at 3 or more distinct token counts: intermediate
    points of schedules that all end at one count are not compute-optimal losses), intervals
    (a, b exclude 0; N_opt at the largest envelope point used within a factor 10). No
    extrapolation check: leave_largest_out does not refit envelopes.
    """
    flops = _positive_1d("flops", flops)
    loss = _positive_1d("loss", loss)
    n_params = _positive_1d("n_params", n_params)
    arrays = {"flops": flops, "loss": loss, "n_params": n_params}
    if run_id is not None:
        arrays["run_id"] = run_id = np.asarray(run_id)
    if schedule_end is not None:
        arrays["schedule_end"] = schedule_end = _positive_1d("schedule_end", schedule_end)
    n = _same_length(**arrays)
    if np.unique(n_params).size < 3:
        raise ValueError(
            f"the envelope needs at least three model sizes, got {np.unique(n_params).size}"
        )
    if n_bins < 2:
        raise ValueError(f"n_bins must be at least 2, got {n_bins}")
    edges = np.geomspace(flops.min(), flops.max(), n_bins + 1)
    smallest, largest = n_params.min(), n_params.max()

    def law(idx: np.ndarray) -> dict[str, float] | None:
        c, _, wins, inside = _envelope_points(
            flops[idx], loss[idx], n_params[idx], edges, smallest, largest
        )
        if np.unique(wins[inside]).size < 2:
            return None
        k_n, a, _ = loglog_fit(c[inside], wins[inside])
        k_d, b, _ = loglog_fit(c[inside], c[inside] / (6.0 * wins[inside]))
        return {"k_N": k_n, "a": a, "k_D": k_d, "b": b}

    values = law(np.arange(n))
    if values is None:
        raise ValueError(
            "the envelope has fewer than two model sizes winning FLOP bins strictly between the "
            "smallest and largest model: widen the sweep of sizes or train longer"
        )
    c, best_loss, wins, inside = _envelope_points(flops, loss, n_params, edges, smallest, largest)
    _, _, objective = loglog_fit(c[inside], wins[inside])
    draws, n_ok = bootstrap_draws(
        law, n, n_bootstrap=n_bootstrap, seed=seed, groups=n_params if run_id is None else run_id
    )
    envelope = [
        {"C": float(ci), "loss": float(li), "N": float(ni), "in_range": bool(ok)}
        for ci, li, ni, ok in zip(c, best_loss, wins, inside, strict=True)
    ]
    result = FitResult(
        law="envelope",
        params=dict(values),
        ci95=intervals(draws),
        derived=dict(values),
        n_points=int(inside.sum()),
        converged=True,
        message=f"{int(inside.sum())} of {len(c)} envelope points used; "
        f"{int((~inside).sum())} won by the smallest or largest model left out"
        + skipped_note(n_ok, n_bootstrap),
        objective=objective,
        extras={
            "envelope": envelope,
            "n_bootstrap": n_bootstrap,
            "n_bootstrap_ok": n_ok,
            "bootstrap": draws,
        },
    )
    result.checks = [
        checks.schedule_ends(
            _curve_ends(flops, n_params, n_params if run_id is None else run_id, schedule_end),
            list(values),
        ),
        _frontier_intervals(result, float(c[inside].max())),
    ]
    return result


def _curve_ends(flops, n_params, curve_id, schedule_end) -> np.ndarray:
    """The token count at which each curve's schedule ends: its schedule_end, else its last FLOPs
    over 6 N."""
    _, curve = np.unique(curve_id, return_inverse=True)
    if schedule_end is None:
        schedule_end = flops / (6.0 * n_params)
    ends = np.zeros(curve.max() + 1)
    np.maximum.at(ends, curve, schedule_end)
    return ends


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
    n_opt, d_opt = optimal_allocation(result.law, per_draw, C[..., None])  # C x resamples
    tail = 50.0 * (1.0 - level)  # as percentile_interval, vectorised over C
    lo, hi = np.nanpercentile(n_opt if quantity == "N_opt" else d_opt, [tail, 100 - tail], axis=-1)
    return lo, hi
