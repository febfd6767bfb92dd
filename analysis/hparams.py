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


def _near_optimal_bands(C, lr, batch_size, loss, labels, tolerance):
    """Per budget: the runs within `tolerance` (a fraction) of the best loss, and the optimum as
    the geometric centre of that band, sqrt(min * max), in lr and in batch size. A band that is
    symmetric about the optimum in log space (a bowl in log lr, log batch) is centred on it."""
    rows = []
    for k, c_budget in enumerate(budget_flops(C, labels)):
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
                "C": float(c_budget),
                "best_loss": float(loss_k[best]),
                "lr_opt": float(np.sqrt(lr_band[0] * lr_band[1])),
                "batch_size_opt": float(np.sqrt(bs_band[0] * bs_band[1])),
                "lr_band": [float(v) for v in lr_band],
                "batch_size_band": [float(v) for v in bs_band],
                "n_band": int(band.sum()),
                "in_range": in_range,
            }
        )
    return rows


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

    rows = _near_optimal_bands(C, lr, batch_size, loss, labels, tolerance)
    values = _laws(rows)
    c = np.array([r["C"] for r in rows])
    _, _, objective = loglog_fit(c, np.array([r["lr_opt"] for r in rows]))

    def fit_resample(idx: np.ndarray) -> dict[str, float]:
        return _laws(
            _near_optimal_bands(C[idx], lr[idx], batch_size[idx], loss[idx], labels[idx], tolerance)
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
    """The laws of a `fit_hparams` fit as the rules file that training reads (conf/hparams/
    fitted.yaml): lr and batch_tokens, each {coefficient, exponent} of C in FLOPs, with their 95%
    intervals and the range of budgets fitted. Needs the batch law in tokens per step
    (fit.extras["batch_unit"] == "tokens") and a trusted fit: training must not follow a law the
    data cannot identify, unless `untrusted_ok` says so knowingly; the file then records
    `trusted: false` and the failing checks."""
    reasons = "; ".join(f"{c['name']}: {c['detail']}" for c in fit.failed_checks)
    if not fit.trusted and not untrusted_ok:
        raise ValueError(
            f"the fitted laws are not trusted, so no rules file ({reasons}); "
            "--untrusted-ok writes it anyway, marked as such"
        )
    if fit.extras.get("batch_unit") != "tokens":
        raise ValueError(
            "a rules file needs the batch law in tokens per step: the runs do not record "
            "tokens_per_step (a CSV gives batch_size in sequences)"
        )
    p, ci = fit.params, fit.ci95
    budgets = [b["C"] for b in fit.extras["budgets"]]

    def law(k: str, e: str) -> dict:
        nan = (float("nan"), float("nan"))  # no interval when every bootstrap refit failed
        return {
            "coefficient": float(p[k]),
            "exponent": float(p[e]),
            "ci95": {
                "coefficient": [float(v) for v in ci.get(k, nan)],
                "exponent": [float(v) for v in ci.get(e, nan)],
            },
        }

    return {
        "x": "compute budget C in FLOPs (plan.budget_flops)",
        "lr": law("k_lr", "e_lr"),
        "batch_tokens": law("k_bs", "e_bs"),
        "fitted_range": [float(min(budgets)), float(max(budgets))],
        "n_runs": int(fit.n_points),
        "flagged_budgets": [float(c) for c in fit.extras["flagged_budgets"]],
        "sources": [str(s) for s in sources],
        "trusted": fit.trusted,
        **({} if fit.trusted else {"not_trusted_because": reasons}),
    }
