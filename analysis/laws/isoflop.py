"""IsoFLOP profiles, Chinchilla's Approach 2: a parabola of loss in log N per compute budget, its
minimum N_opt(C), then N_opt = k_N C^a and D_opt = k_D C^b through the minima.

Units: C in FLOPs (C = 6 N D), N in parameters, tokens in tokens, losses in nats per token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

import scalinglab.analysis.checks as checks
from scalinglab.analysis.budgets import BUDGET_RTOL, budget_flops, budget_labels
from scalinglab.analysis.fitting import bootstrap, extrapolation
from scalinglab.analysis.frontier import PowerFrontier, frontier_intervals, loglog_fit
from scalinglab.analysis.inputs import aligned, enough_points, positive_1d, same_length
from scalinglab.analysis.registry import Argument, Command, ReportEntry
from scalinglab.analysis.result import FitResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, LogNorm
    from matplotlib.figure import Figure


class IsoflopExtras(TypedDict):
    budgets: list[dict[str, Any]]  # per budget: C, N, loss, coef, N_opt, N_opt_ci95, D_opt, ...
    flagged_budgets: list[float]
    budget_tol: float
    window: float  # decades of N either side of each budget's best run in its parabola
    n_bootstrap: int
    n_bootstrap_ok: int
    bootstrap: dict[str, list[float]]


# Each budget's parabola is fitted to the runs within WINDOW decades of N of its best run: a
# parabola in log N holds near the minimum, not over the 2 to 3 decades published studies sample.
WINDOW = 1.0
# From this many budgets up, the bootstrap redraws budgets too (pairs over budgets, then runs
# within each): the budgets' scatter about the line counts, beyond each minimum's own noise.
MIN_BUDGETS_REDRAWN = 6


def _parabola_minimum(
    log_x: np.ndarray, loss: np.ndarray
) -> tuple[np.ndarray, float, float, float]:
    """Parabola coefficients [c2, c1, c0] of loss in log_x, its vertex, the loss there, and the
    vertex's variance per unit of noise variance (delta method: g' (X'X)^-1 g); NaN vertex if
    fewer than 3 distinct points or the parabola opens downward."""
    if np.unique(log_x).size < 3:
        return np.full(3, np.nan), np.nan, np.nan, np.nan
    coef = np.polyfit(log_x, loss, 2)
    if coef[0] <= 0:
        return coef, np.nan, np.nan, np.nan
    vertex = -coef[1] / (2.0 * coef[0])
    design = np.column_stack([log_x**2, log_x, np.ones_like(log_x)])
    gradient = np.array([coef[1] / (2.0 * coef[0] ** 2), -1.0 / (2.0 * coef[0]), 0.0])
    unit_variance = float(gradient @ np.linalg.pinv(design.T @ design) @ gradient)
    return coef, vertex, coef[2] - coef[1] ** 2 / (4.0 * coef[0]), unit_variance


def _near_best(log_n: np.ndarray, loss: np.ndarray, window: float) -> np.ndarray:
    """The runs within `window` decades of N of the lowest-loss run (a mask)."""
    return np.abs(log_n - log_n[np.argmin(loss)]) <= window + 1e-9


@np.errstate(over="ignore", divide="ignore")  # a resample's flat parabola: no minimum, flagged
def _isoflop_profiles(C, N, loss, tokens, labels, window=WINDOW):
    """Per budget: the parabola in log10 N (and log10 D when tokens are given) through the runs
    near its best one, its minimum, and the minimum's weight in the law (1 / its standard error,
    up to the noise's scale)."""
    rows = []
    for k, c_budget in enumerate(budget_flops(C, labels)):
        member = np.flatnonzero(labels == k)
        log_n = np.log10(N[member])
        near = _near_best(log_n, loss[member], window)
        coef, x_opt, loss_opt, var_n = _parabola_minimum(log_n[near], loss[member][near])
        in_range = bool(np.isfinite(x_opt) and log_n[near].min() <= x_opt <= log_n[near].max())
        n_opt, var_d = 10.0**x_opt, var_n
        if tokens is None:
            d_opt = c_budget / (6.0 * n_opt)
        else:
            log_d = np.log10(tokens[member])[near]
            _, xd_opt, _, var_d = _parabola_minimum(log_d, loss[member][near])
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
                "used": member[near],
                "weights": (_weight(var_n), _weight(var_d)),
            }
        )
    return rows


