"""Optimal learning rate and batch size as laws of parameters N and tokens D (Step Law, Li et al.
2025; Porian et al. 2024): lr_opt = k_lr N^alpha_lr D^beta_lr, batch_opt = k_bs N^alpha_bs
D^beta_bs, from hyperparameter grids per (N, D) cell. The optimum of a cell is hparams' own.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

import scalinglab.analysis.checks as checks
from scalinglab.analysis.bootstrap import percentile_interval
from scalinglab.analysis.budgets import BUDGET_RTOL, budget_flops, budget_labels
from scalinglab.analysis.inputs import aligned, fraction, positive_1d, same_length
from scalinglab.analysis.laws.hparams import (
    Grouping,
    edge_note,
    fit_optima,
    hparam_points,
    hparams_section,
    optima_checks,
)
from scalinglab.analysis.registry import Law
from scalinglab.analysis.result import FitResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class HparamsNdExtras(TypedDict, total=False):
    cells: list[dict[str, Any]]  # per cell: N, D, C = 6ND, the optimum and its band, the runs
    tolerance: float
    budget_tol: float
    batch_unit: str
    bootstrap: dict[str, list[float]]
    flagged_cells: list[list[float]]
    n_bootstrap: int
    n_bootstrap_ok: int


# Three parameters per law and a cell to spare.
MIN_ND_CELLS = 4
ND_PARAMS = ("k_lr", "alpha_lr", "beta_lr", "k_bs", "alpha_bs", "beta_bs")


def cell_labels(N: np.ndarray, D: np.ndarray, rtol: float = BUDGET_RTOL) -> np.ndarray:
    """The (N, D) cell of each run, as an index: runs whose parameters and whose tokens each
    agree within `rtol` (load.budget_labels on each) share a cell. A run's tokens land a step
    apart across batch sizes, so an exact match would split one cell."""
    pairs = np.column_stack([budget_labels(N, rtol), budget_labels(D, rtol)])
    return np.unique(pairs, axis=0, return_inverse=True)[1].ravel()


def loglog_fit_nd(N: np.ndarray, D: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares log10 y = log10 k + alpha log10 N + beta log10 D: (k, alpha, beta, sum of
    squared log10 residuals)."""
    X = np.column_stack([np.ones(len(N)), np.log10(N), np.log10(D)])
    (intercept, alpha, beta), *_ = np.linalg.lstsq(X, np.log10(y), rcond=None)
    resid = np.log10(y) - X @ np.array([intercept, alpha, beta])
    return float(10.0**intercept), float(alpha), float(beta), float(resid @ resid)


def _nd_laws(rows) -> dict[str, float]:
    N, D = np.array([r["N"] for r in rows]), np.array([r["D"] for r in rows])
    values = {}
    for suffix, field in (("lr", "lr_opt"), ("bs", "batch_size_opt")):
        k, alpha, beta, _ = loglog_fit_nd(N, D, np.array([r[field] for r in rows]))
        values |= {f"k_{suffix}": k, f"alpha_{suffix}": alpha, f"beta_{suffix}": beta}
    return values


def nd_law(params: dict[str, float], suffix: str, N, D):
    """k N^alpha D^beta of the law `suffix` (lr or bs) of a fit_hparams_nd fit."""
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    return params[f"k_{suffix}"] * N ** params[f"alpha_{suffix}"] * D ** params[f"beta_{suffix}"]


def _cell_coordinates(N, D, idx: np.ndarray, labels: np.ndarray) -> list[dict[str, float]]:
    """Each cell's N and D (geometric means of its runs `idx`) and C = 6·N·D, a label for the
    checks that name budgets."""
    cells = zip(budget_flops(N[idx], labels), budget_flops(D[idx], labels), strict=True)
    return [{"N": float(a), "D": float(b), "C": 6.0 * a * b} for a, b in cells]


