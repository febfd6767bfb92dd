"""L(N, D) = E + A N^-alpha + B D^-beta, Chinchilla's Approach 3: its fit (Huber loss on log L),
its prediction, the compute-optimal frontier it implies, its checks, figures and report section.

Units: N in parameters, D in tokens, C in FLOPs (C = 6 N D), losses in nats per token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np

import scalinglab.analysis.checks as checks
from scalinglab.analysis.budgets import BUDGET_RTOL
from scalinglab.analysis.fitting import bootstrap, extrapolation
from scalinglab.analysis.frontier import Frontier
from scalinglab.analysis.inputs import aligned, count, enough_points, positive_1d, same_length
from scalinglab.analysis.registry import Command, PointLaw, ReportEntry
from scalinglab.analysis.result import FitResult

# Derived values that rest on each parameter: not identified when it is not.
DEPENDS = {"a": ("alpha", "beta"), "b": ("alpha", "beta"), "G": ("alpha", "beta", "A", "B")}


class ChinchillaExtras(TypedDict):
    data: dict[str, list[float]]  # {N, D, loss}: what FitResult.plot draws
    delta: float
    n_starts: int
    compute_range: list[float]  # the runs' smallest and largest 6ND (FLOPs)
    bounds: dict[str, list[float]]
    n_bootstrap: int
    n_bootstrap_ok: int
    bootstrap: dict[str, list[float]]


def chinchilla_loss(
    N: np.ndarray, D: np.ndarray, E: float, A: float, B: float, alpha: float, beta: float
) -> np.ndarray:
    """L(N, D) = E + A N^-alpha + B D^-beta (Hoffmann et al. 2022, eq. 2)."""
    N = np.asarray(N, dtype=float)
    D = np.asarray(D, dtype=float)
    return E + A * N ** (-alpha) + B * D ** (-beta)


# Chinchilla Approach 3: Huber loss on log residuals of the log-sum-exp form
#   log L_hat = LSE(a - alpha log N, b - beta log D, e),  A = e^a, B = e^b, E = e^e.
# Internally log N and log D are centred on their means (a_c = a - alpha mean(log N)), which
# decorrelates a from alpha and b from beta, so the quasi-Newton polish needs far fewer steps.

DEFAULT_EXPONENT_GRID = np.linspace(0.02, 2.0, 45)


def _huber_lse(theta, logN_c, logD_c, logL, delta):
    """Sum of Huber_delta(log L_hat - log L) and its gradient in (a_c, b_c, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    t_n = a - alpha * logN_c
    t_d = b - beta * logD_c
    top = np.maximum(np.maximum(t_n, t_d), e)
    w_n, w_d, w_e = np.exp(t_n - top), np.exp(t_d - top), np.exp(e - top)
    total = w_n + w_d + w_e
    r = top + np.log(total) - logL
    abs_r = np.abs(r)
    value = np.where(abs_r <= delta, 0.5 * r * r, delta * (abs_r - 0.5 * delta)).sum()
    dr = np.clip(r, -delta, delta) / total  # Huber'(r) times d LSE / d t_k = softmax weight
    g_n, g_d = dr * w_n, dr * w_d
    grad = np.array([g_n.sum(), g_d.sum(), (dr * w_e).sum(), -(g_n @ logN_c), -(g_d @ logD_c)])
    return value, grad


def chinchilla_objective(
    N: np.ndarray, D: np.ndarray, loss: np.ndarray, params: Mapping[str, float], delta: float = 1e-3
) -> float:
    """The Approach 3 objective, sum of Huber_delta(log L_hat - log L), at the given E, A, B,
    alpha, beta (e.g. to compare a fit against known true parameters)."""
    p = params
    theta = np.log([p["A"], p["B"], p["E"]]).tolist() + [p["alpha"], p["beta"]]
    logL = np.log(np.asarray(loss, dtype=float))
    return float(_huber_lse(theta, np.log(N), np.log(D), logL, delta)[0])


def _projected_grid_starts(logN_c, logD_c, logL, delta, alphas, betas, n_starts):
    """The `n_starts` best (a_c, b_c, e, alpha, beta) over an (alpha, beta) grid.

    For fixed exponents the loss is linear in (E, A, B): solve min ||(E + A x_N + B x_D)/L - 1||
    over E, A, B >= 0 for every grid pair at once (3x3 normal equations, every support enumerated;
    the best feasible support is the non-negative optimum), then rank the pairs by the true
    Huber-LSE objective.
    """
    x_n = np.exp(-np.outer(logN_c, alphas))  # n x k_alpha: (N / N_ref)^-alpha
    x_d = np.exp(-np.outer(logD_c, betas))
    inv_l = np.exp(-logL)
    u_n, u_d = x_n * inv_l[:, None], x_d * inv_l[:, None]
    k_a, k_b = len(alphas), len(betas)
    gram = np.empty((k_a, k_b, 3, 3))
    gram[..., 0, 0] = inv_l @ inv_l
    gram[..., 0, 1] = gram[..., 1, 0] = (inv_l @ u_n)[:, None]
    gram[..., 0, 2] = gram[..., 2, 0] = (inv_l @ u_d)[None, :]
    gram[..., 1, 1] = np.einsum("ij,ij->j", u_n, u_n)[:, None]
    gram[..., 2, 2] = np.einsum("ij,ij->j", u_d, u_d)[None, :]
    gram[..., 1, 2] = gram[..., 2, 1] = u_n.T @ u_d
    rhs = np.empty((k_a, k_b, 3))
    rhs[..., 0] = inv_l.sum()
    rhs[..., 1] = u_n.sum(0)[:, None]
    rhs[..., 2] = u_d.sum(0)[None, :]
    gram, rhs = gram.reshape(-1, 3, 3), rhs.reshape(-1, 3)

    best_err = np.full(len(rhs), np.inf)
    coef = np.zeros_like(rhs)
    for support in ([0, 1, 2], [0, 1], [0, 2], [1, 2], [0], [1], [2]):
        g = gram[:, support][:, :, support]
        g = g + 1e-12 * np.eye(len(support)) * g.diagonal(axis1=1, axis2=2)[:, :, None]
        c = np.linalg.solve(g, rhs[:, support, None])[..., 0]
        err = -(c * rhs[:, support]).sum(1)  # ||X c - 1||^2 - n at the least-squares c
        better = np.all(c >= 0, axis=1) & (err < best_err)
        best_err[better] = err[better]
        coef[better] = 0.0
        coef[np.ix_(better, support)] = c[better]

    # Zero coefficients have no logarithm: floor them far below the loss scale.
    coef = np.maximum(coef, 1e-4 * np.exp(logL.mean()))
    ia, ib = np.divmod(np.arange(len(rhs)), k_b)
    huber = np.empty(len(rhs))
    chunk = max(1, 2_000_000 // len(logL))  # bounds the n x pairs temporaries to ~16 MB each
    for start in range(0, len(rhs), chunk):
        pairs = slice(start, start + chunk)
        c, i_a, i_b = coef[pairs], ia[pairs], ib[pairs]
        pred = c[:, 0] + c[:, 1] * x_n[:, i_a] + c[:, 2] * x_d[:, i_b]
        r = np.abs(np.log(pred) - logL[:, None])
        huber[pairs] = np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta)).sum(0)
    order = _distinct_starts(huber.reshape(k_a, k_b), n_starts)
    return np.column_stack(
        [
            np.log(coef[order, 1]),
            np.log(coef[order, 2]),
            np.log(coef[order, 0]),
            alphas[ia[order]],
            betas[ib[order]],
        ]
    )