def _weight(unit_variance: float) -> float:
    """A minimum's weight in the law: 1 / its standard error (relative: the noise's scale is one
    for every budget); 1 where three points fix the parabola exactly."""
    return 1.0 / np.sqrt(unit_variance) if np.isfinite(unit_variance) and unit_variance > 0 else 1.0


def _parabola_residuals(
    N: np.ndarray, loss: np.ndarray, labels: np.ndarray, profiles: list[dict]
) -> tuple[np.ndarray, np.ndarray]:
    """Each run's loss on its budget's parabola, and its residual scaled by sqrt(n / (n - 3)) so
    that resampled residuals keep the noise's variance (a parabola spends 3 of its n points).
    Runs a parabola was not fitted to (beyond the window), and budgets with no residual degrees
    of freedom (3 sizes or fewer), borrow residuals from the others: an exact fit through 3 points
    is not a noiseless one."""
    fitted = loss.astype(float).copy()
    residuals = np.zeros_like(fitted)
    exact = np.ones(len(loss), dtype=bool)
    for profile in profiles:
        used = profile["used"]
        if len(used) <= 3 or not np.all(np.isfinite(profile["coef"])):
            continue
        fitted[used] = np.polyval(profile["coef"], np.log10(N[used]))
        residuals[used] = (loss[used] - fitted[used]) * np.sqrt(len(used) / (len(used) - 3))
        exact[used] = False
    if exact.any() and (~exact).any():
        pooled = residuals[~exact]
        residuals[exact] = np.resize(pooled, exact.sum())  # copies, not zeros, in the pool
        fitted[exact] = loss[exact] - residuals[exact]
    return fitted, residuals


def _frontier_law(rows) -> tuple[dict[str, float], float]:
    """N_opt = k_N C^a and D_opt = k_D C^b through the budgets' minima, each weighted by 1 / its
    standard error: least squares on log10 axes; and the N_opt law's sum of squared log10
    residuals."""
    c = np.array([p["C"] for p in rows])
    law, objective = {}, np.nan
    for name, (k, e), w in (("N_opt", ("k_N", "a"), 0), ("D_opt", ("k_D", "b"), 1)):
        weights = np.array([p["weights"][w] for p in rows])
        law[k], law[e], residual = loglog_fit(c, np.array([p[name] for p in rows]), weights)
        objective = residual if name == "N_opt" else objective
    return law, objective


def _budget_rows(profiles, N, loss, labels, ci95, n_ok) -> list[dict[str, Any]]:
    """extras["budgets"]: each budget's runs, parabola and minimum with its interval (popped
    from ci95, where the resamples put it)."""
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
                "used": [bool(u) for u in np.isin(np.flatnonzero(member), p["used"])],
                "weight": float(p["weights"][0]),
            }
        )
    return budgets


def _flagged_note(flagged: list[float]) -> str:
    if not flagged:
        return ""
    return (
        f"; flagged (minimum outside the sampled range or no minimum), left out: "
        f"C={[f'{c:.3g}' for c in flagged]}"
    )


def _used_profiles(C, N, loss, tokens, labels, window) -> tuple[list, list, list[float]]:
    """Every budget's profile, those whose minimum lies inside their sizes, and the others' C."""
    profiles = _isoflop_profiles(C, N, loss, tokens, labels, window)
    used = [p for p in profiles if p["in_range"]]
    flagged = [p["C"] for p in profiles if not p["in_range"]]
    if len(used) < 2:
        raise ValueError(
            f"IsoFLOP needs at least two budgets with a minimum inside the sampled range; "
            f"{len(flagged)} of {len(profiles)} flagged (C={[f'{c:.3g}' for c in flagged]}): "
            "sample sizes on both sides of the optimum"
        )
    return profiles, used, flagged


