"""Optimal learning rate and batch size versus compute, from lr x batch-size grids per budget.

Units: C in FLOPs, lr dimensionless (peak learning rate), batch_size in sequences or tokens
(whatever the caller passes; the fitted k_bs carries that unit), loss in nats per token.
"""

from __future__ import annotations

import numpy as np

from scalinglab.analysis import checks
from scalinglab.analysis.bootstrap import (
    bootstrap_draws,
    intervals,
    percentile_interval,
    skipped_note,
)
from scalinglab.analysis.compute_optimal import loglog_fit
from scalinglab.analysis.laws import _positive_1d, _same_length
from scalinglab.analysis.load import BUDGET_RTOL, budget_flops, budget_labels
from scalinglab.analysis.result import FitResult


def _near_optimal_bands(lr, batch_size, loss, labels, tolerance) -> list[dict]:
    """Per group of runs (labels: 0, 1, ...; a budget, an (N, D) cell, a width): the runs within
    `tolerance` (a fraction) of the best loss, and the optimum as the geometric centre of that
    band, sqrt(min * max), in lr and in batch size. A band that is symmetric about the optimum in
    log space (a bowl in log lr, log batch) is centred on it. The caller adds each group's
    coordinates (C; N and D)."""
    rows = []
    for k in range(labels.max() + 1):
        member = labels == k
        lr_k, bs_k, loss_k = lr[member], batch_size[member], loss[member]
        best = np.argmin(loss_k)
        band = loss_k <= loss_k[best] * (1.0 + tolerance)
        lr_band = (lr_k[band].min(), lr_k[band].max())
        bs_band = (bs_k[band].min(), bs_k[band].max())
        # The optimum may lie beyond the grid when the best run sits on its edge.
        in_range = bool(lr_k.min() < lr_k[best] < lr_k.max()) and bool(
            bs_k.min() < bs_k[best] < bs_k.max() or np.unique(bs_k).size == 1
        )
        rows.append(
            {
                "best_loss": float(loss_k[best]),
                "best_lr": float(lr_k[best]),
                "lr_opt": float(np.sqrt(lr_band[0] * lr_band[1])),
                "batch_size_opt": float(np.sqrt(bs_band[0] * bs_band[1])),
                "lr_band": [float(v) for v in lr_band],
                "batch_size_band": [float(v) for v in bs_band],
                "n_band": int(band.sum()),
                "in_range": in_range,
            }
        )
    return rows


def _budget_bands(C, lr, batch_size, loss, labels, tolerance) -> list[dict]:
    """_near_optimal_bands per compute budget, each row led by its budget C (FLOPs)."""
    bands = _near_optimal_bands(lr, batch_size, loss, labels, tolerance)
    return [{"C": float(c), **row} for c, row in zip(budget_flops(C, labels), bands, strict=True)]


def _laws(rows) -> dict[str, float]:
    c = np.array([r["C"] for r in rows])
    k_lr, e_lr, _ = loglog_fit(c, np.array([r["lr_opt"] for r in rows]))
    k_bs, e_bs, _ = loglog_fit(c, np.array([r["batch_size_opt"] for r in rows]))
    return {"k_lr": k_lr, "e_lr": e_lr, "k_bs": k_bs, "e_bs": e_bs}


