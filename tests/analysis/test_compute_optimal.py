"""IsoFLOP (Approach 2) and envelope (Approach 1) fits on data from a known Chinchilla law."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scalinglab.analysis.bootstrap import percentile_interval
from scalinglab.analysis.frontier import frontier_band
from scalinglab.analysis.laws import chinchilla_loss, compute_optimal_allocation
from scalinglab.analysis.laws.envelope import fit_envelope
from scalinglab.analysis.laws.isoflop import fit_isoflop
from scalinglab.analysis.result import FitResult
from scalinglab.analysis.validate import leave_largest_out, residual_summary

TRUTH = {"E": 1.7, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.28}
A_TRUE = TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])  # N_opt ~ C^a
G_TRUE = (TRUTH["alpha"] * TRUTH["A"] / (TRUTH["beta"] * TRUTH["B"])) ** (
    1 / (TRUTH["alpha"] + TRUTH["beta"])
)
BUDGETS = np.geomspace(1e18, 1e22, 6)


def true_n_opt(C):
    return G_TRUE * (np.asarray(C) / 6.0) ** A_TRUE


def isoflop_data(seed: int, noise: float = 0.01, budgets=BUDGETS, sizes_per_budget: int = 9):
    """Per budget, sizes spanning +-1 decade around a centre jittered +-0.25 decade off N_opt."""
    rng = np.random.default_rng(seed)
    C, N = [], []
    for c in budgets:
        centre = np.log10(true_n_opt(c)) + rng.uniform(-0.25, 0.25)
        for offset in np.linspace(-1.0, 1.0, sizes_per_budget):
            C.append(c)
            N.append(10 ** (centre + offset))
    C, N = np.array(C), np.array(N)
    loss = chinchilla_loss(N, C / (6 * N), **TRUTH) * np.exp(noise * rng.standard_normal(len(C)))
    return C, N, loss


# --- IsoFLOP --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def isoflop():
    data = isoflop_data(seed=0, noise=0.005)
    return data, fit_isoflop(*data, n_bootstrap=200, seed=0)


def test_isoflop_recovers_exponents(isoflop):
    _, fit = isoflop
    assert fit.law == "isoflop" and fit.converged
    assert abs(fit.derived["a"] - A_TRUE) < 0.02
    assert abs(fit.derived["b"] - (1 - A_TRUE)) < 0.02
    assert fit.derived["a"] + fit.derived["b"] == pytest.approx(1.0)  # D_opt = C / (6 N_opt)
    assert set(fit.ci95) == {"k_N", "a", "k_D", "b"}
    assert fit.ci95["a"][0] < fit.derived["a"] < fit.ci95["a"][1]
    json.dumps(fit.to_dict())


def test_isoflop_budget_profiles(isoflop):
    (C, N, _), fit = isoflop
    budgets = fit.extras["budgets"]
    assert len(budgets) == len(BUDGETS) and all(b["in_range"] for b in budgets)
    for budget, c in zip(budgets, BUDGETS, strict=True):
        assert budget["C"] == pytest.approx(c)
        assert len(budget["N"]) == len(budget["loss"]) == 9 and len(budget["coef"]) == 3
        assert budget["coef"][0] > 0
        assert budget["N_opt"] == pytest.approx(true_n_opt(c), rel=0.15)
        lo, hi = budget["N_opt_ci95"]
        assert lo < budget["N_opt"] < hi
        assert min(budget["N"]) <= budget["N_opt"] <= max(budget["N"])
    alloc = compute_optimal_allocation(fit, 1e21)
    assert 6 * alloc["N_opt"] * alloc["D_opt"] == pytest.approx(1e21, rel=1e-9)


def test_isoflop_flags_budget_without_interior_minimum():
    C, N, loss = isoflop_data(seed=1, noise=0.002)
    # An extra budget sampled only far below its optimum: loss falls monotonically with N.
    c_bad = 3e20
    n_bad = true_n_opt(c_bad) * np.geomspace(1e-3, 1e-2, 6)
    loss_bad = chinchilla_loss(n_bad, c_bad / (6 * n_bad), **TRUTH)
    fit = fit_isoflop(
        np.r_[C, np.full(6, c_bad)], np.r_[N, n_bad], np.r_[loss, loss_bad], n_bootstrap=20
    )
    flagged = [b for b in fit.extras["budgets"] if not b["in_range"]]
    assert [b["C"] for b in flagged] == pytest.approx([c_bad])
    assert fit.extras["flagged_budgets"] == pytest.approx([c_bad])
    assert "flagged" in fit.message and "3e+20" in fit.message
    clean = fit_isoflop(C, N, loss, n_bootstrap=0)
    assert fit.derived["a"] == pytest.approx(clean.derived["a"])  # left out of the law fit


def test_isoflop_with_tokens_matches_6ND():
    C, N, loss = isoflop_data(seed=2)
    default = fit_isoflop(C, N, loss, n_bootstrap=0)
    with_tokens = fit_isoflop(C, N, loss, tokens=C / (6 * N), n_bootstrap=0)
    for name in ("a", "b", "k_N", "k_D"):
        assert with_tokens.derived[name] == pytest.approx(default.derived[name], rel=1e-6)


def test_isoflop_groups_budgets_despite_float_noise_in_C():
    C, N, loss = isoflop_data(seed=5)
    noisy_C = C * (1 + 1e-5 * np.random.default_rng(0).standard_normal(len(C)))
    fit = fit_isoflop(noisy_C, N, loss, n_bootstrap=0)
    assert len(fit.extras["budgets"]) == len(BUDGETS)
    assert fit.derived["a"] == pytest.approx(fit_isoflop(C, N, loss, n_bootstrap=0).derived["a"])
    assert leave_largest_out(fit_isoflop, noisy_C, N, loss)["n_held_out"] == 9


def test_isoflop_is_deterministic_for_a_seed():
    data = isoflop_data(seed=3)
    assert fit_isoflop(*data, n_bootstrap=30, seed=5) == fit_isoflop(*data, n_bootstrap=30, seed=5)


def test_isoflop_validation_helpers(isoflop):
    (C, N, loss), fit = isoflop
    report = leave_largest_out(fit_isoflop, C, N, loss)
    assert report["law"] == "isoflop" and report["n_held_out"] == 9
    assert report["errors"]["N_opt"]["max_abs_relative_error"] < 0.15
    summary = residual_summary(fit)
    assert set(summary) == {"N_opt", "D_opt"} and summary["N_opt"]["n"] == len(BUDGETS)
    assert summary["N_opt"]["rmse"] < 0.1


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda C, N, L: (np.full_like(C, 1e20), N, L), "two compute budgets"),
        (lambda C, N, L: (C, np.r_[np.nan, N[1:]], L), "N has non-finite"),
        (lambda C, N, L: (C, N, np.r_[-1.0, L[1:]]), "loss must be positive"),
        (lambda C, N, L: (C[:-1], N, L), "same length"),
        (lambda C, N, L: (C, N, 5 - 0.1 * (np.log10(N) - 9) ** 2), "two budgets with a minimum"),
    ],
)
def test_isoflop_rejects_bad_input(mutate, match):
    with pytest.raises(ValueError, match=match):
        fit_isoflop(*mutate(*isoflop_data(seed=4)), n_bootstrap=0)


@pytest.mark.slow
def test_isoflop_interval_coverage():
    hits = {"a": 0, "b": 0}
    for draw in range(50):
        fit = fit_isoflop(*isoflop_data(seed=1000 + draw), n_bootstrap=200, seed=draw)
        for name, truth in (("a", A_TRUE), ("b", 1 - A_TRUE)):
            lo, hi = fit.ci95[name]
            hits[name] += lo <= truth <= hi
    assert all(h >= 0.85 * 50 for h in hits.values()), hits


def wide_isoflop(seed: int, place: tuple[float, float] = (0.15, 0.25), noise: float = 0.005):
    """A design as published studies sample it: 11 budgets over 3 decades of C, each with 12
    sizes over 3 decades of N, its optimum off centre: at `place` (a fraction of the log range
    from its smallest size), or as far from its largest, each side chosen at random."""
    rng = np.random.default_rng(seed)
    C, N = [], []
    for c in np.geomspace(1e18, 1e21, 11):
        at = rng.uniform(*place)
        at = at if rng.random() < 0.5 else 1.0 - at
        smallest = np.log10(true_n_opt(c)) - 3.0 * at
        C += [c] * 12
        N += list(10 ** np.linspace(smallest, smallest + 3.0, 12))
    C, N = np.array(C), np.array(N)
    loss = chinchilla_loss(N, C / (6 * N), **TRUTH) * np.exp(noise * rng.standard_normal(len(C)))
    return C, N, loss


def test_isoflop_fits_each_parabola_near_its_minimum():
    """Sizes over 3 decades, minima off centre: a parabola through a whole profile has its vertex
    in an outer quarter of the sizes and is refused (window=3); the local fit uses the sizes
    within a decade of each budget's best run and recovers a, trusted."""
    data = wide_isoflop(seed=0)
    fit = fit_isoflop(*data, n_bootstrap=100, seed=0)
    assert fit.trusted, fit.failed_checks
    assert fit.derived["a"] == pytest.approx(A_TRUE, abs=0.02)
    for budget in fit.extras["budgets"]:
        used = np.asarray(budget["N"])[budget["used"]]
        best = budget["N"][int(np.argmin(budget["loss"]))]
        assert 5 <= len(used) < 12 and np.all(np.abs(np.log10(used / best)) <= 1.0 + 1e-9)
    whole = fit_isoflop(*data, n_bootstrap=0, window=3.0)
    assert not whole.trusted and "centering" in [c["name"] for c in whole.failed_checks]