def _inputs(C, N, loss, tokens, budget_tol: float) -> tuple:
    """C, N, loss (and tokens) as positive arrays of one length, and each run's budget."""
    aligned(C=C, N=N, loss=loss, tokens=tokens)
    C, N, loss = positive_1d("C", C), positive_1d("N", N), positive_1d("loss", loss)
    arrays = {"C": C, "N": N, "loss": loss}
    if tokens is not None:
        tokens = arrays["tokens"] = positive_1d("tokens", tokens)
    n = same_length(**arrays)
    labels = budget_labels(C, budget_tol)
    if labels.max() + 1 < 2:
        raise ValueError(f"IsoFLOP needs at least two compute budgets, got one (C={C[0]:.3g})")
    enough_points(n, 3 * 2, "IsoFLOP (a parabola per budget, at least two budgets)")
    return C, N, loss, tokens, labels


def _checks(result: FitResult, arrays: tuple, c_max: float, run: bool, tokens) -> list[dict]:
    """The IsoFLOP checks (fit_isoflop's docstring); arrays: (C, N, loss)."""
    budgets, budget_tol = result.extras["budgets"], result.extras["budget_tol"]
    values = result.params
    sizes = [np.unique(np.asarray(b["N"])[b["used"]]).size for b in budgets]
    well_sampled = sum(
        b["in_range"] and k >= checks.MIN_ISOFLOP_SIZES for b, k in zip(budgets, sizes, strict=True)
    )
    return [
        checks.enough(
            well_sampled,
            checks.MIN_ISOFLOP_BUDGETS,
            f"budgets with their minimum inside the sampled sizes and at least "
            f"{checks.MIN_ISOFLOP_SIZES} sizes in their parabola (sizes per budget: {sizes})",
            "a line through the minima with a point to spare",
            list(values),
        ),
        checks.centering(budgets),
        frontier_intervals(result, float(c_max)),
        extrapolation(
            result,
            fit_isoflop,
            arrays,
            run=run,
            quantity="N_opt",
            statistic="max_abs_relative_error",
            threshold=checks.MAX_N_OPT_ERROR,
            held_out="the largest budget",
            tokens=tokens,
            budget_tol=budget_tol,
            window=result.extras["window"],
        ),  # fmt: skip
    ]


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
    window: float = WINDOW,
) -> FitResult:
    """Chinchilla Approach 2: a parabola of loss in log10 N per compute budget, through the runs
    within `window` decades of N of its best run, its minimum N_opt(C), then N_opt = k_N C^a and
    D_opt = k_D C^b, each minimum weighted by 1 / its standard error (D_opt = C / (6 N_opt) unless
    `tokens`, the tokens each run trained on, are given; then D_opt is the minimum of a parabola
    in log10 D through the same runs).

    C: the run's compute budget (FLOPs; runs whose FLOPs step by at most budget_tol share a
    budget, budgets.budget_labels); N: parameters; loss: final loss. window: a parabola holds
    near the minimum, not across the 2 to 3 decades published studies sample (default WINDOW, a
    decade either side: every size of a design centred on the optimum). A budget whose parabola
    opens downward, has fewer than 3 sizes, or has its minimum outside those sizes is flagged
    (in_range False) and left out of the law. Weights: each minimum's standard error by the delta
    method from its parabola's fit. Intervals: a residual bootstrap, each resample adding
    residuals redrawn from every budget's parabola (pooled: a 5-size budget alone leaves 2
    degrees of freedom) and refitting everything, the windows included; from MIN_BUDGETS_REDRAWN
    budgets used, each resample also redraws the budgets. The sizes are the study's design, so
    they stay fixed. Calibration: tests/analysis/test_compute_optimal.py.
    params and derived: k_N, a, k_D, b. objective: sum of squared log10 residuals of the N_opt law.
    extras["budgets"]: per budget {C, N, loss, coef, N_opt, N_opt_ci95 (None without bootstrap),
    D_opt, loss_opt, in_range, used (per run: in the parabola), weight}; extras["bootstrap"]:
    {k_N, a, k_D, b: per-resample values} for frontier_band.
    checks: design (at least 3 budgets used, 4 sizes in each parabola), centering (each minimum
    in the middle half of its parabola's log-N range), intervals (a, b exclude 0; N_opt at the
    largest budget used within a factor 10), extrapolation (refit without the largest budget:
    its N_opt within 35%; check_extrapolation=False skips it and the check fails as not run).
    """
    C, N, loss, tokens, labels = _inputs(C, N, loss, tokens, budget_tol)
    n, n_budgets = len(C), labels.max() + 1
    profiles, used, flagged = _used_profiles(C, N, loss, tokens, labels, window)
    used_budgets = np.flatnonzero([p["in_range"] for p in profiles])
    values, objective = _frontier_law(used)
    c_used = np.array([p["C"] for p in used])
    fitted, residuals = _parabola_residuals(N, loss, labels, profiles)
    redraw = np.random.default_rng([seed, 1]) if len(used) >= MIN_BUDGETS_REDRAWN else None

    def fit_resample(idx: np.ndarray) -> dict[str, float] | None:
        resampled = fitted + residuals[idx]  # residuals pooled over every budget
        if np.any(resampled <= 0):
            return None
        rows = _isoflop_profiles(C, N, resampled, tokens, labels, window)
        budgets = used_budgets if redraw is None else redraw.choice(used_budgets, len(used))
        kept = [rows[k] for k in budgets if rows[k]["in_range"]]
        if len({r["C"] for r in kept}) < 2:
            return None
        return _frontier_law(kept)[0] | {f"N_opt[{k}]": r["N_opt"] for k, r in enumerate(rows)}

    boot = bootstrap(fit_resample, n, n_bootstrap=n_bootstrap, seed=seed)
    ci95 = boot.ci95
    budgets = _budget_rows(profiles, N, loss, labels, ci95, boot.n_ok)
    message = f"{len(used)} of {n_budgets} budgets used" + boot.note + _flagged_note(flagged)
    extras: IsoflopExtras = {
        "budgets": budgets,
        "flagged_budgets": flagged,
        "budget_tol": budget_tol,
        "window": window,
        **boot.extras(list(values)),  # the law's draws, not the per-budget N_opt
    }
    result = FitResult(
        law="isoflop", params=dict(values), ci95=ci95, derived=dict(values), n_points=n,
        converged=True, message=message, objective=objective, extras=dict(extras),
    )  # fmt: skip
    result.checks = _checks(result, (C, N, loss), c_used.max(), check_extrapolation, tokens)
    return result