def fit_hparams(
    C: np.ndarray,
    lr: np.ndarray,
    batch_size: np.ndarray,
    loss: np.ndarray,
    *,
    tolerance: float = 0.01,
    n_bootstrap: int = 200,
    seed: int = 0,
    budget_tol: float = BUDGET_RTOL,
    check_extrapolation: bool = True,
) -> FitResult:
    """Fit lr_opt = k_lr C^e_lr and batch_opt = k_bs C^e_bs from hyperparameter grids per budget.

    C: compute budget per run (FLOPs; runs whose FLOPs step by at most budget_tol share a budget,
    load.budget_labels); lr, batch_size, loss: per run. Per budget the near-optimal band is every run within `tolerance` (fraction) of the best
    loss; its geometric centre in lr and in batch size is the optimum. Budgets whose best run sits
    on the edge of the sampled lr or batch-size range are flagged (in_range False) but kept; the
    message lists them. Intervals: bootstrap over runs within each budget.
    params and derived: k_lr, e_lr, k_bs, e_bs. objective: sum of squared log10 residuals of the
    lr law. extras["budgets"]: per budget {C, best_loss, lr_opt, batch_size_opt, lr_band,
    batch_size_band, n_band, in_range, lr, batch_size, loss}.
    checks: design (at least 3 budgets; at least 3 learning rates and 3 batch sizes in every
    budget, else that law is not identified), centering (each budget's best run inside its grid),
    intervals (e_lr, e_bs exclude 0; lr_opt and batch_opt at the largest budget within a factor
    10), extrapolation (refit without the largest budget: its lr_opt within 50%;
    check_extrapolation=False skips it and the check fails as not run).
    """
    C = _positive_1d("C", C)
    lr = _positive_1d("lr", lr)
    batch_size = _positive_1d("batch_size", batch_size)
    loss = _positive_1d("loss", loss)
    n = _same_length(C=C, lr=lr, batch_size=batch_size, loss=loss)
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance is a fraction of the best loss in [0, 1), got {tolerance}")
    labels = budget_labels(C, budget_tol)
    if labels.max() + 1 < 2:
        raise ValueError(f"fit_hparams needs at least two compute budgets, got one (C={C[0]:.3g})")

    rows = _budget_bands(C, lr, batch_size, loss, labels, tolerance)
    values = _laws(rows)
    c = np.array([r["C"] for r in rows])
    _, _, objective = loglog_fit(c, np.array([r["lr_opt"] for r in rows]))

    def fit_resample(idx: np.ndarray) -> dict[str, float]:
        return _laws(
            _budget_bands(C[idx], lr[idx], batch_size[idx], loss[idx], labels[idx], tolerance)
        )

    draws, n_ok = bootstrap_draws(
        fit_resample, n, n_bootstrap=n_bootstrap, seed=seed, strata=labels
    )
    ci95 = intervals(draws)
    for k, row in enumerate(rows):
        member = labels == k
        row.update(
            lr=lr[member].tolist(),
            batch_size=batch_size[member].tolist(),
            loss=loss[member].tolist(),
        )
    flagged = [r["C"] for r in rows if not r["in_range"]]
    message = f"{len(rows)} budgets" + skipped_note(n_ok, n_bootstrap)
    if flagged:
        message += (
            f"; best run on the edge of the lr or batch-size grid (optimum may lie "
            f"beyond it) at C={[f'{v:.3g}' for v in flagged]}"
        )
    result = FitResult(
        law="hparams",
        params=dict(values),
        ci95=ci95,
        derived=dict(values),
        n_points=n,
        converged=True,
        message=message,
        objective=objective,
        extras={
            "budgets": rows,
            "tolerance": tolerance,
            "budget_tol": budget_tol,
            "bootstrap": draws,
            "flagged_budgets": flagged,
            "n_bootstrap": n_bootstrap,
            "n_bootstrap_ok": n_ok,
        },
    )
    c_max = float(c.max())
    predictions = {}
    for quantity, k, e in (("lr_opt", "k_lr", "e_lr"), ("batch_opt", "k_bs", "e_bs")):
        per_draw = np.asarray(draws.get(k, []), float) * c_max ** np.asarray(
            draws.get(e, []), float
        )
        lo, hi = percentile_interval(per_draw)
        value = values[k] * c_max ** values[e]
        predictions[f"{quantity} at C={c_max:.3g}"] = (value, lo, hi, [k, e])
    result.checks = [
        checks.enough(
            len(rows),
            checks.MIN_HPARAM_BUDGETS,
            "compute budgets",
            "two parameters per law and a budget to spare",
            list(values),
        ),
        checks.grid_varies(lr, labels, "learning rate", ["k_lr", "e_lr"]),
        checks.grid_varies(batch_size, labels, "batch size", ["k_bs", "e_bs"]),
        checks.optimum_inside_grid(rows),
        checks.intervals(result, exponents=["e_lr", "e_bs"], predictions=predictions),
        checks.extrapolation(
            fit_hparams,
            (C, lr, batch_size, loss),
            quantity="lr",
            statistic="max_abs_relative_error",
            threshold=checks.MAX_LR_ERROR,
            held_out="the largest budget",
            run=check_extrapolation,
            tolerance=tolerance,
            budget_tol=budget_tol,
        ),
    ]
    return result


