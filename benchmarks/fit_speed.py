"""How fast is Chinchilla Approach 3? Prints figures; asserts nothing.

    python benchmarks/fit_speed.py [--n-points 250] [--n-bootstrap 1000] [--textbook-starts 60]

1. fit_chinchilla on synthetic data (variable-projection grid + polish): wall seconds, and its
   objective against the objective at the true parameters (lower or equal = global).
2. The same fit with n_bootstrap resamples: wall seconds for the resamples.
3. For reference, the textbook method (Hoffmann et al. 2022): L-BFGS-B from each of 4,500
   initialisations, alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ...,
   25}, with numerical and with analytic gradients. A random subset of starts is timed and the
   full grid extrapolated from it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import numpy as np
from scipy.optimize import minimize

from scalinglab.analysis.laws import (
    _huber_lse,
    chinchilla_loss,
    chinchilla_objective,
    fit_chinchilla,
)

TRUTH = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.28}
PAPER_GRID = list(
    itertools.product(
        np.arange(0, 30, 5.0),  # a
        np.arange(0, 30, 5.0),  # b
        np.arange(-1, 1.5, 0.5),  # e
        np.arange(0, 2.5, 0.5),  # alpha
        np.arange(0, 2.5, 0.5),  # beta
    )
)


def synthetic(n: int, seed: int):
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e11), n))
    D = np.exp(rng.uniform(np.log(3e8), np.log(1e12), n))
    loss = chinchilla_loss(N, D, **TRUTH) * np.exp(0.01 * rng.standard_normal(n))
    return N, D, loss


def textbook(N, D, loss, starts, analytic: bool, delta: float = 1e-3):
    """L-BFGS-B from each start on the raw (uncentred) objective; (seconds, best objective)."""
    args = (np.log(N), np.log(D), np.log(loss), delta)
    if analytic:
        fun, jac = (lambda t: _huber_lse(t, *args)), True
    else:
        fun, jac = (lambda t: _huber_lse(t, *args)[0]), None
    t0 = time.perf_counter()
    best = min(minimize(fun, s, jac=jac, method="L-BFGS-B").fun for s in starts)
    return time.perf_counter() - t0, float(np.atleast_1d(best)[0] if analytic else best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-points", type=int, default=250)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--textbook-starts", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()

    N, D, loss = synthetic(opts.n_points, opts.seed)
    truth_objective = chinchilla_objective(N, D, loss, TRUTH)
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, n = {opts.n_points}")

    times = []
    for _ in range(opts.repeats):
        t0 = time.perf_counter()
        fit = fit_chinchilla(N, D, loss, n_bootstrap=0)
        times.append(time.perf_counter() - t0)
    p = fit.params
    print(
        f"\n[1] Approach 3 point fit: median {np.median(times):.3f} s "
        f"(min {min(times):.3f}, max {max(times):.3f}) over {opts.repeats} runs"
    )
    print(
        f"    objective {fit.objective:.6e} vs truth's {truth_objective:.6e} "
        f"({'<=' if fit.objective <= truth_objective else '>'} truth), converged={fit.converged}"
    )
    print(f"    E={p['E']:.4f} alpha={p['alpha']:.4f} beta={p['beta']:.4f} (truth 1.7, 0.34, 0.28)")

    t0 = time.perf_counter()
    boot = fit_chinchilla(N, D, loss, n_bootstrap=opts.n_bootstrap, seed=opts.seed)
    boot_seconds = time.perf_counter() - t0 - np.median(times)
    print(
        f"\n[2] {opts.n_bootstrap} bootstrap resamples: {boot_seconds:.2f} s "
        f"({1e3 * boot_seconds / opts.n_bootstrap:.1f} ms each, "
        f"{boot.extras['n_bootstrap_ok']} fitted)"
    )
    for name in ("alpha", "beta", "E"):
        lo, hi = boot.ci95[name]
        print(f"    {name}: 95% [{lo:.4f}, {hi:.4f}]")

    rng = np.random.default_rng(opts.seed)
    picked = rng.choice(
        len(PAPER_GRID), size=min(opts.textbook_starts, len(PAPER_GRID)), replace=False
    )
    starts = [np.array(PAPER_GRID[i]) for i in picked]
    print(
        f"\n[3] textbook L-BFGS-B grid ({len(PAPER_GRID)} starts), timed on {len(starts)} "
        "random starts and extrapolated:"
    )
    for analytic in (False, True):
        seconds, best = textbook(N, D, loss, starts, analytic)
        full = seconds / len(starts) * len(PAPER_GRID)
        label = "analytic gradient " if analytic else "numerical gradient"
        print(
            f"    {label}: {seconds:.2f} s for {len(starts)} -> ~{full:.0f} s for the grid; "
            f"best objective on the subset {best:.6e}"
        )


if __name__ == "__main__":
    main()