def _nd_extrapolation(
    N, D, lr, batch_size, loss, labels, rows, tolerance, budget_tol, run: bool = True
) -> dict:
    """extrapolation of the (N, D) laws: refit without the cells of the largest N (tuned small,
    trained big) and predict those cells' lr_opt; |relative error| at most MAX_LR_ERROR.
    run=False (the refit's own check_extrapolation=False): fails as not run."""
    if not run:
        return checks.check("extrapolation", False, "not run (check_extrapolation=False)")
    n_cells = np.array([r["N"] for r in rows])
    held_cells = np.flatnonzero(
        budget_labels(n_cells, budget_tol) == budget_labels(n_cells, budget_tol).max()
    )
    keep = ~np.isin(labels, held_cells)
    try:
        reduced = fit_hparams_nd(
            N[keep], D[keep], lr[keep], batch_size[keep], loss[keep],
            tolerance=tolerance, n_bootstrap=0, budget_tol=budget_tol, check_extrapolation=False,
        )  # fmt: skip
    except ValueError as error:
        return checks.check("extrapolation", False, f"cannot refit without the largest N: {error}")
    held = [rows[k] for k in held_cells]
    predicted = nd_law(reduced.params, "lr", [r["N"] for r in held], [r["D"] for r in held])
    error = float(np.max(np.abs(predicted / np.array([r["lr_opt"] for r in held]) - 1.0)))
    detail = (
        f"fitted without the largest N ({len(held)} of {len(rows)} cells, {int((~keep).sum())} "
        f"runs), it predicts lr_opt there with |relative error| {error:.1%} (rule: at most "
        f"{checks.MAX_LR_ERROR:.0%})"
    )
    return checks.check("extrapolation", error <= checks.MAX_LR_ERROR, detail)


def _at_largest_cell(values: dict, draws: dict, cell_n, cell_d) -> dict:
    """lr_opt and batch_opt at the largest cell with their intervals, for checks.intervals."""
    top = int(np.argmax(cell_n * cell_d))
    predictions = {}
    for quantity, suffix in (("lr_opt", "lr"), ("batch_opt", "bs")):
        at = f"{quantity} at N={cell_n[top]:.3g}, D={cell_d[top]:.3g}"
        names = [f"{p}_{suffix}" for p in ("k", "alpha", "beta")]
        per_draw = nd_law(
            {p: np.asarray(draws.get(p, []), float) for p in names},
            suffix,
            cell_n[top],
            cell_d[top],
        )
        lo, hi = percentile_interval(per_draw)
        predictions[at] = (float(nd_law(values, suffix, cell_n[top], cell_d[top])), lo, hi, names)
    return predictions