def hparam_rules(fit: FitResult, sources: list[str], *, untrusted_ok: bool = False) -> dict:
    """The laws of a `fit_hparams` or `fit_hparams_nd` fit as the rules file that training reads
    (conf/hparams/fitted.yaml): `form` (compute or nd), then lr and batch_tokens, each a
    coefficient with its exponent of C in FLOPs (compute) or its exponents of N in parameters and
    D in tokens (nd: exponent_n, exponent_d), with their 95% intervals, and the range fitted (C;
    nd: n_params and tokens). Needs the batch law in tokens per step (fit.extras["batch_unit"]
    == "tokens") and a trusted fit: training must not follow a law the data cannot identify,
    unless `untrusted_ok` says so knowingly; the file then records `trusted: false` and the
    failing checks."""
    reasons = "; ".join(f"{c['name']}: {c['detail']}" for c in fit.failed_checks)
    if not fit.trusted and not untrusted_ok:
        raise ValueError(
            f"the fitted laws are not trusted, so no rules file ({reasons}); "
            "--untrusted-ok writes it anyway, marked as such"
        )
    if fit.extras.get("batch_unit") != "tokens":
        raise ValueError(
            "a rules file needs the batch law in tokens per step: the runs do not record "
            "tokens_per_step (a CSV gives batch_size in sequences; --batch-col names a column in "
            "tokens per step)"
        )
    p, ci = fit.params, fit.ci95
    nan = (float("nan"), float("nan"))  # no interval when every bootstrap refit failed
    nd = fit.law == "hparams_nd"
    # {file key: param prefix} of each law's parameters
    terms = (
        {"coefficient": "k", "exponent_n": "alpha", "exponent_d": "beta"}
        if nd
        else {"coefficient": "k", "exponent": "e"}
    )

    def law(suffix: str) -> dict:
        names = {key: f"{prefix}_{suffix}" for key, prefix in terms.items()}
        return {key: float(p[name]) for key, name in names.items()} | {
            "ci95": {key: [float(v) for v in ci.get(name, nan)] for key, name in names.items()}
        }

    if nd:
        cells = fit.extras["cells"]
        head = {"form": "nd", "x": "N: all parameters (plan.n_params); D: training tokens"}
        fitted_range = {
            "n_params": [min(c["N"] for c in cells), max(c["N"] for c in cells)],
            "tokens": [min(c["D"] for c in cells), max(c["D"] for c in cells)],
        }
        flagged = {"flagged_cells": fit.extras["flagged_cells"]}
    else:
        budgets = [b["C"] for b in fit.extras["budgets"]]
        head = {"form": "compute", "x": "compute budget C in FLOPs (plan.budget_flops)"}
        fitted_range = [float(min(budgets)), float(max(budgets))]
        flagged = {"flagged_budgets": [float(c) for c in fit.extras["flagged_budgets"]]}
    return {
        **head,
        "lr": law("lr"),
        "batch_tokens": law("bs"),
        "fitted_range": fitted_range,
        "n_runs": int(fit.n_points),
        **flagged,
        "sources": [str(s) for s in sources],
        "trusted": fit.trusted,
        **({} if fit.trusted else {"not_trusted_because": reasons}),
    }


# ---- laws in N and D (--law nd) -------------------------------------------------------------

# Three parameters per law and a cell to spare.
MIN_ND_CELLS = 4
ND_PARAMS = ("k_lr", "alpha_lr", "beta_lr", "k_bs", "alpha_bs", "beta_bs")