def test_isoflop_weights_each_minimum_by_its_standard_error():
    """A minimum its sizes pin down poorly (5 sizes over a fifth of a decade, where the bowl is
    nearly flat) counts for less in the law than those of budgets sampled over 2 decades."""
    C, N, loss = isoflop_data(seed=6, noise=0.002)
    c_narrow = 3e22
    n_narrow = true_n_opt(c_narrow) * np.geomspace(10**-0.1, 10**0.1, 5)
    loss_narrow = chinchilla_loss(n_narrow, c_narrow / (6 * n_narrow), **TRUTH)  # noiseless
    fit = fit_isoflop(
        np.r_[C, [c_narrow] * 5], np.r_[N, n_narrow], np.r_[loss, loss_narrow], n_bootstrap=0
    )
    *wide, narrow = fit.extras["budgets"]  # in order of C
    assert narrow["in_range"] and narrow["weight"] < 0.2 * min(b["weight"] for b in wide)


@pytest.mark.slow
def test_isoflop_recovers_a_on_wide_off_centre_designs():
    """The issue's measure: 50 seeds of wide designs with their minima in the lower or upper
    quarter (15-25% of the range from an end: at least 0.45 decade inside it), 0.5% noise. Measured
    (n_bootstrap=100): a within 0.02 and trusted in 50 of 50, the interval covering the truth in
    49. With minima closer to the end than that (0-10%), a stays within 0.02 in 44 of 50 but no fit
    is trusted: a minimum at the end of its sizes fails the centering check, as it must."""
    good = 0
    for seed in range(50):
        fit = fit_isoflop(*wide_isoflop(seed), n_bootstrap=100, seed=seed)
        good += fit.trusted and abs(fit.derived["a"] - A_TRUE) <= 0.02
    assert good >= 45, good
    at_the_end = [fit_isoflop(*wide_isoflop(s, (0.0, 0.05)), n_bootstrap=0) for s in range(10)]
    assert not any(fit.trusted for fit in at_the_end)


