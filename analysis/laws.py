"""Power laws and the Chinchilla loss L(N, D): the model functions and their fits.

Units: x, N (parameters), D (tokens) and C (FLOPs) are counts; losses are in nats per token.

Bounds, one convention: a dict from parameter name to (low, high), in the parameter's own units
(A itself, not log A), naming only the parameters to bound; the others keep their defaults. Every
fit records the box it used the same way, extras["bounds"] = {name: [low, high]}, which
checks.within_bounds reads. fit_chinchilla bounds its two exponents together, exponent_bounds =
(low, high) for alpha and beta alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import least_squares, minimize

from scalinglab.analysis import checks
from scalinglab.analysis.bootstrap import (
    bootstrap_draws,
    intervals,
    skipped_note,
)
from scalinglab.analysis.load import BUDGET_RTOL
from scalinglab.analysis.result import FitResult

# --------------------------------------------------------------------------------------------
# Model functions


def power_law(x: np.ndarray, E: float, A: float, alpha: float) -> np.ndarray:
    """y = E + A x^-alpha (E = 0 for a pure power law)."""
    return E + A * np.asarray(x, dtype=float) ** (-alpha)


def chinchilla_loss(
    N: np.ndarray, D: np.ndarray, E: float, A: float, B: float, alpha: float, beta: float
) -> np.ndarray:
    """L(N, D) = E + A N^-alpha + B D^-beta (Hoffmann et al. 2022, eq. 2)."""
    N = np.asarray(N, dtype=float)
    D = np.asarray(D, dtype=float)
    return E + A * N ** (-alpha) + B * D ** (-beta)


def optimal_allocation(law: str, d: Mapping[str, Any], C: np.ndarray) -> tuple[Any, Any]:
    """(N_opt, D_opt) at C from a fit's derived values `d`; the values may be arrays (bootstrap
    draws), broadcast against C."""
    if law == "chinchilla":
        return d["G"] * (C / 6.0) ** d["a"], (C / 6.0) ** d["b"] / d["G"]
    if law in ("isoflop", "envelope"):
        return d["k_N"] * C ** d["a"], d["k_D"] * C ** d["b"]
    raise ValueError(
        f"compute-optimal allocation needs a chinchilla, isoflop or envelope fit, got law={law!r}"
    )


def compute_optimal_allocation(result: FitResult, C: float | np.ndarray) -> dict[str, np.ndarray]:
    """Compute-optimal model size N_opt, tokens D_opt and D_opt/N_opt at budget C = 6 N D FLOPs.

    Works for a chinchilla fit (N_opt = G (C/6)^a, D_opt = (C/6)^b / G) and for an isoflop or
    envelope fit (N_opt = k_N C^a, D_opt = k_D C^b). Scalars in, scalars out.
    """
    C_arr = _positive_1d("C", np.atleast_1d(C))
    n_opt, d_opt = optimal_allocation(result.law, result.derived, C_arr)
    out = {"N_opt": n_opt, "D_opt": d_opt, "tokens_per_param": d_opt / n_opt}
    if np.ndim(C) == 0:
        return {k: float(v[0]) for k, v in out.items()}
    return out


# --------------------------------------------------------------------------------------------
# Input checks shared by every fit


def _positive_1d(name: str, values: object) -> np.ndarray:
    """`values` as a 1-D float array, or a ValueError naming what is wrong with it."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric: {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} has non-finite values (NaN or inf) at index {bad[:5].tolist()}")
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise ValueError(
            f"{name} must be positive; got {float(arr[bad[0]]):g} at index {int(bad[0])}"
            f"{f' and {bad.size - 1} more' if bad.size > 1 else ''}"
        )
    return arr


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")
    return next(iter(lengths.values()))


def _enough_points(n: int, n_params: int, what: str) -> None:
    if n < n_params:
        raise ValueError(f"{what} has {n_params} parameters but only {n} points")


# --------------------------------------------------------------------------------------------
# Power law: least squares on log residuals, log y - log(E + A x^-alpha)


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


def _named(values: Sequence[float] | Mapping[str, float] | None, names: Sequence[str], what: str):
    if values is None or isinstance(values, Mapping):
        values = dict(values or {})
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"{what}: unknown parameter(s) {sorted(unknown)}; expected {names}")
        return values
    values = list(values)
    if len(values) != len(names):
        raise ValueError(f"{what} needs {len(names)} values in order {names}, got {len(values)}")
    return dict(zip(names, values, strict=True))