def fit_hparams_nd(
    N: np.ndarray,
    D: np.ndarray,
    lr: np.ndarray,
    batch_size: np.ndarray,
    loss: np.ndarray,
    *,
    tolerance: float = 0.01,
    n_bootstrap: int = 200,
    seed: int = 0,
    budget_tol: float = BUDGET_RTOL,
    check_extrapolation: bool = True,
    batch_unit: str | None = None,
) -> FitResult:
    """Fit lr_opt = k_lr N^alpha_lr D^beta_lr and batch_opt = k_bs N^alpha_bs D^beta_bs (Step
    Law, Li et al. 2025; Porian et al. 2024) from hyperparameter grids per (N, D) cell.

    N: parameters per run; D: training tokens per run (runs agreeing within budget_tol in both
    share a cell, cell_labels); lr, batch_size (tokens per step for a rules file; batch_unit
    says which), loss: per run. Per cell the optimum is the centre of its near-optimal band, as
    per budget in fit_hparams (the same fit_optima); then log-linear least squares in (log N,
    log D). Intervals: bootstrap over runs within each cell. params and derived: ND_PARAMS.
    objective: sum of squared log10 residuals of the lr law.
    extras["cells"]: per cell {N, D, C = 6ND, best_loss, best_lr, lr_opt, batch_size_opt,
    lr_band, batch_size_band, n_band, in_range, lr, batch_size, loss}.
    checks: design (at least MIN_ND_CELLS cells; N and D varied independently across cells; 3
    learning rates and 3 batch sizes in every cell), centering (each cell's best run inside its
    grid), intervals (lr_opt and batch_opt at the largest cell within a factor 10; an exponent
    near 0, batch_opt's in N, is a finding, not a failure), extrapolation (refit without the
    largest N: its lr_opt within 50%; check_extrapolation=False: fails as not run).
    """
    aligned(N=N, D=D, lr=lr, batch_size=batch_size, loss=loss)
    N, D = positive_1d("N", N), positive_1d("D", D)
    lr, batch_size = positive_1d("lr", lr), positive_1d("batch_size", batch_size)
    loss = positive_1d("loss", loss)
    n = same_length(N=N, D=D, lr=lr, batch_size=batch_size, loss=loss)
    fraction(tolerance)
    labels = cell_labels(N, D, budget_tol)
    if labels.max() + 1 < 3:
        raise ValueError(
            f"the (N, D) laws need at least three (N, D) cells (three parameters each), got "
            f"{labels.max() + 1}"
        )
    grouping = Grouping(labels, partial(_cell_coordinates, N, D), _nd_laws)
    rows, values, boot = fit_optima(
        grouping, lr, batch_size, loss, tolerance=tolerance, n_bootstrap=n_bootstrap, seed=seed
    )
    cell_n, cell_d = np.array([r["N"] for r in rows]), np.array([r["D"] for r in rows])
    *_, objective = loglog_fit_nd(cell_n, cell_d, np.array([r["lr_opt"] for r in rows]))
    flagged = [(r["N"], r["D"]) for r in rows if not r["in_range"]]
    extras: HparamsNdExtras = {
        "cells": rows, "tolerance": tolerance, "budget_tol": budget_tol, **boot.extras(),
        "flagged_cells": [list(c) for c in flagged],
    }  # fmt: skip
    if batch_unit is not None:
        extras["batch_unit"] = batch_unit
    edge = [f"N={a:.3g} D={b:.3g}" for a, b in flagged]
    result = FitResult(
        law="hparams_nd", params=dict(values), ci95=boot.ci95, derived=dict(values), n_points=n,
        converged=True, message=f"{len(rows)} (N, D) cells" + boot.note + edge_note(edge),
        objective=objective, extras=dict(extras),
    )  # fmt: skip
    design = [
        checks.enough(
            len(rows), MIN_ND_CELLS, "(N, D) cells",
            "three parameters per law and a cell to spare", list(values),
        ),
        checks.independent_variation(cell_n, cell_d, list(values)),
    ]  # fmt: skip
    arrays = (N, D, lr, batch_size, loss, labels)
    held_out = _nd_extrapolation(*arrays, rows, tolerance, budget_tol, check_extrapolation)
    result.checks = optima_checks(
        result, rows, labels, lr, batch_size, design=design, params=(ND_PARAMS[:3], ND_PARAMS[3:]),
        exponents=[], predictions=_at_largest_cell(values, boot.draws, cell_n, cell_d),
        extrapolation=held_out,
    )  # fmt: skip
    return result