# --- frontier band --------------------------------------------------------------------------


def log_width(fit, C):
    lo, hi = frontier_band(fit, C)
    return np.log(hi / lo)


def test_frontier_band_brackets_the_fit(isoflop):
    _, fit = isoflop
    draws = fit.extras["bootstrap"]
    assert set(draws) == {"k_N", "a", "k_D", "b"}
    assert all(len(v) == fit.extras["n_bootstrap_ok"] == 200 for v in draws.values())
    assert percentile_interval(draws["a"]) == fit.ci95["a"]  # ci95 comes from these very draws
    grid = np.geomspace(BUDGETS[0], 10 * BUDGETS[-1], 50)
    lo, hi = frontier_band(fit, grid)
    estimate = compute_optimal_allocation(fit, grid)["N_opt"]
    assert np.all((lo < estimate) & (estimate < hi))
    # Not pivoted on the exponent alone: the intercept's uncertainty keeps it open at the centre.
    centre = np.exp(np.log(BUDGETS).mean())
    assert 0.01 < log_width(fit, centre) < log_width(fit, BUDGETS[-1])
    assert log_width(fit, BUDGETS[-1]) < log_width(fit, 10 * BUDGETS[-1])


def test_isoflop_interval_covers_the_true_exponent():
    """Calibration of the pooled residual bootstrap on the demo's kind of design: 3 budgets, 5
    sizes each over +-0.4 decade around a guess of the optimum off by up to 0.1 decade, 0.5%
    noise. Measured over 40 seeds (the minima weighted): the 95% interval of a covers the truth in
    36 (90%); with 0.25% noise in 35 (88%), where the parabola's own bias (which no bootstrap
    sees) starts to show. A
    run-resampling bootstrap covers more often here with intervals 1.4x as wide, and on the demo's
    real runs 7x as wide (5-run resamples drop whole sides of a profile)."""
    covered, n_seeds = 0, 30
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        centres = np.log10(true_n_opt(BUDGETS[:3])) + rng.uniform(-0.1, 0.1, 3)
        N = (10.0 ** (centres[:, None] + np.linspace(-0.4, 0.4, 5))).ravel()
        C = np.repeat(BUDGETS[:3], 5)
        loss = chinchilla_loss(N, C / (6 * N), **TRUTH) * np.exp(0.005 * rng.standard_normal(15))
        fit = fit_isoflop(C, N, loss, n_bootstrap=100, seed=seed, check_extrapolation=False)
        lo, hi = fit.ci95["a"]
        covered += lo <= A_TRUE <= hi
    assert covered >= 0.85 * n_seeds, covered