def _distinct_starts(objective: np.ndarray, n_starts: int) -> np.ndarray:
    """Flat indices of up to `n_starts` grid points, best first: the grid's local minima (one per
    basin, so the polish explores distinct basins), then the best remaining points."""
    padded = np.pad(objective, 1, constant_values=np.inf)
    rows, cols = objective.shape
    neighbours = [
        padded[1 + di : 1 + di + rows, 1 + dj : 1 + dj + cols]
        for di in (-1, 0, 1)
        for dj in (-1, 0, 1)
        if di or dj
    ]
    is_local_min = np.all([objective <= nb for nb in neighbours], axis=0).ravel()
    flat = objective.ravel()
    by_value = np.argsort(flat, kind="stable")
    minima = by_value[is_local_min[by_value]]
    rest = by_value[~is_local_min[by_value]]
    return np.r_[minima, rest][:n_starts]


def _polish(theta0, logN_c, logD_c, logL, delta, exponent_bounds, max_iter):
    """Minimise the Huber-LSE objective over all 5 parameters from theta0, analytic gradient.

    BFGS first: it runs on numpy alone, whereas scipy's L-BFGS-B calls BLAS every iteration,
    which stalls when the cores are oversubscribed (threaded OpenBLAS on 2 busy cores measured
    10-30x slower). Only if an exponent leaves its bounds does L-BFGS-B take over from the
    clipped point. The objective is scaled by 1/(n delta) so its gradient is O(1) and gtol means
    the same for every n and delta.
    """
    from scipy.optimize import minimize  # only when fitting: the CLI's help stays light

    scale = 1.0 / (len(logL) * delta)

    def scaled(theta):
        value, grad = _huber_lse(theta, logN_c, logD_c, logL, delta)
        return value * scale, grad * scale

    options = {"maxiter": max_iter, "gtol": 1e-7}
    fit = minimize(scaled, theta0, jac=True, method="BFGS", options=options)
    lo, hi = exponent_bounds
    if np.all((fit.x[3:] >= lo) & (fit.x[3:] <= hi)):
        return fit
    start = fit.x.copy()
    start[3:] = np.clip(start[3:], lo, hi)
    bounds = [(None, None)] * 3 + [exponent_bounds] * 2
    return minimize(
        scaled,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={**options, "ftol": 1e-15},
    )