# --------------------------------------------------------------------------------------------
# Figure


def _draw_profiles(fig: Figure, ax: Axes, fit: FitResult) -> tuple[Colormap, LogNorm]:
    """IsoFLOP profiles on `ax`: loss against N per budget, the parabola in log10 N through the
    runs near the best one (the others hollow) and its minimum with its 95% interval; a minimum
    outside the sampled sizes is hollow and labelled.
    Returns the budgets' colour scale, for other panels to share."""
    from matplotlib.ticker import NullFormatter

    from scalinglab.analysis.plotting import (
        AXIS_LABELS,
        colour_scale,
        error_bar,
        log_norm,
        span,
    )

    budgets = fit.extras["budgets"]
    ax.set(xscale="log", xlabel=AXIS_LABELS["n_params"], ylabel=AXIS_LABELS["loss"])
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide within a decade
    norm = log_norm([b["C"] for b in budgets])
    cmap = colour_scale(fig, ax, norm, AXIS_LABELS["flops"])
    for budget in budgets:
        color = cmap(norm(budget["C"]))
        n_params, loss = np.asarray(budget["N"], float), np.asarray(budget["loss"], float)
        used = np.asarray(budget.get("used", [True] * len(n_params)), dtype=bool)
        ax.scatter(n_params[used], loss[used], color=color, zorder=3)
        ax.scatter(n_params[~used], loss[~used], facecolors="none", edgecolors=color, zorder=3)
        if not np.isfinite(budget["N_opt"]):  # < 3 sizes, or a parabola opening downward
            continue
        curve_n = span(np.append(n_params[used], budget["N_opt"]), 0.1, 0.1)
        ax.plot(
            curve_n,
            np.polyval(budget["coef"], np.log10(curve_n)),
            color=color,
            ls="-" if budget["in_range"] else "--",
        )
        ax.errorbar(
            budget["N_opt"],
            budget["loss_opt"],
            xerr=error_bar(budget["N_opt"], budget.get("N_opt_ci95")),
            color=color,
            zorder=4,
            marker="*",
            ms=12,
            mfc=color if budget["in_range"] else "white",
            capsize=3,
        )
        if not budget["in_range"]:
            ax.annotate(
                "minimum outside\nsampled sizes",
                (budget["N_opt"], budget["loss_opt"]),
                textcoords="offset points",
                xytext=(8, -18),
                fontsize=7,
                color="C3",
            )
    ax.plot([], [], "k*", ms=10, label="minimum N_opt (95% CI)")
    if not all(all(b.get("used", [True])) for b in budgets):
        window = fit.extras.get("window")
        ax.scatter(
            [],
            [],
            facecolors="none",
            edgecolors="k",
            label=f"beyond {window:g} decade of the best: not in the parabola",
        )
    if not all(b["in_range"] for b in budgets):
        ax.plot([], [], "k*", ms=10, mfc="white", label="minimum outside sampled sizes")
    ax.legend(fontsize=8)
    return cmap, norm