def cell_labels(N: np.ndarray, D: np.ndarray, rtol: float = BUDGET_RTOL) -> np.ndarray:
    """The (N, D) cell of each run, as an index: runs whose parameters and whose tokens each
    agree within `rtol` (load.budget_labels on each) share a cell. A run's tokens land a step
    apart across batch sizes, so an exact match would split one cell."""
    pairs = np.column_stack([budget_labels(N, rtol), budget_labels(D, rtol)])
    return np.unique(pairs, axis=0, return_inverse=True)[1].ravel()


def _cell_bands(N, D, lr, batch_size, loss, labels, tolerance) -> list[dict]:
    """_near_optimal_bands per (N, D) cell, each row led by the cell's N and D (geometric means of
    its runs') and C = 6·N·D, a label for the checks that name budgets."""
    bands = _near_optimal_bands(lr, batch_size, loss, labels, tolerance)
    cells = zip(budget_flops(N, labels), budget_flops(D, labels), bands, strict=True)
    return [{"N": float(n), "D": float(d), "C": 6.0 * n * d, **row} for n, d, row in cells]


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


def _nd_extrapolation(N, D, lr, batch_size, loss, labels, rows, tolerance, budget_tol) -> dict:
    """extrapolation of the (N, D) laws: refit without the cells of the largest N (tuned small,
    trained big) and predict those cells' lr_opt; |relative error| at most MAX_LR_ERROR."""
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
) -> FitResult:
    """Fit lr_opt = k_lr N^alpha_lr D^beta_lr and batch_opt = k_bs N^alpha_bs D^beta_bs (Step
    Law, Li et al. 2025; Porian et al. 2024) from hyperparameter grids per (N, D) cell.

    N: parameters per run; D: training tokens per run (runs agreeing within budget_tol in both
    share a cell, cell_labels); lr, batch_size (tokens per step for a rules file), loss: per run.
    Per cell the optimum is the centre of its near-optimal band, as per budget in fit_hparams;
    then log-linear least squares in (log N, log D). Intervals: bootstrap over runs within each
    cell. params and derived: ND_PARAMS. objective: sum of squared log10 residuals of the lr law.
    extras["cells"]: per cell {N, D, C = 6ND, best_loss, best_lr, lr_opt, batch_size_opt,
    lr_band, batch_size_band, n_band, in_range, lr, batch_size, loss}.
    checks: design (at least MIN_ND_CELLS cells; N and D varied independently across cells; 3
    learning rates and 3 batch sizes in every cell), centering (each cell's best run inside its
    grid), intervals (lr_opt and batch_opt at the largest cell within a factor 10; an exponent
    near 0, batch_opt's in N, is a finding, not a failure), extrapolation (refit without the
    largest N: its lr_opt within 50%; check_extrapolation=False: fails as not run).
    """
    N, D = _positive_1d("N", N), _positive_1d("D", D)
    lr, batch_size = _positive_1d("lr", lr), _positive_1d("batch_size", batch_size)
    loss = _positive_1d("loss", loss)
    n = _same_length(N=N, D=D, lr=lr, batch_size=batch_size, loss=loss)
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance is a fraction of the best loss in [0, 1), got {tolerance}")
    labels = cell_labels(N, D, budget_tol)
    if labels.max() + 1 < 3:
        raise ValueError(
            f"the (N, D) laws need at least three (N, D) cells (three parameters each), got "
            f"{labels.max() + 1}"
        )
    rows = _cell_bands(N, D, lr, batch_size, loss, labels, tolerance)
    values = _nd_laws(rows)
    cell_n, cell_d = np.array([r["N"] for r in rows]), np.array([r["D"] for r in rows])
    *_, objective = loglog_fit_nd(cell_n, cell_d, np.array([r["lr_opt"] for r in rows]))

    def fit_resample(idx: np.ndarray) -> dict[str, float]:
        sub = labels[idx]
        return _nd_laws(
            _cell_bands(N[idx], D[idx], lr[idx], batch_size[idx], loss[idx], sub, tolerance)
        )

    draws, n_ok = bootstrap_draws(
        fit_resample, n, n_bootstrap=n_bootstrap, seed=seed, strata=labels
    )
    for k, row in enumerate(rows):
        member = labels == k
        row.update(
            lr=lr[member].tolist(),
            batch_size=batch_size[member].tolist(),
            loss=loss[member].tolist(),
        )
    flagged = [(r["N"], r["D"]) for r in rows if not r["in_range"]]
    message = f"{len(rows)} (N, D) cells" + skipped_note(n_ok, n_bootstrap)
    if flagged:
        message += (
            "; best run on the edge of the lr or batch-size grid (optimum may lie beyond it) at "
            + ", ".join(f"N={a:.3g} D={b:.3g}" for a, b in flagged)
        )
    result = FitResult(
        law="hparams_nd",
        params=dict(values),
        ci95=intervals(draws),
        derived=dict(values),
        n_points=n,
        converged=True,
        message=message,
        objective=objective,
        extras={
            "cells": rows,
            "tolerance": tolerance,
            "budget_tol": budget_tol,
            "bootstrap": draws,
            "flagged_cells": [list(c) for c in flagged],
            "n_bootstrap": n_bootstrap,
            "n_bootstrap_ok": n_ok,
        },
    )
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
    lr_params, bs_params = list(ND_PARAMS[:3]), list(ND_PARAMS[3:])
    result.checks = [
        checks.enough(
            len(rows),
            MIN_ND_CELLS,
            "(N, D) cells",
            "three parameters per law and a cell to spare",
            list(values),
        ),
        checks.independent_variation(cell_n, cell_d, list(values)),
        checks.grid_varies(lr, labels, "learning rate", lr_params),
        checks.grid_varies(batch_size, labels, "batch size", bs_params),
        checks.optimum_inside_grid(rows),
        checks.intervals(result, predictions=predictions),
        _nd_extrapolation(N, D, lr, batch_size, loss, labels, rows, tolerance, budget_tol)
        if check_extrapolation
        else checks.check("extrapolation", False, "not run (check_extrapolation=False)"),
    ]
    return result