def _exponent_grid(grid) -> tuple[np.ndarray, np.ndarray]:
    """The (alphas, betas) of the start search: one grid for both, a pair, or the default."""
    if grid is None:
        return DEFAULT_EXPONENT_GRID, DEFAULT_EXPONENT_GRID
    if isinstance(grid, tuple):
        alphas, betas = (positive_1d("grid", g) for g in grid)
        return alphas, betas
    alphas = positive_1d("grid", grid)
    return alphas, alphas


@np.errstate(divide="ignore", invalid="ignore")  # alpha = beta = 0: NaN a, b, G
def _values(theta: np.ndarray, mean_n: float, mean_d: float) -> dict[str, float]:
    """The parameters and derived values of the centred theta (a_c, b_c, e, alpha, beta)."""
    a_c, b_c, e, alpha, beta = theta
    A, B = np.exp(a_c + alpha * mean_n), np.exp(b_c + beta * mean_d)
    total = alpha + beta
    return {
        "E": float(np.exp(e)),
        "A": float(A),
        "B": float(B),
        "alpha": float(alpha),
        "beta": float(beta),
        "a": float(beta / total),
        "b": float(alpha / total),
        "G": float((alpha * A / (beta * B)) ** (1.0 / total)),
    }


def _message(best, values: dict[str, float], note: str, exp_hi: float) -> str:
    message = str(best.message).rstrip(".") + note
    for name, term in (("alpha", "A N^-alpha"), ("beta", "B D^-beta")):
        if values[name] < 0.01:
            message += f"; {name} ~ 0: {term} is indistinguishable from the constant E"
        elif np.isclose(values[name], exp_hi):
            message += f"; {name} at its upper bound {exp_hi}"
    return message


