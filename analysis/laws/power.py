"""The power law y = E + A x^-alpha: its fit, prediction, checks, figure and report section.

x: a positive scale (parameters, tokens, FLOPs); y: positive, e.g. a loss in nats per token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

import scalinglab.analysis.checks as checks
from scalinglab.analysis.fitting import bootstrap, extrapolation
from scalinglab.analysis.inputs import aligned, box, enough_points, named, positive_1d, same_length
from scalinglab.analysis.registry import Argument, Command, PointLaw, ReportEntry
from scalinglab.analysis.result import FitResult

# The power law's x in words: what each point is the lowest loss at.
AXIS_WORDS = {"n_params": "model size", "tokens": "token count", "flops": "compute budget"}


class PowerExtras(TypedDict, total=False):
    data: dict[str, list[float]]  # {x, y}: what FitResult.plot draws
    offset: bool
    bounds: dict[str, list[float]]
    bootstrap: dict[str, list[float]]
    n_bootstrap: int
    n_bootstrap_ok: int
    points_are: str  # what each point is, in words (the mean of k seeds)


def power_law(x: np.ndarray, E: float, A: float, alpha: float) -> np.ndarray:
    """y = E + A x^-alpha (E = 0 for a pure power law)."""
    return E + A * np.asarray(x, dtype=float) ** (-alpha)


# Least squares on log residuals, log y - log(E + A x^-alpha), in theta = (E, log A, alpha).


def _power_residuals(theta: np.ndarray, logx: np.ndarray, logy: np.ndarray, offset: bool):
    E = theta[0] if offset else 0.0
    term = np.exp(theta[-2] - theta[-1] * logx)  # A x^-alpha
    return np.log(E + term) - logy


def _power_jacobian(theta: np.ndarray, logx: np.ndarray, logy: np.ndarray, offset: bool):
    E = theta[0] if offset else 0.0
    term = np.exp(theta[-2] - theta[-1] * logx)
    pred = E + term
    cols = [1.0 / pred] if offset else []
    cols += [term / pred, -logx * term / pred]
    return np.column_stack(cols)


def _power_grid_start(logx, logy, offset: bool, alpha_lo: float, alpha_hi: float) -> np.ndarray:
    """Best (E, log A, alpha) over a grid of alpha, with (E, A) >= 0 solved exactly for each alpha
    by least squares on relative residuals (the model is linear in E and A once alpha is fixed)."""
    alpha_lo = max(alpha_lo, 1e-3)
    alphas = np.linspace(alpha_lo, min(alpha_hi, alpha_lo + 5.0), 200)
    x_ref = logx.mean()  # columns on (x / x_ref)^-alpha keep the solves well conditioned
    col_a = np.exp(-np.outer(logx - x_ref, alphas) - logy[:, None])  # n x k, already / y
    col_e = np.exp(-logy)
    best_err, best = np.inf, None
    for j, alpha in enumerate(alphas):
        X = np.column_stack([col_e, col_a[:, j]]) if offset else col_a[:, [j]]
        coef = _nonneg_lstsq(X, np.ones_like(logy))
        A = max(coef[-1], 1e-12) * np.exp(alpha * x_ref)
        E = coef[0] if offset else 0.0
        err = np.sum((np.log(E + A * np.exp(-alpha * logx)) - logy) ** 2)
        if err < best_err:
            best_err, best = err, ([E] if offset else []) + [np.log(A), alpha]
    return np.asarray(best)


def _nonneg_lstsq(X: np.ndarray, target: np.ndarray) -> np.ndarray:
    """argmin ||X c - target|| over c >= 0, for the few columns used here (enumerate supports)."""
    k = X.shape[1]
    best_err, best = np.inf, np.zeros(k)
    for mask in range(1, 2**k):
        support = [j for j in range(k) if mask >> j & 1]
        c, *_ = np.linalg.lstsq(X[:, support], target, rcond=None)
        if np.all(c >= 0):
            err = np.sum((X[:, support] @ c - target) ** 2)
            if err < best_err:
                best_err, best = err, np.zeros(k)
                best[support] = c
    return best


def _start(logx, logy, names, bounds_box, offset, p0) -> np.ndarray:
    """The optimiser's start: p0 by name or in order, else the best point of an alpha grid."""
    if p0 is None:
        return _power_grid_start(logx, logy, offset, *bounds_box["alpha"])
    start = named(p0, names, "p0")
    if set(start) != set(names):
        raise ValueError(f"p0 needs every parameter {names}, got {sorted(start)}")
    if start["A"] <= 0:
        raise ValueError(f"p0: A must be positive, got {start['A']}")
    return np.array([np.log(start[k]) if k == "A" else start[k] for k in names], float)