def _bounds(
    bounds: Mapping[str, tuple[float, float]] | None,
    defaults: Mapping[str, tuple[float, float]],
) -> dict[str, tuple[float, float]]:
    """The box a fit uses: `defaults` with the given {name: (low, high)} replacing theirs, or a
    ValueError naming what breaks the convention (module docstring)."""
    names = list(defaults)
    if bounds is not None and not isinstance(bounds, Mapping):
        # A sequence is ambiguous: in parameter order, or scipy's (lows, highs)?
        raise ValueError(
            f"bounds must be a dict name -> (low, high), e.g. {{'alpha': (0.0, 2.0)}}, "
            f"for parameters {names}; got {type(bounds).__name__} {bounds!r}"
        )
    box = dict(defaults)
    for name, pair in _named(bounds, names, "bounds").items():
        try:
            low, high = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"bounds[{name!r}] must be a pair (low, high), got {pair!r}") from None
        if not low < high:
            raise ValueError(f"bounds[{name!r}] must have low < high, got ({low:g}, {high:g})")
        box[name] = (low, high)
    return box


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
) -> FitResult:
    """Fit y = E + A x^-alpha (offset=False: y = A x^-alpha) by least squares on log y.

    x: positive scale variable (parameters, tokens, FLOPs); y: positive, e.g. loss in nats.
    p0: the starting point, by name or in order (E, A, alpha) / (A, alpha); without it the
        optimiser starts from the best point of an alpha grid with (E, A) solved exactly.
    bounds: {name: (low, high)} for the parameters to bound (module docstring), e.g.
        {"alpha": (0.2, 1.0)}; the others keep their defaults, E in [0, inf), A in (0, inf),
        alpha in [0, 10].
    objective: sum of squared log residuals. Intervals: bootstrap over points.
    checks: design (at least two more points than parameters), bounds, intervals (alpha excludes
        0, E and A within a factor 100), extrapolation (refit without the largest x, which
        check_extrapolation=False skips: the check then fails as not run). Where x is compute,
        checks.compute_law says whether the points make a compute law (the CLI adds it).
    """
    x = _positive_1d("x", x)
    y = _positive_1d("y", y)
    n = _same_length(x=x, y=y)
    names = ("E", "A", "alpha") if offset else ("A", "alpha")
    _enough_points(n, len(names), "the power law")
    if np.unique(x).size < 2:
        raise ValueError("x needs at least two distinct values to fit a power law")

    defaults = {"E": (0.0, np.inf), "A": (1e-300, np.inf), "alpha": (0.0, 10.0)}
    box = _bounds(bounds, {k: defaults[k] for k in names})
    if box["A"][1] <= 0:
        raise ValueError(f"bounds['A'] must allow a positive A, got {box['A']}")
    # A is fitted as log A: its box too.
    lo = np.array([box[k][0] if k != "A" else np.log(max(box[k][0], 1e-300)) for k in names])
    hi = np.array([box[k][1] if k != "A" else np.log(box[k][1]) for k in names])

    logx, logy = np.log(x), np.log(y)
    if p0 is not None:
        start = _named(p0, names, "p0")
        if set(start) != set(names):
            raise ValueError(f"p0 needs every parameter {names}, got {sorted(start)}")
        if start["A"] <= 0:
            raise ValueError(f"p0: A must be positive, got {start['A']}")
        theta0 = np.array([np.log(start[k]) if k == "A" else start[k] for k in names], float)
    else:
        theta0 = _power_grid_start(logx, logy, offset, box["alpha"][0], box["alpha"][1])
    theta0 = np.clip(theta0, lo, hi)

    def solve(theta_start, lx, ly):
        return least_squares(
            _power_residuals,
            theta_start,
            jac=_power_jacobian,
            bounds=(lo, hi),
            args=(lx, ly, offset),
            x_scale="jac",
            method="trf",
            xtol=1e-12,
            ftol=1e-12,
            gtol=1e-12,
        )

    def as_params(theta) -> dict[str, float]:
        return {k: float(np.exp(v) if k == "A" else v) for k, v in zip(names, theta, strict=True)}

    fit = solve(theta0, logx, logy)
    params = as_params(fit.x)

    def fit_resample(idx: np.ndarray) -> dict[str, float] | None:
        if np.unique(x[idx]).size < 2:
            return None
        refit = solve(fit.x, logx[idx], logy[idx])
        return as_params(refit.x) if refit.success else None

    draws, n_ok = bootstrap_draws(fit_resample, n, n_bootstrap=n_bootstrap, seed=seed)
    result = FitResult(
        law="power",
        params=params,
        ci95=intervals(draws),
        n_points=n,
        converged=bool(fit.success),
        message=str(fit.message) + skipped_note(n_ok, n_bootstrap),
        objective=float(2.0 * fit.cost),
        extras={
            "data": {"x": x.tolist(), "y": y.tolist()},  # what FitResult.plot draws
            "offset": offset,
            "bounds": {k: [float(v) for v in box[k]] for k in names},
            "bootstrap": draws,
            "n_bootstrap": n_bootstrap,
            "n_bootstrap_ok": n_ok,
        },
    )
    result.checks = [
        checks.enough(
            n,
            len(names) + 2,
            f"points for {len(names)} parameters",
            "two more points than parameters",
            names,
        ),
        checks.within_bounds(result, result.extras["bounds"], loss_scale=float(y.min())),
        checks.intervals(
            result, exponents=["alpha"], coefficients=[k for k in names if k != "alpha"]
        ),
        checks.extrapolation(
            fit_power_law,
            (x, y),
            quantity="y",
            statistic="mean_abs_relative_error",
            threshold=checks.MAX_LOSS_ERROR,
            held_out="the largest x",
            run=check_extrapolation,
            offset=offset,
            p0=p0,
            bounds=bounds,
        ),
    ]
    return result