def _inputs(N, D, loss, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N, D and loss as positive arrays of one length that can fit the law, or a ValueError."""
    aligned(N=N, D=D, loss=loss)
    N, D, loss = positive_1d("N", N), positive_1d("D", D), positive_1d("loss", loss)
    n = same_length(N=N, D=D, loss=loss)
    enough_points(n, 5, "the chinchilla law")
    if np.unique(N).size < 2 or np.unique(D).size < 2:
        raise ValueError("N and D each need at least two distinct values to fit the chinchilla law")
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    return N, D, loss


def _extras(N, D, loss, delta, n_starts, exponent_bounds, boot) -> ChinchillaExtras:
    exp_lo, exp_hi = (float(v) for v in exponent_bounds)
    return {
        "data": {"N": N.tolist(), "D": D.tolist(), "loss": loss.tolist()},
        "delta": delta,
        "n_starts": n_starts,
        "compute_range": [float(np.min(6.0 * N * D)), float(np.max(6.0 * N * D))],
        "bounds": {"E": [0.0, float("inf")], "alpha": [exp_lo, exp_hi], "beta": [exp_lo, exp_hi]},
        **boot.extras(),
    }


def _checks(result: FitResult, N, D, loss, *, check_extrapolation: bool, **options) -> list:
    """The law's checks (fit_chinchilla's docstring); `options`, the fit's own, go to the refits
    of the extrapolation check."""
    everything = [*result.params, *result.derived]
    return [
        checks.enough(len(N), 10, "runs for 5 parameters", "two per parameter", everything),
        checks.independent_variation(N, D, everything),
        checks.within_bounds(result, result.extras["bounds"], float(loss.min()), DEPENDS),
        checks.intervals(
            result, exponents=["alpha", "beta"], coefficients=["E", "A", "B"], depends=DEPENDS
        ),
        extrapolation(
            result,
            fit_chinchilla,
            (N, D, loss),
            run=check_extrapolation,
            quantity="loss",
            statistic="mean_abs_relative_error",
            threshold=checks.MAX_LOSS_ERROR,
            held_out="the largest compute budget",
            key=6.0 * N * D,
            rtol=BUDGET_RTOL,
            delta=result.extras["delta"],
            **options,
        ),  # fmt: skip
    ]


def fit_chinchilla(
    N: np.ndarray,
    D: np.ndarray,
    loss: np.ndarray,
    *,
    delta: float = 1e-3,
    n_bootstrap: int = 200,
    seed: int = 0,
    grid: np.ndarray | tuple[np.ndarray, np.ndarray] | None = None,
    n_starts: int = 6,
    exponent_bounds: tuple[float, float] = (0.0, 4.0),
    max_iter: int = 1000,
    check_extrapolation: bool = True,
) -> FitResult:
    """Fit L(N, D) = E + A N^-alpha + B D^-beta (Chinchilla Approach 3) by Huber loss on log L.

    N: parameters; D: training tokens; loss: final loss (nats/token), one row per run.
    delta: Huber threshold on log residuals (Hoffmann et al. use 1e-3).
    grid: exponent values for the variable-projection start search, shared by alpha and beta,
        or an (alphas, betas) pair; default 45 values in [0.02, 2].
    n_starts: best grid points polished (BFGS, analytic gradient, all 5 parameters; L-BFGS-B
        when an exponent would leave exponent_bounds).
    exponent_bounds: bounds on alpha and beta. max_iter: iteration cap per polish.
    derived: a = beta/(alpha+beta), b = alpha/(alpha+beta),
        G = (alpha A / (beta B))^(1/(alpha+beta)),
        so that N_opt(C) = G (C/6)^a and D_opt(C) = (C/6)^b / G (see compute_optimal_allocation).
    objective: sum of Huber_delta(log L_hat - log L). Intervals: bootstrap over runs, each resample
        warm-started from the full-data optimum and the next-best grid starts.
    extras["bootstrap"]: {name: per-resample values} of every param and derived value, the i-th
        entries from one resample (what ci95 and frontier_band are percentiles of); {} without.
        extras["compute_range"]: the runs' smallest and largest 6ND (FLOPs).
    checks: design (at least 10 runs, two per parameter; N and D varied independently), bounds
        (E > 0, exponent_bounds), intervals (alpha, beta exclude 0; E, A, B within a factor 100),
        extrapolation (refit without the largest compute budget C = 6ND, runs within 5% of it;
        check_extrapolation=False skips it and the check fails as not run).
    """
    N, D, loss = _inputs(N, D, loss, delta)
    n_starts, max_iter = count("n_starts", n_starts, 1), count("max_iter", max_iter, 1)
    n = len(N)
    alphas, betas = _exponent_grid(grid)
    logN, logD, logL = np.log(N), np.log(D), np.log(loss)
    mean_n, mean_d = logN.mean(), logD.mean()
    logN_c, logD_c = logN - mean_n, logD - mean_d
    starts = _projected_grid_starts(logN_c, logD_c, logL, delta, alphas, betas, n_starts)
    starts[:, 3:] = np.clip(starts[:, 3:], *exponent_bounds)
    fits = [_polish(s, logN_c, logD_c, logL, delta, exponent_bounds, max_iter) for s in starts]
    best = min(fits, key=lambda f: f.fun)
    # Resample warm starts: the optimum, plus the best grid starts that polished elsewhere.
    warm = [best.x] + [f.x for f in fits if not np.allclose(f.x, best.x, atol=1e-3)][:2]

    def fit_resample(idx: np.ndarray) -> dict[str, float] | None:
        if np.unique(N[idx]).size < 2 or np.unique(D[idx]).size < 2:
            return None
        args = (logN_c[idx], logD_c[idx], logL[idx], delta, exponent_bounds, max_iter)
        refit = min((_polish(w, *args) for w in warm), key=lambda f: f.fun)
        return _values(refit.x, mean_n, mean_d) if refit.success else None

    boot = bootstrap(fit_resample, n, n_bootstrap=n_bootstrap, seed=seed)
    values = _values(best.x, mean_n, mean_d)
    exp_hi = float(exponent_bounds[1])
    extras = _extras(N, D, loss, delta, len(starts), exponent_bounds, boot)
    result = FitResult(
        law="chinchilla",
        params={k: values[k] for k in ("E", "A", "B", "alpha", "beta")},
        ci95=boot.ci95,
        derived={k: values[k] for k in ("a", "b", "G")},
        n_points=n,
        converged=bool(best.success),
        message=_message(best, values, boot.note, exp_hi),
        objective=float(best.fun * n * delta),
        extras=dict(extras),
    )
    result.checks = _checks(
        result, N, D, loss, grid=grid, n_starts=n_starts, exponent_bounds=exponent_bounds,
        max_iter=max_iter, check_extrapolation=check_extrapolation,
    )  # fmt: skip
    return result


# --------------------------------------------------------------------------------------------
# The law in the registry


class ChinchillaLaw(Frontier, PointLaw):
    name = "chinchilla"
    approach = 3
    depends = DEPENDS
    curves_per_level = True  # drawn as L(N) at each token count (or L(D) at each size)
    command = Command(
        "chinchilla",
        "L(N, D), Chinchilla Approach 3",
        "Fit L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al.'s Approach 3, Huber loss on "
        "log L) to every completed run, and the compute-optimal N_opt(C), D_opt(C) it implies. "
        "Needs runs that vary N and D independently. Figures: chinchilla, frontier_chinchilla.",
        order=20,
    )
    report = (ReportEntry("Chinchilla L(N, D), Approach 3", 20),)

    def predict(self, fit: FitResult, *inputs: Any) -> Any:
        return chinchilla_loss(*inputs, **fit.params)

    def allocation(self, derived: Any, C: Any) -> tuple[Any, Any]:
        return derived["G"] * (C / 6.0) ** derived["a"], (C / 6.0) ** derived["b"] / derived["G"]

    def largest_budget(self, fit: FitResult) -> float:
        return float(fit.extras["compute_range"][1])

    def draw_loss(self, ax: Any, fit: FitResult, curve_x: Any, **context: Any) -> list[Any]:
        from scalinglab.analysis.plotting import (
            SYMBOLS,
            draw_band,
            loss_band,
            trust_label,
            with_ci,
        )

        scale = context["scale"]
        if scale is None or context["x_name"] not in ("n_params", "tokens"):
            raise ValueError(
                "a chinchilla fit is drawn against n_params with tokens given, or against tokens "
                "with n_params given"
            )
        # A curve through each measured level when there are few (every point on its own curve),
        # else four spanning them.
        levels = np.unique(scale.other)
        if len(levels) > 8:
            levels = np.geomspace(levels[0], levels[-1], 4)
        drawn = []
        for k, level in enumerate(levels):
            N, D = (curve_x, level) if scale.name == "tokens" else (level, curve_x)
            drawn.append(fit.predict(N, D))
            color = scale.cmap(scale.norm(level))
            label = f"fit at {SYMBOLS[scale.name]} = {level:.2g}"
            ax.plot(curve_x, drawn[-1], color=color, label=label)
            band = lambda N=N, D=D: loss_band(fit, N, D)  # noqa: E731
            draw_band(ax, curve_x, fit, band, color=color, legend=None if k else "bands")
        ax.set_title(
            trust_label("L = E + A/N^α + B/D^β", fit)
            + f"\n{with_ci(fit, 'alpha')}, {with_ci(fit, 'beta')}\n{with_ci(fit, 'E')}",
            fontsize=9,
        )
        return drawn

    def plot(self, fit: FitResult, ax: Any = None, **options: Any) -> Any:
        from scalinglab.analysis.plotting import plot_data, plot_loss

        def draw(data: dict, on: Any) -> None:
            plot_loss(data["N"], data["loss"], fit, tokens=data["D"], ax=on, **options)

        return plot_data(fit, ax, "plot_loss(N, loss, fit, tokens=D)", draw)

    def analyse(self, study: Any, fitted: dict, **options: Any) -> Any:
        return analyse_chinchilla(study)


LAWS = [ChinchillaLaw()]


def analyse_chinchilla(study: Any) -> Any:
    """L(N, D) over every run, its figures and the allocation it implies."""
    import pandas as pd

    from scalinglab.analysis.frontier import allocations
    from scalinglab.analysis.plotting import plot_frontier, plot_loss
    from scalinglab.analysis.section import Section
    from scalinglab.analysis.study import fit_options, rows

    runs = rows(study, ["n_params", "tokens", "loss"], "the chinchilla law")
    fit = fit_chinchilla(runs["n_params"], runs["tokens"], runs["loss"], **fit_options(study))
    budgets = 6.0 * runs["n_params"] * runs["tokens"]
    untrusted = "" if fit.trusted else " The fit is not trusted: the frontier is not a result."
    floor = study.known_floor
    on_floor = "" if floor is None else " Dashed: the floor the data records."
    return Section(
        description=f"L = E + A/N^alpha + B/D^beta, Huber loss on log L over {len(runs)} runs; "
        "N_opt ∝ C^a, D_opt ∝ C^b with C = 6ND." + study.against_floor(fit),
        fit=fit,
        figures={
            "chinchilla": plot_loss(
                runs["n_params"], runs["loss"], fit, tokens=runs["tokens"], floor=floor
            ),
            "chinchilla_tokens": plot_loss(
                runs["tokens"],
                runs["loss"],
                fit,
                x_name="tokens",
                n_params=runs["n_params"],
                floor=floor,
            ),
            "frontier_chinchilla": plot_frontier(fit, budgets),
        },
        captions={
            "chinchilla": f"Final loss of {len(runs)} runs against parameters, coloured by "
            "training tokens, with the fitted L(N, D) = E + A/N^alpha + B/D^beta drawn at a few "
            "token counts (Approach 3)." + on_floor + untrusted.replace("frontier", "fit"),
            "chinchilla_tokens": f"The same {len(runs)} runs against training tokens, coloured by "
            "parameters, with the fitted law drawn at a few model sizes: the L(D) slices."
            + on_floor
            + untrusted.replace("frontier", "fit"),
            "frontier_chinchilla": "Compute-optimal model size N_opt(C) implied by the fitted "
            "L(N, D) (Approach 3), with its 95% bootstrap band; grey: extrapolation beyond the "
            "largest run." + untrusted,
        },
        tables={"Compute-optimal allocation": pd.DataFrame(allocations(fit, budgets))},
    )