def _box(bounds, names) -> tuple[dict[str, tuple[float, float]], np.ndarray, np.ndarray]:
    """The fit's box by name, and in theta = (E, log A, alpha): A is fitted as log A."""
    defaults = {"E": (0.0, np.inf), "A": (1e-300, np.inf), "alpha": (0.0, 10.0)}
    limits = box(bounds, {k: defaults[k] for k in names})
    if limits["A"][1] <= 0:
        raise ValueError(f"bounds['A'] must allow a positive A, got {limits['A']}")
    lo = np.array([limits[k][0] if k != "A" else np.log(max(limits[k][0], 1e-300)) for k in names])
    hi = np.array([limits[k][1] if k != "A" else np.log(limits[k][1]) for k in names])
    return limits, lo, hi


def _checks(result, x, y, names, design, run, offset, p0, bounds) -> list[dict]:
    """The power law's checks (fit_power_law's docstring); the refits of the extrapolation
    check take the fit's own options."""
    return [
        checks.enough(
            len(x),
            len(names) + 2,
            f"points for {len(names)} parameters",
            "two more points than parameters",
            names,
        ),  # fmt: skip
        *design,
        checks.within_bounds(result, result.extras["bounds"], loss_scale=float(y.min())),
        checks.intervals(
            result, exponents=["alpha"], coefficients=[k for k in names if k != "alpha"]
        ),
        extrapolation(
            result,
            fit_power_law,
            (x, y),
            run=run,
            quantity="y",
            statistic="mean_abs_relative_error",
            threshold=checks.MAX_LOSS_ERROR,
            held_out="the largest x",
            offset=offset,
            p0=p0,
            bounds=bounds,
        ),  # fmt: skip
    ]


def fit_power_law(
    x: np.ndarray,
    y: np.ndarray,
    *,
    offset: bool = True,
    n_bootstrap: int = 200,
    seed: int = 0,
    p0: Sequence[float] | Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    check_extrapolation: bool = True,
    design: Sequence[dict] = (),
    points_are: str | None = None,
) -> FitResult:
    """Fit y = E + A x^-alpha (offset=False: y = A x^-alpha) by least squares on log y.

    x: positive scale variable (parameters, tokens, FLOPs); y: positive, e.g. loss in nats.
    p0: the starting point, by name or in order (E, A, alpha) / (A, alpha); without it the
        optimiser starts from the best point of an alpha grid with (E, A) solved exactly.
    bounds: {name: (low, high)} for the parameters to bound (inputs.py), e.g.
        {"alpha": (0.2, 1.0)}; the others keep their defaults, E in [0, inf), A in (0, inf),
        alpha in [0, 10].
    objective: sum of squared log residuals. Intervals: bootstrap over points.
    checks: design (at least two more points than parameters), then `design`, the caller's
        checks of what x is (checks.compute_law, checks.one_slice), bounds, intervals (alpha
        excludes 0, E and A within a factor 100), extrapolation (refit without the largest x,
        which check_extrapolation=False skips: the check then fails as not run).
    points_are: what each point is, in words (extras; the report prints it).
    """
    from scipy.optimize import least_squares  # only when fitting: the CLI's help stays light

    aligned(x=x, y=y)
    x, y = positive_1d("x", x), positive_1d("y", y)
    n = same_length(x=x, y=y)
    names = ("E", "A", "alpha") if offset else ("A", "alpha")
    enough_points(n, len(names), "the power law")
    if np.unique(x).size < 2:
        raise ValueError("x needs at least two distinct values to fit a power law")
    limits, lo, hi = _box(bounds, names)
    logx, logy = np.log(x), np.log(y)
    theta0 = np.clip(_start(logx, logy, names, limits, offset, p0), lo, hi)

    def solve(theta_start, lx, ly):
        return least_squares(
            _power_residuals, theta_start, jac=_power_jacobian, bounds=(lo, hi),
            args=(lx, ly, offset), x_scale="jac", method="trf", xtol=1e-12, ftol=1e-12, gtol=1e-12,
        )  # fmt: skip

    def as_params(theta) -> dict[str, float]:
        return {k: float(np.exp(v) if k == "A" else v) for k, v in zip(names, theta, strict=True)}

    fit = solve(theta0, logx, logy)

    def fit_resample(idx: np.ndarray) -> dict[str, float] | None:
        if np.unique(x[idx]).size < 2:
            return None
        refit = solve(fit.x, logx[idx], logy[idx])
        return as_params(refit.x) if refit.success else None

    boot = bootstrap(fit_resample, n, n_bootstrap=n_bootstrap, seed=seed)
    extras: PowerExtras = {
        "data": {"x": x.tolist(), "y": y.tolist()},
        "offset": offset,
        "bounds": {k: [float(v) for v in limits[k]] for k in names},
        **boot.extras(),
    }
    if points_are:
        extras["points_are"] = points_are
    result = FitResult(
        law="power", params=as_params(fit.x), ci95=boot.ci95, n_points=n,
        converged=bool(fit.success), message=str(fit.message) + boot.note,
        objective=float(2.0 * fit.cost), extras=dict(extras),
    )  # fmt: skip
    result.checks = _checks(result, x, y, names, design, check_extrapolation, offset, p0, bounds)
    return result