def test_frontier_band_is_the_spread_of_each_resamples_law(isoflop):
    # Recomputed one resample at a time through compute_optimal_allocation, D_opt included.
    _, fit = isoflop
    draws = fit.extras["bootstrap"]
    C = np.array([1e19, 1e23])
    resamples = [dict(zip(draws, v, strict=True)) for v in zip(*draws.values(), strict=True)]
    per_resample = [
        compute_optimal_allocation(FitResult("isoflop", {}, derived=d), C) for d in resamples
    ]
    for quantity in ("N_opt", "D_opt"):
        predicted = np.array([r[quantity] for r in per_resample])
        expected = np.percentile(predicted, [2.5, 97.5], axis=0)
        assert np.allclose(frontier_band(fit, C, quantity=quantity), expected, rtol=1e-12)


def test_no_bootstrap_means_no_band():
    fit = fit_isoflop(*isoflop_data(seed=2), n_bootstrap=0)
    assert fit.extras["bootstrap"] == {}
    with pytest.raises(ValueError, match="no bootstrap draws"):
        frontier_band(fit, 1e20)


# --- envelope -------------------------------------------------------------------------------


def training_curves(seed: int, n_sizes: int = 13, steps: int = 100):
    """Curves L(N, D) along D for sizes log-spaced in [1e7, 1e10], 0.2% noise per logged step."""
    rng = np.random.default_rng(seed)
    flops, loss, n_params, run_id = [], [], [], []
    for k, size in enumerate(np.geomspace(1e7, 1e10, n_sizes)):
        tokens = np.geomspace(1e8, 200 * size, steps)
        flops.append(6 * size * tokens)
        loss.append(
            chinchilla_loss(size, tokens, **TRUTH) * np.exp(0.002 * rng.standard_normal(steps))
        )
        n_params.append(np.full(steps, size))
        run_id.append(np.full(steps, f"run-{k}"))
    return tuple(map(np.concatenate, (flops, loss, n_params, run_id)))


