"""What a fit checks about itself, so a report can say how far to trust it.

design:        the data can identify the law (enough points, the right variables varied).
bounds:        no parameter, nor its 95% interval, reaches a bound of the fit.
intervals:     no exponent's interval crosses zero; coefficients and predictions at the data's
               largest budget are pinned down.
centering:     each budget's optimum lies inside the middle of what its parabola was fitted to.
extrapolation: the law fitted without the largest scale predicts it.
agreement:     two approaches fitted to the same runs agree on a (N_opt ∝ C^a).

Each function is pure and returns one check, {"name", "passed", "detail", "params", "used"}: the
detail states the rule applied and what was found; params lists the parameters and derived values
that a failing check finds not identified ([] when it concerns the fit as a whole, or it passed);
used is how much of the rule's allowance the measured value takes (0: far inside, 1: at the limit;
None for rules on counts, which arithmetic cannot move), so a verdict's margin can be read and
checked: a passing check at 0.95 flips with the last digits of another CPU's arithmetic.
The fit functions attach the checks their own inputs allow; a law's section passes in the design
checks that need more than its arrays (compute_law, one_slice, as fit_power_law's `design`), and
the report adds agreement between fits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from scalinglab.analysis.budgets import BUDGET_RTOL, budget_labels
from scalinglab.analysis.result import FitResult

# design
MIN_CROSS_SPREAD = 0.1  # L(N, D): spread of (ln N, ln D) across their best line
MIN_SPAN_FRACTION = 0.25  # L(C): ln N and ln D each span this fraction of ln C's span
MAX_SLICE_SPREAD = 0.1  # L(N), L(D): the other variable (or D/N) fixed within 10%
MIN_SCHEDULE_ENDS = 3  # envelope: distinct token counts at which the curves' schedules end
MIN_ISOFLOP_BUDGETS, MIN_ISOFLOP_SIZES = 3, 4
MIN_HPARAM_BUDGETS, MIN_GRID_VALUES = 3, 3
# bounds
EXPONENT_TOL = 0.01  # an exponent within 0.01 of a bound reaches it
OFFSET_RTOL = 0.01  # E within 1% of the smallest loss of a bound reaches it
OTHER_RTOL = 1e-3  # any other parameter: within 0.1% of the bound
# intervals
MAX_COEFFICIENT_FACTOR = 100.0  # hi / lo of a coefficient's 95% interval
MAX_PREDICTION_FACTOR = 10.0  # hi / lo of N_opt (lr_opt, ...) at the data's largest budget
# centering: the optimum's place in the budget's sampled log range, 0 (smallest) to 1
CENTRE = (0.25, 0.75)
# extrapolation, leaving the largest scale out
MAX_LOSS_ERROR = 0.02  # mean |relative error| of the held-out losses
MAX_N_OPT_ERROR = 0.35  # |relative error| of the held-out budget's N_opt
MAX_LR_ERROR = 0.5  # |relative error| of the held-out budget's lr_opt


def check(
    name: str, passed: bool, detail: str, params: Sequence[str] = (), used: float | None = None
) -> dict[str, Any]:
    """One check; `params` (not identified) is kept only when it failed."""
    return {
        "name": name,
        "passed": bool(passed),
        "detail": detail,
        "params": [] if passed else list(params),
        "used": None if used is None else round(float(used), 3),
    }


def _with_dependents(
    names: Sequence[str], depends: Mapping[str, Sequence[str]] | None
) -> list[str]:
    """`names` and the derived values resting on any of them (depends: derived -> its params)."""
    out = list(dict.fromkeys(names))
    for derived, base in (depends or {}).items():
        if derived not in out and set(base) & set(names):
            out.append(derived)
    return out


def _g(value: float) -> str:
    return f"{value:.3g}"


def _interval(lo: float, hi: float) -> str:
    return f"[{lo:.3g}, {hi:.3g}]"


# --------------------------------------------------------------------------------------------
# design


def enough(count: int, minimum: int, counted: str, rule: str, params: Sequence[str]) -> dict:
    """design: `count` of something (points, budgets) against the `minimum` a law needs."""
    return check(
        "design",
        count >= minimum,
        f"{count} {counted}; the law needs at least {minimum} ({rule})",
        params,
    )


def independent_variation(N: np.ndarray, D: np.ndarray, params: Sequence[str]) -> dict:
    """design of L(N, D): N and D varied independently. The runs' spread across the best line
    through (ln N, ln D) must be at least MIN_CROSS_SPREAD: one D for every run, or one tokens-per-
    parameter ratio, puts them on a line, and the N and D terms cannot be told apart."""
    z = np.column_stack([np.log(N), np.log(D)])
    z = z - z.mean(axis=0)
    spread = float(np.linalg.svd(z, compute_uv=False)[-1] / np.sqrt(len(z)))
    rule = f"rule: at least {MIN_CROSS_SPREAD}, natural log"
    if spread >= MIN_CROSS_SPREAD:
        detail = (
            f"N and D vary independently: the runs spread {spread:.2g} across the best line "
            f"through (log N, log D) ({rule})"
        )
    else:
        detail = (
            f"log D is a function of log N: the runs lie on a line in (log N, log D), spread "
            f"{spread:.2g} across it ({rule}); one D for every run, or one tokens-per-parameter "
            "ratio, cannot tell the N and D terms apart"
        )
    return check("design", spread >= MIN_CROSS_SPREAD, detail, params)


def compute_law(N: np.ndarray, D: np.ndarray, C: np.ndarray, params: Sequence[str]) -> dict:
    """design of L(C) fitted over points with N parameters and D tokens: a compute law needs both
    to grow with C. ln N and ln D must each span at least MIN_SPAN_FRACTION of ln C's span;
    over runs of one D, L(C) is L(N) relabelled."""
    span_c, span_n, span_d = (float(np.ptp(np.log(np.asarray(v, float)))) for v in (C, N, D))
    need = MIN_SPAN_FRACTION * span_c
    passed = span_c > 0 and span_n >= need and span_d >= need
    detail = (
        f"over the {len(C)} points compute spans {_g(np.exp(span_c))}x, parameters "
        f"{_g(np.exp(span_n))}x, tokens {_g(np.exp(span_d))}x; a compute law needs N and D each "
        f"to span at least {_g(np.exp(need))}x (C's span to the power {MIN_SPAN_FRACTION})"
    )
    if span_d < need:
        detail += ": L(C) over runs of (nearly) one D is L(N) relabelled, not a compute law"
    elif span_n < need:
        detail += ": L(C) over runs of (nearly) one N is L(D) relabelled, not a compute law"
    return check("design", passed, detail, params)


def one_slice(x: str, N: np.ndarray, D: np.ndarray, params: Sequence[str]) -> dict:
    """design of L(N) (x="n_params") or L(D) (x="tokens") through the best loss at each x: a law
    of one variable is a slice of L(N, D), so its points must hold the other fixed, or share one
    tokens-per-parameter ratio (a ladder). Points that mix them (an IsoFLOP grid's best run per
    size comes from different budgets) fit N's effect and D's together."""
    log_n, log_d = np.log(np.asarray(N, float)), np.log(np.asarray(D, float))
    other, held = ("tokens D", log_d) if x == "n_params" else ("parameters N", log_n)
    spans = {other: float(np.ptp(held)), "D/N": float(np.ptp(log_d - log_n))}
    passed = min(spans.values()) <= np.log1p(MAX_SLICE_SPREAD)
    detail = (
        f"over the {len(log_n)} points {other} spans {_g(np.exp(spans[other]))}x and tokens per "
        f"parameter {_g(np.exp(spans['D/N']))}x; a law in one variable needs one of them fixed "
        f"(within {MAX_SLICE_SPREAD:.0%})"
    )
    if not passed:
        detail += ": these points mix the effects of N and D (fit L(N, D) instead)"
    return check("design", passed, detail, params)


def schedule_ends(ends: np.ndarray, params: Sequence[str], rtol: float = BUDGET_RTOL) -> dict:
    """design of the envelope (Approach 1): `ends`, one per curve, the token count where its
    schedule ends. Intermediate points of schedules that all end at one count are not losses of
    runs trained to that point: at least MIN_SCHEDULE_ENDS distinct ends (more than rtol apart)."""
    ends = np.asarray(ends, dtype=float)
    distinct = int(budget_labels(ends, rtol).max() + 1)
    passed = distinct >= MIN_SCHEDULE_ENDS
    detail = (
        f"the {len(ends)} curves' schedules end at {distinct} distinct token count(s) "
        f"({_g(ends.min())} to {_g(ends.max())}); the envelope needs at least {MIN_SCHEDULE_ENDS}"
    )
    if not passed:
        detail += (
            " (runs trained to different token counts, or WSD branches): intermediate points of "
            "schedules that end at one count are not compute-optimal losses"
        )
    return check("design", passed, detail, params)


def grid_varies(values: np.ndarray, labels: np.ndarray, what: str, params: Sequence[str]) -> dict:
    """design of an optimum-per-budget law (lr, batch size): every budget samples at least
    MIN_GRID_VALUES distinct values of `what`, so its optimum can lie between two of them."""
    counts = [np.unique(values[labels == k]).size for k in range(labels.max() + 1)]
    passed = min(counts) >= MIN_GRID_VALUES
    if max(counts) == 1:
        found = f"the {what} does not vary within any compute budget (one {what} per budget)"
    elif min(counts) == max(counts):
        found = f"{min(counts)} distinct {what} values in every budget"
    else:
        found = f"{min(counts)} to {max(counts)} distinct {what} values per budget"
    detail = f"{found}; an optimum needs at least {MIN_GRID_VALUES} in every budget"
    if not passed:
        detail += f": the {what} law is not identified"
    return check("design", passed, detail, params)


# --------------------------------------------------------------------------------------------
# bounds


def within_bounds(
    fit: FitResult,
    bounds: Mapping[str, Sequence[float]],
    loss_scale: float,
    depends: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """bounds: no parameter, nor either end of its 95% interval, within a tolerance of a finite
    bound of the fit (exponents: EXPONENT_TOL; E: OFFSET_RTOL x the smallest loss `loss_scale`;
    others: OTHER_RTOL x the bound). At a bound the optimum is the box, not the data.
    depends: derived values -> the parameters they rest on, named with them when those fail."""
    problems, names = [], []
    for name, (lower, upper) in bounds.items():
        if name not in fit.params:
            continue
        if name in ("alpha", "beta"):
            tol = EXPONENT_TOL
        elif name == "E":
            tol = OFFSET_RTOL * loss_scale
        else:
            tol = None
        value = fit.params[name]
        lo, hi = fit.ci95.get(name, (value, value))
        for bound, end, side in ((lower, lo, "lower"), (upper, hi, "upper")):
            if bound is None or not np.isfinite(bound):
                continue
            margin = tol if tol is not None else OTHER_RTOL * max(abs(bound), 1e-300)
            reached = end <= bound + margin if side == "lower" else end >= bound - margin
            if reached:
                what = (
                    f"{name} = {_g(value)}"
                    if end == value
                    else (f"{name}'s 95% interval {_interval(lo, hi)}")
                )
                problems.append(
                    f"{what} reaches its {side} bound {_g(bound)} (within {_g(margin)}): "
                    f"{name} is not identified"
                )
                names.append(name)
    if problems:
        return check("bounds", False, "; ".join(problems), _with_dependents(names, depends))
    listed = ", ".join(
        f"{n} in [{_g(lo)}, {_g(hi)}]" for n, (lo, hi) in bounds.items() if n in fit.params
    )
    return check("bounds", True, f"every parameter and interval clear of its bounds ({listed})")


# --------------------------------------------------------------------------------------------
# intervals


def _factor(lo: float, hi: float) -> float:
    return float(hi / lo) if lo > 0 and hi > 0 else np.inf


def intervals(
    fit: FitResult,
    *,
    exponents: Sequence[str] = (),
    coefficients: Sequence[str] = (),
    predictions: Mapping[str, tuple[float, float, float, Sequence[str]]] | None = None,
    depends: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """intervals: every exponent's 95% interval excludes zero (neither crosses nor touches it);
    every coefficient's spans at most MAX_COEFFICIENT_FACTOR; every prediction's, {label: (value,
    lo, hi, the parameters it rests on)} at the data's largest budget (a coefficient's stand-in
    where the coefficient itself is a value at C = 1 FLOP, far from any data), at most
    MAX_PREDICTION_FACTOR. A fit without intervals (no bootstrap) fails: its identification is
    unknown."""
    predictions = dict(predictions or {})
    named = [*exponents, *coefficients]
    missing = [n for n in named if not np.all(np.isfinite(fit.ci95.get(n, (np.nan, np.nan))))]
    missing += [k for k, (_, lo, hi, _) in predictions.items() if not np.isfinite([lo, hi]).all()]
    if missing:
        return check(
            "intervals",
            False,
            f"no 95% interval for {', '.join(missing)} (n_bootstrap="
            f"{fit.extras.get('n_bootstrap', 0)}, {fit.extras.get('n_bootstrap_ok', 0)} "
            "resamples fitted): identification unknown; refit with a bootstrap",
            [n for n in named if n in missing],
        )
    problems, names, found, used = [], [], [], [0.0]
    for name in exponents:
        lo, hi = fit.ci95[name]
        if lo <= 0 <= hi:
            problems.append(f"exponent {name}'s interval {_interval(lo, hi)} reaches 0")
            names.append(name)
        else:
            found.append(f"{name} {_interval(lo, hi)}")
            used.append(1 - min(abs(lo), abs(hi)) / max(abs(lo), abs(hi)))  # 1: an end at 0
    for name in coefficients:
        lo, hi = fit.ci95[name]
        factor = _factor(lo, hi)
        used.append(np.log(factor) / np.log(MAX_COEFFICIENT_FACTOR))
        if factor > MAX_COEFFICIENT_FACTOR:
            problems.append(
                f"{name}'s interval {_interval(lo, hi)} spans a factor {_g(factor)} "
                f"(rule: at most {MAX_COEFFICIENT_FACTOR:g})"
            )
            names.append(name)
        else:
            found.append(f"{name} x{_g(factor)}")
    for label, (value, lo, hi, rests_on) in predictions.items():
        factor = _factor(lo, hi)
        used.append(np.log(factor) / np.log(MAX_PREDICTION_FACTOR))
        if factor > MAX_PREDICTION_FACTOR:
            problems.append(
                f"{label} = {_g(value)} has interval {_interval(lo, hi)}, a factor {_g(factor)} "
                f"(rule: at most {MAX_PREDICTION_FACTOR:g} at a measured budget)"
            )
            names += list(rests_on)
        else:
            found.append(f"{label} x{_g(factor)}")
    if problems:
        return check("intervals", False, "; ".join(problems), _with_dependents(names, depends))
    rules = []
    if exponents:
        rules.append("exponents' intervals exclude 0")
    if coefficients:
        rules.append(f"coefficients' span at most x{MAX_COEFFICIENT_FACTOR:g}")
    if predictions:
        rules.append(f"predictions at the largest budget at most x{MAX_PREDICTION_FACTOR:g}")
    return check("intervals", True, f"{'; '.join(rules)}: {', '.join(found)}", used=max(used))


# --------------------------------------------------------------------------------------------
# centering


def centering(budgets: Sequence[Mapping[str, Any]], what: str = "N") -> dict:
    """centering (IsoFLOP): each budget's minimum lies inside the middle half (CENTRE) of its
    sampled log-N range; a minimum in an outer quarter biases the parabola's vertex, one outside
    the range (or no minimum) leaves the budget out of the law. budgets: extras["budgets"] of an
    isoflop fit ({C, N, N_opt, used, ...}): the range is that of the sizes its parabola was
    fitted to (`used`, every size without it)."""
    lo_frac, hi_frac = CENTRE
    problems, places, offsets = [], [], [0.0]
    for budget in budgets:
        log_n = np.log10(np.asarray(budget["N"], dtype=float))
        log_n = log_n[np.asarray(budget.get("used", [True] * len(log_n)), dtype=bool)]
        label = f"C={_g(budget['C'])}"
        if not np.isfinite(budget["N_opt"]) or np.ptp(log_n) == 0:
            problems.append(f"{label}: no minimum (fewer than 3 sizes, or no bowl)")
            continue
        place = float((np.log10(budget["N_opt"]) - log_n.min()) / np.ptp(log_n))
        places.append(f"{place:.2f}")
        offsets.append(abs(place - (lo_frac + hi_frac) / 2) / ((hi_frac - lo_frac) / 2))
        if not 0 <= place <= 1:
            problems.append(
                f"{label}: minimum {what}={_g(budget['N_opt'])} outside the sampled "
                f"{_g(10 ** log_n.min())} to {_g(10 ** log_n.max())} "
                "(left out of the law)"
            )
        elif not lo_frac <= place <= hi_frac:
            side = "lower" if place < lo_frac else "upper"
            problems.append(
                f"{label}: minimum at {place:.2f} of the sampled log-{what} range, in its "
                f"{side} quarter"
            )
    rule = f"rule: each minimum within {lo_frac:g} to {hi_frac:g} of its budget's log-{what} range"
    if problems:
        return check(
            "centering",
            False,
            f"{'; '.join(problems)} ({rule}; sample sizes centred on each optimum)",
        )
    detail = f"minima at {', '.join(places)} of their ranges ({rule})"
    return check("centering", True, detail, used=max(offsets))


def optimum_inside_grid(budgets: Sequence[Mapping[str, Any]]) -> dict:
    """centering (hyperparameters): each budget's best run lies strictly inside its sampled lr
    and batch-size ranges; on an edge the optimum may lie beyond the grid."""
    edge = [f"C={_g(b['C'])}" for b in budgets if not b["in_range"]]
    if edge:
        return check(
            "centering",
            False,
            f"best run on the edge of the lr or batch-size grid at {', '.join(edge)}: the "
            "optimum may lie beyond it; extend the grid",
        )
    return check("centering", True, "every budget's best run lies inside its sampled grid")


# --------------------------------------------------------------------------------------------
# extrapolation


def extrapolation(
    leave_out: Callable[[], Mapping[str, Any]] | None,
    *,
    quantity: str,
    statistic: str,
    threshold: float,
    held_out: str,
) -> dict:
    """extrapolation: `leave_out()` refits without the largest scale and reports its errors there
    (validate.leave_largest_out's report): errors[quantity][statistic] at most `threshold`. Too
    little data to hold anything out (a ValueError) fails, with the reason. held_out: what is held
    out, in words ("the largest budget"). leave_out None (a fit's check_extrapolation=False, as in
    leave_largest_out's own refits): fails as not run."""
    if leave_out is None:
        return check("extrapolation", False, "not run (check_extrapolation=False)")
    try:
        report = leave_out()
    except ValueError as error:
        return check("extrapolation", False, f"cannot refit without {held_out}: {error}")
    error = report["errors"][quantity][statistic]
    what = "mean |relative error|" if statistic.startswith("mean") else "|relative error|"
    detail = (
        f"fitted without {held_out} ({report['n_held_out']} of "
        f"{report['n_held_out'] + report['n_train']} rows), it predicts {quantity} there with "
        f"{what} {error:.1%} (rule: at most {threshold:.0%})"
    )
    return check("extrapolation", error <= threshold, detail, used=error / threshold)


# --------------------------------------------------------------------------------------------
# agreement


def agreement(first: tuple[str, FitResult], second: tuple[str, FitResult]) -> dict:
    """agreement: two compute-optimal fits of the same runs, (label, fit) each (labels such as
    "Approach 2"), agree on a (N_opt ∝ C^a) when their 95% intervals overlap."""
    parts, spans = [], []
    for label, fit in (first, second):
        lo, hi = fit.ci95.get("a", (np.nan, np.nan))
        spans.append((lo, hi))
        trust = "" if fit.trusted else ", not trusted"
        parts.append(f"a = {fit.derived['a']:.3g} {_interval(lo, hi)} ({label}{trust})")
    (lo1, hi1), (lo2, hi2) = spans
    pair = f"{first[0]} and {second[0]}"
    if not np.isfinite([lo1, hi1, lo2, hi2]).all():
        detail = f"{pair}: cannot compare without both intervals: {' and '.join(parts)}"
        return check("agreement", False, detail)
    overlap = max(lo1, lo2) <= min(hi1, hi2)
    verdict = "agree: intervals overlap" if overlap else "DISAGREE: intervals do not overlap"
    return check("agreement", overlap, f"{pair} {verdict}; {' vs '.join(parts)}")