# --------------------------------------------------------------------------------------------
# The law in the registry: prediction, figure, headline, and its section of a study


def _compute_law_check(best: Any, params: list[str]) -> dict:
    """checks.compute_law over the points of an L(C) fit, or a failing design check when the data
    has no parameter and token counts to tell."""
    known = [c for c in ("n_params", "tokens") if c in best and best[c].notna().all()]
    if len(known) < 2:
        return checks.check(
            "design",
            False,
            "cannot tell whether L(C) is a compute law: the points have no parameter and token "
            "counts (over runs of one D, L(C) is L(N) relabelled)",
            params,
        )
    return checks.compute_law(best["n_params"], best["tokens"], best["budget"], params)


def _design(best: Any, x: str, names: list[str]) -> list[dict]:
    """What x is, checked on the points: a compute law, or a slice of L(N, D)."""
    if x == "flops":
        return [_compute_law_check(best, names)]
    if {"n_params", "tokens"} <= set(best) and best[["n_params", "tokens"]].notna().all(axis=None):
        return [checks.one_slice(x, best["n_params"], best["tokens"], names)]
    return []


class PowerLaw(PointLaw):
    name = "power"
    target = "y"
    data = "(x, y)"
    command = Command(
        "power",
        "L(x) = E + A x^-alpha through the best loss at each x",
        "Fit L(x) = E + A x^-alpha by least squares on log L through the lowest loss at each x "
        "(parameters, tokens, or each compute budget; runs that differ in seed alone are "
        "averaged first), with 95% bootstrap intervals and the fit's checks. Figure: "
        "loss_vs_<x>, with the single seeds behind their means.",
        arguments=(
            Argument(
                ("--x",),
                {
                    "choices": ["n_params", "tokens", "flops"],
                    "default": "n_params",
                    "help": "the scale variable x: parameters, training tokens, or compute (each "
                    "run's budget) (n_params)",
                },
            ),
        ),
        order=10,
    )
    report = (
        ReportEntry("Power law L(N)", 10, {"x": "n_params"}),
        ReportEntry("Power law L(C)", 11, {"x": "flops"}),
    )

    def predict(self, fit: FitResult, *inputs: Any) -> Any:
        p = fit.params
        return power_law(*inputs, p.get("E", 0.0), p["A"], p["alpha"])

    def draw_loss(self, ax: Any, fit: FitResult, curve_x: Any, **context: Any) -> list[Any]:
        from scalinglab.analysis.plotting import (
            SYMBOLS,
            draw_band,
            loss_band,
            trust_label,
            with_ci,
        )

        symbol = SYMBOLS.get(context["x_name"], "x")
        label = f"fit L = E + A·{symbol}^-alpha\n" + ", ".join(
            with_ci(fit, k) for k in ("alpha", "E") if k in fit.params
        )
        drawn = [fit.predict(curve_x)]
        ax.plot(curve_x, drawn[-1], color="C3", label=label)
        draw_band(ax, curve_x, fit, lambda: loss_band(fit, curve_x), color="C3")
        E = fit.params.get("E", 0.0)
        if E > 0:
            # Far below the data (an E the data cannot pin down), it would squash the points.
            near = np.nanmin(np.concatenate([context["loss"], *context["curves"], *drawn])) / 2 <= E
            label = "irreducible loss E" if near else f"irreducible loss E = {E:.3g}, below"
            ax.axhline(E, color="C3", ls=":", lw=1, label=label)
            drawn.append(np.array([E] if near else []))
        if not fit.trusted:
            ax.set_title(trust_label(ax.get_title(), fit))
        return drawn

    def plot(self, fit: FitResult, ax: Any = None, **options: Any) -> Any:
        from scalinglab.analysis.plotting import plot_data, plot_loss

        def draw(data: dict, on: Any) -> None:
            plot_loss(data["x"], data["y"], fit, ax=on, **({"x_name": "x"} | options))

        return plot_data(fit, ax, "plot_loss(x, y, fit)", draw)

    def headline(self, fit: FitResult) -> list[dict[str, Any]]:
        nan = (float("nan"), float("nan"))
        return [
            {"quantity": name, "text": f"{name} = {{}}", "value": fit.params[name], "at": None}
            | dict(zip(("lo", "hi"), fit.ci95.get(name, nan), strict=True))
            for name in ("alpha", "E")
            if name in fit.params
        ]

    def wandb_prefix(self, section: Any) -> str:
        return next(iter(section.figures))  # loss_vs_n_params, loss_vs_flops: two in a report

    def analyse(self, study: Any, fitted: dict, x: str = "n_params", **options: Any) -> Any:
        return analyse_power(study, x)