def plot_isoflop(
    fit: FitResult, chinchilla: FitResult | None = None, *, beyond_decades: float = 1.0
) -> Figure:
    """An IsoFLOP study in one figure. Left: loss against N at each compute budget, the parabola
    fitted in log10 N and its minimum N_opt with its 95% interval (a minimum outside the sampled
    sizes hollow and labelled; a budget with no minimum shows its points only). Right: those
    minima against C, the fitted N_opt = k_N C^a with its 95% bootstrap band, from the smallest
    budget to `beyond_decades` past the largest, and, given a `chinchilla` fit of the same runs,
    Approach 3's frontier on the same axes."""
    from matplotlib.figure import Figure

    from scalinglab.analysis.plotting import (
        draw_frontier,
        error_bar,
        frontier_axes,
        trust_label,
    )

    fig = Figure(figsize=(12.0, 4.8), layout="constrained")
    ax, ax_frontier = fig.subplots(1, 2)
    for axis in (ax, ax_frontier):
        axis.grid(True, which="major", alpha=0.3)
    ax.set_title("IsoFLOP profiles")
    cmap, norm = _draw_profiles(fig, ax, fit)

    budgets = fit.extras["budgets"]
    compute = frontier_axes(ax_frontier, np.array([b["C"] for b in budgets]), beyond_decades)
    ax_frontier.set_title("Compute-optimal model size")
    draw_frontier(
        ax_frontier, fit, compute, color="C0", label=trust_label("IsoFLOP (Approach 2)", fit)
    )
    if chinchilla is not None:
        label = trust_label("L(N, D) fit (Approach 3)", chinchilla)
        draw_frontier(ax_frontier, chinchilla, compute, color="C3", label=label, ls="--")
    for budget in (b for b in budgets if np.isfinite(b["N_opt"])):
        color = cmap(norm(budget["C"]))
        ax_frontier.errorbar(
            budget["C"],
            budget["N_opt"],
            yerr=error_bar(budget["N_opt"], budget.get("N_opt_ci95")),
            fmt="*",
            ms=12,
            color=color,
            mfc=color if budget["in_range"] else "white",
            capsize=3,
            zorder=4,
        )
    ax_frontier.plot([], [], "k*", ms=10, label="IsoFLOP minima (95% CI)")
    ax_frontier.legend(fontsize=7, loc="upper left")
    return fig


# --------------------------------------------------------------------------------------------
# The law in the registry