# --------------------------------------------------------------------------------------------
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
    N = _positive_1d("N", N)
    D = _positive_1d("D", D)
    loss = _positive_1d("loss", loss)
    n = _same_length(N=N, D=D, loss=loss)
    _enough_points(n, 5, "the chinchilla law")
    if np.unique(N).size < 2 or np.unique(D).size < 2:
        raise ValueError("N and D each need at least two distinct values to fit the chinchilla law")
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    if grid is None:
        alphas = betas = DEFAULT_EXPONENT_GRID
    elif isinstance(grid, tuple):
        alphas, betas = (_positive_1d("grid", g) for g in grid)
    else:
        alphas = betas = _positive_1d("grid", grid)

    logN, logD, logL = np.log(N), np.log(D), np.log(loss)
    mean_n, mean_d = logN.mean(), logD.mean()
    logN_c, logD_c = logN - mean_n, logD - mean_d
    exp_lo, exp_hi = exponent_bounds

    starts = _projected_grid_starts(logN_c, logD_c, logL, delta, alphas, betas, n_starts)
    starts[:, 3:] = np.clip(starts[:, 3:], exp_lo, exp_hi)
    fits = [_polish(s, logN_c, logD_c, logL, delta, exponent_bounds, max_iter) for s in starts]
    best = min(fits, key=lambda f: f.fun)

    @np.errstate(divide="ignore", invalid="ignore")  # alpha = beta = 0: NaN a, b, G
    def as_values(theta) -> dict[str, float]:
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

    # Resample warm starts: the optimum, plus the best grid starts that polished elsewhere.
    warm = [best.x] + [f.x for f in fits if not np.allclose(f.x, best.x, atol=1e-3)][:2]

    def fit_resample(idx: np.ndarray) -> dict[str, float] | None:
        if np.unique(N[idx]).size < 2 or np.unique(D[idx]).size < 2:
            return None
        args = (logN_c[idx], logD_c[idx], logL[idx], delta, exponent_bounds, max_iter)
        refit = min((_polish(w, *args) for w in warm), key=lambda f: f.fun)
        return as_values(refit.x) if refit.success else None

    draws, n_ok = bootstrap_draws(fit_resample, n, n_bootstrap=n_bootstrap, seed=seed)
    values = as_values(best.x)
    params = {k: values[k] for k in ("E", "A", "B", "alpha", "beta")}
    derived = {k: values[k] for k in ("a", "b", "G")}
    message = str(best.message).rstrip(".") + skipped_note(n_ok, n_bootstrap)
    for name, term in (("alpha", "A N^-alpha"), ("beta", "B D^-beta")):
        if values[name] < 0.01:
            message += f"; {name} ~ 0: {term} is indistinguishable from the constant E"
        elif np.isclose(values[name], exp_hi):
            message += f"; {name} at its upper bound {exp_hi}"
    result = FitResult(
        law="chinchilla",
        params=params,
        ci95=intervals(draws),
        derived=derived,
        n_points=n,
        converged=bool(best.success),
        message=message,
        objective=float(best.fun * n * delta),
        extras={
            "data": {"N": N.tolist(), "D": D.tolist(), "loss": loss.tolist()},  # for .plot()
            "delta": delta,
            "n_starts": len(starts),
            "compute_range": [float(np.min(6.0 * N * D)), float(np.max(6.0 * N * D))],
            "bounds": {
                "E": [0.0, float("inf")],
                "alpha": [float(exp_lo), float(exp_hi)],
                "beta": [float(exp_lo), float(exp_hi)],
            },
            "n_bootstrap": n_bootstrap,
            "n_bootstrap_ok": n_ok,
            "bootstrap": draws,
        },
    )
    everything = [*params, *derived]
    result.checks = [
        checks.enough(n, 10, "runs for 5 parameters", "two per parameter", everything),
        checks.independent_variation(N, D, everything),
        checks.within_bounds(result, result.extras["bounds"], loss_scale=float(loss.min())),
        checks.intervals(result, exponents=["alpha", "beta"], coefficients=["E", "A", "B"]),
        checks.extrapolation(
            fit_chinchilla,
            (N, D, loss),
            quantity="loss",
            statistic="mean_abs_relative_error",
            threshold=checks.MAX_LOSS_ERROR,
            held_out="the largest compute budget",
            run=check_extrapolation,
            key=6.0 * N * D,
            rtol=BUDGET_RTOL,
            delta=delta,
            grid=grid,
            n_starts=n_starts,
            exponent_bounds=exponent_bounds,
            max_iter=max_iter,
        ),
    ]
    return result