LAWS = [PowerLaw()]


def analyse_power(study: Any, x: str = "n_params") -> Any:
    """L(x) = E + A x^-alpha through the lowest loss at each x (flops: at each budget), runs that
    differ in seed alone averaged first (load.seed_means)."""
    from scalinglab.analysis.load import seed_means, settings
    from scalinglab.analysis.plotting import plot_loss
    from scalinglab.analysis.section import Section
    from scalinglab.analysis.study import fit_options, rows

    column = "budget" if x == "flops" else x
    runs = rows(study, [column, "loss"], f"the power law in {x}")
    setting = settings(runs)
    means = seed_means(runs, setting=setting)
    best = means.loc[means.groupby(column)["loss"].idxmin()]
    seeds = best["n_seeds"]
    averaged = seeds.max() > 1
    singles = runs[np.isin(setting, best["setting"])]
    what = f"the lowest loss at each {AXIS_WORDS[x]}"
    points_are = None
    if averaged:
        counts = (
            f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()} to {seeds.max()}"
        )
        points_are = f"each the mean of {counts} seeds"
        what += f" ({points_are}: runs that differ in seed alone)"
    design = _design(best, x, ["E", "A", "alpha"])
    fit = fit_power_law(
        best[column], best["loss"], design=design, points_are=points_are, **fit_options(study)
    )
    has_tokens = x != "tokens" and "tokens" in best and best["tokens"].notna().all()
    figure = plot_loss(
        best[column],
        best["loss"],
        fit,
        x_name=x,
        tokens=best["tokens"] if has_tokens else None,
        floor=study.known_floor,
        seeds=(singles[column], singles["loss"]) if averaged else None,
    )
    return Section(
        description=f"L = E + A·{x}^-alpha fitted to {what} ({len(best)} of {len(means)} points)."
        + study.against_floor(fit),
        fit=fit,
        figures={f"loss_vs_{x}": figure},
        captions={
            f"loss_vs_{x}": f"{what[0].upper()}{what[1:]} against {x} (log-log, {len(best)} "
            f"points), with the fitted L = E + A·{x}^-alpha"
            + ("." if fit.trusted else "; the fit is not trusted.")
        },
    )