@pytest.fixture(scope="module")
def envelope():
    flops, loss, n_params, run_id = training_curves(seed=0)
    return fit_envelope(flops, loss, n_params, run_id=run_id, n_bootstrap=100, seed=0)


def test_envelope_recovers_exponent(envelope):
    fit = envelope
    assert fit.law == "envelope" and fit.converged
    assert abs(fit.derived["a"] - A_TRUE) < 0.04
    assert fit.derived["b"] == pytest.approx(1 - fit.derived["a"])
    assert set(fit.ci95) == {"k_N", "a", "k_D", "b"}
    assert fit.ci95["a"][0] <= fit.derived["a"] <= fit.ci95["a"][1]
    c = np.array([p["C"] for p in fit.extras["envelope"] if p["in_range"]])
    lo, hi = frontier_band(fit, c)
    estimate = compute_optimal_allocation(fit, c)["N_opt"]
    assert np.all((lo < estimate) & (estimate < hi))
    assert np.all((lo <= true_n_opt(c)) & (true_n_opt(c) <= hi))
    # The compute-optimal size at a mid budget, within one step of the size ladder (x1.8).
    assert compute_optimal_allocation(fit, 1e19)["N_opt"] == pytest.approx(
        true_n_opt(1e19), rel=0.5
    )
    json.dumps(fit.to_dict())


def test_envelope_points_leave_out_edge_sizes(envelope):
    points = envelope.extras["envelope"]
    assert envelope.n_points == sum(p["in_range"] for p in points) >= 10
    for p in points:
        assert p["in_range"] == (1e7 * 1.001 < p["N"] < 1e10 * 0.999)
    c = np.array([p["C"] for p in points])
    assert np.all(np.diff(c) > 0)


def test_envelope_defaults_to_one_curve_per_size_and_is_deterministic():
    flops, loss, n_params, run_id = training_curves(seed=1, n_sizes=8)
    by_size = fit_envelope(flops, loss, n_params, n_bootstrap=20, seed=3)
    by_run = fit_envelope(flops, loss, n_params, run_id=run_id, n_bootstrap=20, seed=3)
    assert by_size.params == by_run.params
    assert by_size == fit_envelope(flops, loss, n_params, n_bootstrap=20, seed=3)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f, L, n: (f, L, np.where(n > 1e9, 1e9, np.where(n < 1e9, 1e8, n))), "three model"),
        (lambda f, L, n: (np.r_[np.inf, f[1:]], L, n), "flops has non-finite"),
        (lambda f, L, n: (f, L[:-1], n), "same length"),
        (lambda f, L, n: (f, np.r_[0.0, L[1:]], n), "loss must be positive"),
    ],
)
def test_envelope_rejects_bad_input(mutate, match):
    flops, loss, n_params, _ = training_curves(seed=2, n_sizes=5, steps=10)
    with pytest.raises(ValueError, match=match):
        fit_envelope(*mutate(flops, loss, n_params), n_bootstrap=0)


def test_envelope_reports_resamples_it_could_not_fit():
    # Four sizes: a resample of curves often keeps fewer than two interior sizes.
    flops, loss, n_params, _ = training_curves(seed=3, n_sizes=4)
    fit = fit_envelope(flops, loss, n_params, n_bootstrap=50, seed=0)
    assert 0 < fit.extras["n_bootstrap_ok"] < 50
    skipped = 50 - fit.extras["n_bootstrap_ok"]
    assert f"{skipped} of 50 bootstrap resamples could not be fitted" in fit.message