class IsoflopLaw(PowerFrontier):
    name = "isoflop"
    approach = 2
    fields = {"N_opt": "N_opt", "D_opt": "D_opt"}
    command = Command(
        "isoflop",
        "IsoFLOP parabolas, Approach 2",
        "Fit a parabola in log N to each compute budget's runs near its best one (--window), take "
        "its minimum N_opt(C), then "
        "N_opt = k_N C^a and D_opt = k_D C^b through the minima, each weighted by 1 / its "
        "standard error (Approach 2); a budget whose minimum falls outside its parabola's sizes "
        "is flagged, not used. Figure: isoflop.",
        arguments=(
            Argument(
                ("--window",),
                {
                    "type": float,
                    "default": WINDOW,
                    "help": "each budget's parabola goes through the runs within this many "
                    f"decades of N of its best run ({WINDOW:g}: 10x either side)",
                },
            ),
        ),
        order=30,
    )
    report = (ReportEntry("IsoFLOP profiles, Approach 2", 30),)

    def plot(self, fit: FitResult, ax: Any = None, **options: Any) -> Any:
        from scalinglab.analysis.plotting import new_axes, plot_frontier

        ax = new_axes() if ax is None else ax
        plot_frontier(fit, [b["C"] for b in fit.extras["budgets"]], ax=ax, **options)
        return ax

    def analyse(self, study: Any, fitted: dict, **options: Any) -> Any:
        # Drawn with Approach 3's frontier beside its own when the study fitted it first.
        return analyse_isoflop(study, fitted.get("chinchilla"))


LAWS = [IsoflopLaw()]


def analyse_isoflop(study: Any, chinchilla: FitResult | None = None) -> Any:
    """Approach 2; `chinchilla`, an Approach-3 fit of the same runs, adds its frontier to the
    figure."""
    import pandas as pd

    from scalinglab.analysis.frontier import allocations
    from scalinglab.analysis.section import Section
    from scalinglab.analysis.study import budget_options
    from scalinglab.analysis.study import rows as study_rows

    rows = study_rows(study, ["budget", "n_params", "loss"], "IsoFLOP")
    sizes_per_budget = rows.groupby("budget")["n_params"].nunique()
    if (sizes_per_budget >= 3).sum() < 2:
        raise ValueError(
            f"IsoFLOP needs two or more compute budgets with three or more model sizes each; "
            f"found {len(sizes_per_budget)} budgets with {sizes_per_budget.tolist()} sizes "
            f"(runs whose FLOPs step by at most {study.args.budget_tol:.1%} share a budget; "
            "see --budget-tol, --budget-col)"
        )
    tokens = rows["tokens"] if "tokens" in rows and rows["tokens"].notna().all() else None
    fit = fit_isoflop(
        rows["budget"],
        rows["n_params"],
        rows["loss"],
        tokens=tokens,
        window=getattr(study.args, "window", WINDOW),  # `report` takes the default
        **budget_options(study),
    )
    budgets = [b["C"] for b in fit.extras["budgets"]]
    untrusted = "" if fit.trusted else " The fit is not trusted: the frontier is not a result."
    return Section(
        description=f"A parabola in log10 N per compute budget ({len(budgets)} budgets, "
        f"{len(rows)} runs) through the runs within {fit.extras['window']:g} decade of N of its "
        "best one, then N_opt = k_N C^a and D_opt = k_D C^b through the minima, each weighted "
        "by 1 / its standard error.",
        fit=fit,
        figures={"isoflop": plot_isoflop(fit, chinchilla)},
        captions={
            "isoflop": f"Left: final loss against parameters at each of the {len(budgets)} "
            "compute budgets, the parabola fitted in log10 N per budget and its minimum with its "
            "95% interval. Right: those minima against compute and the law N_opt = k_N C^a "
            "fitted through them with its 95% bootstrap band (Approach 2)"
            + (
                ", beside the frontier implied by the L(N, D) fit (Approach 3)"
                if chinchilla
                else ""
            )
            + "; grey: extrapolation beyond the largest budget."
            + untrusted,
        },
        tables={"Compute-optimal allocation": pd.DataFrame(allocations(fit, budgets))},
    )