# ---- learning-rate transfer across widths (muP) ---------------------------------------------

# A parametrization's widths must span at least this factor for its transfer to be tested.
MIN_TRANSFER_SPAN = 4.0


def grid_step(lr: np.ndarray) -> float:
    """The learning-rate grid's step, a factor: the median ratio of neighbouring distinct lrs."""
    distinct = np.unique(lr)
    return float(np.exp(np.median(np.diff(np.log(distinct))))) if distinct.size > 1 else np.nan


def lr_transfer(
    parametrization: np.ndarray,
    width: np.ndarray,
    lr: np.ndarray,
    loss: np.ndarray,
    *,
    tolerance: float = 0.01,
) -> FitResult:
    """The optimal learning rate per (parametrization, width), and whether it holds across widths.

    parametrization: name per run (sp, mup, completep); width: d_model per run; lr: peak (base)
    learning rate; loss: final validation loss (nats/token). Per (parametrization, width) the
    optimum is the centre of the near-optimal band (as per budget in fit_hparams) and its
    interval IS THAT BAND: the lowest and highest learning rate whose loss is within `tolerance`
    of the best run's; not a bootstrap interval (ci95 stays empty). Per parametrization, the
    optimum holds when every width's lies within one grid step (grid_step) of every other's.
    params: lr_opt[<parametrization>, <width>]. extras["cells"]: per cell {parametrization,
    width, best_loss, best_lr, lr_opt, lr_band, n_band, in_range, lr, loss};
    extras["transfer"]: per parametrization {widths, lr_opt, grid_step, spread_steps, holds}.
    checks: design (every parametrization has 2 or more widths spanning MIN_TRANSFER_SPAN, and
    every cell MIN_GRID_VALUES learning rates), centering (every cell's best run inside its lr
    grid: on an edge the optimum, and so the verdict, is unknown).
    """
    parametrization = np.asarray(parametrization, dtype=str)
    width, lr = _positive_1d("width", width), _positive_1d("lr", lr)
    loss = _positive_1d("loss", loss)
    n = _same_length(parametrization=parametrization, width=width, lr=lr, loss=loss)
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance is a fraction of the best loss in [0, 1), got {tolerance}")
    keys, labels = np.unique(
        np.rec.fromarrays([parametrization, width]), return_inverse=True
    )  # sorted by parametrization, then width
    labels = labels.ravel()
    bands = _near_optimal_bands(lr, np.ones_like(lr), loss, labels, tolerance)
    cells = []
    for k, ((name, w), band) in enumerate(zip(keys.tolist(), bands, strict=True)):
        member = labels == k
        del band["batch_size_opt"], band["batch_size_band"]
        cells.append(
            {"parametrization": name, "width": float(w), **band}
            | {"lr": lr[member].tolist(), "loss": loss[member].tolist()}
        )
    transfer, problems = {}, []
    for name in dict.fromkeys(c["parametrization"] for c in cells):
        mine = [c for c in cells if c["parametrization"] == name]
        optima = np.array([c["lr_opt"] for c in mine])
        step = grid_step(lr[parametrization == name])
        spread = float(np.log(optima.max() / optima.min()) / np.log(step)) if step > 1 else np.nan
        widths = [c["width"] for c in mine]
        transfer[name] = {
            "widths": widths,
            "lr_opt": optima.tolist(),
            "grid_step": step,
            "spread_steps": spread,
            "holds": bool(spread <= 1.0 + 1e-9),
        }
        if len(widths) < 2 or max(widths) / min(widths) < MIN_TRANSFER_SPAN:
            problems.append(f"{name}: widths {widths} span less than {MIN_TRANSFER_SPAN:g}x")
    counts = [np.unique(c["lr"]).size for c in cells]
    if min(counts) < checks.MIN_GRID_VALUES:
        problems.append(
            f"{min(counts)} learning rates in some (parametrization, width); an optimum needs "
            f"at least {checks.MIN_GRID_VALUES}"
        )
    edge = [f"{c['parametrization']} width {c['width']:g}" for c in cells if not c["in_range"]]
    params = {f"lr_opt[{c['parametrization']}, {c['width']:g}]": c["lr_opt"] for c in cells}
    return FitResult(
        law="transfer",
        params=params,
        derived={},
        n_points=n,
        converged=True,
        message=f"{len(cells)} (parametrization, width) cells; interval: the near-optimal band",
        extras={"cells": cells, "transfer": transfer, "tolerance": tolerance},
        checks=[
            checks.check(
                "design",
                not problems,
                "; ".join(problems)
                or f"every parametrization's widths span at least {MIN_TRANSFER_SPAN:g}x, with "
                f"at least {checks.MIN_GRID_VALUES} learning rates at each",
                list(params),
            ),
            checks.check(
                "centering",
                not edge,
                f"best run on the edge of the lr grid at {', '.join(edge)}: the optimum may lie "
                "beyond it; extend the grid"
                if edge
                else "every width's best run lies inside its sampled learning rates",
                [f"lr_opt[{e.replace(' width ', ', ')}]" for e in edge],
            ),
        ],
    )


def transfer_verdict(fit: FitResult) -> list[str]:
    """One line per parametrization: whether its optimal learning rate holds across widths."""
    lines = []
    for name, t in fit.extras["transfer"].items():
        optima = ", ".join(f"{w:g}: {v:.3g}" for w, v in zip(t["widths"], t["lr_opt"], strict=True))
        verdict = "holds" if t["holds"] else "DRIFTS"
        lines.append(
            f"{name}: optimum {verdict} across widths ({t['spread_steps']:.2g} grid steps of "
            f"x{t['grid_step']:.3g} apart, rule: at most 1); lr_opt by width {optima}"
        )
    return lines