def plot_hparams_nd(fit: FitResult) -> Figure:
    """The (N, D) laws of a fit_hparams_nd fit: each cell's optimal learning rate against N and
    optimal batch size against D, with its near-optimal band as the bar, coloured by the other
    variable; lines: the fitted law along N at each cell's D (and along D at each cell's N)."""
    from matplotlib.figure import Figure

    from scalinglab.analysis.plotting import AXIS_LABELS, colour_scale, log_norm, span

    cells = fit.extras["cells"]
    N, D = np.array([c["N"] for c in cells]), np.array([c["D"] for c in cells])
    fig = Figure(figsize=(11.5, 4.4), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (
        (axes[0], "lr", "lr_opt", "lr_band", N, D, "tokens", "lr"),
        (axes[1], "bs", "batch_size_opt", "batch_size_band", D, N, "n_params", "batch_size"),
    )
    for ax, suffix, field, band, x, other, other_name, predicted in panels:
        norm = log_norm(other)
        cmap = colour_scale(fig, ax, norm, AXIS_LABELS[other_name])
        for cell, x_k, other_k in zip(cells, x, other, strict=True):
            colour = cmap(norm(other_k))
            below, above = cell[field] - cell[band][0], cell[band][1] - cell[field]
            ax.errorbar(x_k, cell[field], yerr=[[below], [above]], fmt="o", color=colour)
        for level in np.unique(other):
            line = span(x[other == level], 0.1, 0.1, 50)
            n_d = (line, level) if suffix == "lr" else (level, line)
            ax.plot(line, fit.predict(*n_d)[predicted], color=cmap(norm(level)), lw=1)
        ax.set(xscale="log", yscale="log")
        ax.grid(True, which="major", alpha=0.3)
    unit = fit.extras.get("batch_unit", "sequences")
    p = fit.params
    axes[0].set(
        xlabel=AXIS_LABELS["n_params"],
        ylabel="optimal " + AXIS_LABELS["lr"],
        title=f"lr_opt ∝ N^{p['alpha_lr']:.2f} D^{p['beta_lr']:.2f}",
    )
    axes[1].set(
        xlabel=AXIS_LABELS["tokens"],
        ylabel=f"optimal batch size ({unit} per step)",
        title=f"batch_opt ∝ N^{p['alpha_bs']:.2f} D^{p['beta_bs']:.2f}",
    )
    if not fit.trusted:
        fig.suptitle("not trusted: " + ", ".join(c["name"] for c in fit.failed_checks), color="C3")
    return fig


def analyse_hparams_nd(study: Any) -> Any:
    """lr_opt and batch_opt as laws of N and D (scaling-fit hparams --law nd)."""
    from scalinglab.analysis.study import budget_options

    runs, batch, unit = hparam_points(study, ["n_params", "tokens"])
    fit = fit_hparams_nd(
        runs["n_params"], runs["tokens"], runs["lr"], runs[batch], runs["loss"],
        batch_unit=unit, **budget_options(study),
    )  # fmt: skip
    return hparams_section(
        fit,
        f"Per (N, D) cell ({len(fit.extras['cells'])} cells, {len(runs)} runs), the runs within "
        f"{fit.extras['tolerance']:.0%} of the best loss; their centre is the optimum. "
        f"lr_opt = k_lr N^alpha_lr D^beta_lr, batch_opt = k_bs N^alpha_bs D^beta_bs ({unit} "
        "per step), log-linear least squares.",
        plot_hparams_nd(fit),
        "Each (N, D) cell's optimal learning rate against N and optimal batch size against D "
        "(its near-optimal band as the bar), coloured by the other variable, with the fitted "
        "laws at each cell's N and D.",
        study.args,
    )


class HparamsNdLaw(Law):
    name = "hparams_nd"

    def predict(self, fit: FitResult, *inputs: Any) -> Any:
        p = fit.params
        return {"lr": nd_law(p, "lr", *inputs), "batch_size": nd_law(p, "bs", *inputs)}

    def rules_form(self, fit: FitResult) -> dict[str, Any]:
        """The rules file's form: its header, head, law terms, range fitted and flagged."""
        cells = fit.extras["cells"]
        return {
            "header": RULES_HEADER,
            "head": {"form": "nd", "x": "N: all parameters (plan.n_params); D: training tokens"},
            "terms": {"coefficient": "k", "exponent_n": "alpha", "exponent_d": "beta"},
            "fitted_range": {
                "n_params": [min(c["N"] for c in cells), max(c["N"] for c in cells)],
                "tokens": [min(c["D"] for c in cells), max(c["D"] for c in cells)],
            },
            "flagged": {"flagged_cells": fit.extras["flagged_cells"]},
        }

    def analyse(self, study: Any, fitted: dict, **options: Any) -> Any:
        return analyse_hparams_nd(study)


RULES_HEADER = """\
# Learning rate and batch size as power laws of parameters N and training tokens D, fitted by
# `scaling-fit hparams --law nd`. Train with them: scaling-train hparams=fitted hparams_file=THIS_FILE
"""

LAWS = [HparamsNdLaw()]
