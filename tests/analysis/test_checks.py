"""Every fit checks itself: a clean design raises no false alarm, each flawed design is flagged by
the check that names its flaw, and the check functions say what they found."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scalinglab.analysis import checks
from scalinglab.analysis.laws import fit_chinchilla, fit_power_law
from scalinglab.analysis.laws.chinchilla import DEPENDS
from scalinglab.analysis.laws.envelope import fit_envelope
from scalinglab.analysis.laws.hparams import fit_hparams
from scalinglab.analysis.laws.isoflop import fit_isoflop
from scalinglab.analysis.report import agreements, fit_table
from scalinglab.analysis.result import FitResult
from scalinglab.analysis.section import Section
from scalinglab.analysis.validate import leave_largest_out

from .designs import (
    CLEAN_SIZES,
    FLAWS,
    N_BOOTSTRAP,
    SURFACE,
    curves,
    hparam_grid,
    isoflop_grid,
    ladder,
    lowest_per_budget,
    n_opt,
    power_in_compute,
)

NAMES = {"design", "bounds", "intervals", "centering", "extrapolation"}


def assert_trusted(fit: FitResult) -> None:
    failed = [f"{c['name']}: {c['detail']}" for c in fit.failed_checks]
    assert fit.trusted and not failed, failed
    assert all(c["passed"] and c["params"] == [] for c in fit.checks)
    assert {c["name"] for c in fit.checks} <= NAMES
    assert not fit.not_identified


# --- clean designs: no false alarm ----------------------------------------------------------


@pytest.fixture(scope="module")
def clean_grid():
    """4 budgets over 30x, 7 sizes over 10x centred on each optimum, 0.5% noise."""
    return isoflop_grid()


def test_clean_isoflop_grid_is_trusted_by_approaches_2_and_3(clean_grid) -> None:
    C, N, D, loss = clean_grid
    isoflop = fit_isoflop(C, N, loss, n_bootstrap=100)
    chinchilla = fit_chinchilla(N, D, loss, n_bootstrap=100)
    for fit in (isoflop, chinchilla):
        assert_trusted(fit)
        assert {c["name"] for c in fit.checks} >= {"design", "intervals", "extrapolation"}
    assert "centering" in {c["name"] for c in isoflop.checks}
    assert "bounds" in {c["name"] for c in chinchilla.checks}
    (agree,) = agreements([Section("A2", fit=isoflop), Section("A3", fit=chinchilla)])
    assert agree["passed"] and "agree: intervals overlap" in agree["detail"]
    a_true = SURFACE["beta"] / (SURFACE["alpha"] + SURFACE["beta"])
    for fit in (isoflop, chinchilla):
        lo, hi = fit.ci95["a"]
        assert lo <= a_true <= hi


def test_clean_grid_is_too_small_for_a_compute_law(clean_grid) -> None:
    # Not applicable, not a false alarm: L(C) through 4 budgets' minima has 4 points for 3
    # parameters, and the design check says so (and only that about the design).
    fit = power_in_compute(*lowest_per_budget(*clean_grid))
    design = [c for c in fit.checks if c["name"] == "design"]
    assert [c["passed"] for c in design] == [False, True]
    assert "4 points for 3 parameters; the law needs at least 5" in design[0]["detail"]


def test_clean_ladder_power_law_is_trusted() -> None:
    N, _, loss = ladder()
    assert_trusted(fit_power_law(N, loss, n_bootstrap=100))


def test_clean_envelope_and_hparams_are_trusted() -> None:
    sizes = np.geomspace(1e7, 1e10, 13)
    flops, loss, n_params, run_id, ends = curves(sizes, 200 * sizes, n_logged=60)
    envelope = fit_envelope(flops, loss, n_params, run_id=run_id, schedule_end=ends, n_bootstrap=50)
    assert_trusted(envelope)
    assert_trusted(fit_hparams(*hparam_grid(16 * 2 ** (np.arange(15) / 2)), n_bootstrap=50))


# --- flawed designs: caught by the check that names the flaw ---------------------------------


@pytest.mark.parametrize("flaw", FLAWS, ids=[f"{f.fit}: {f.flaw}" for f in FLAWS])
def test_flawed_design_is_caught_by_its_check(flaw) -> None:
    result = flaw.run()
    found = result.checks if isinstance(result, FitResult) else result
    caught = [c for c in found if c["name"] == flaw.check and not c["passed"]]
    assert caught, [(c["name"], c["passed"], c["detail"]) for c in found]
    assert caught[0]["detail"]
    if isinstance(result, FitResult):
        assert not result.trusted
        assert result.to_dict()["trusted"] is False


def test_one_batch_size_leaves_only_the_batch_law_unidentified() -> None:
    fit = fit_hparams(*hparam_grid([256.0]), n_bootstrap=N_BOOTSTRAP)
    assert fit.not_identified == {"k_bs", "e_bs"}
    identified = dict(zip(fit_table(fit)["name"], fit_table(fit)["identified"], strict=True))
    assert identified == {"k_lr": "yes", "e_lr": "yes", "k_bs": "no", "e_bs": "no"}


def test_off_centre_minima_name_their_budgets() -> None:
    C, N, _, loss = isoflop_grid(sizes=np.geomspace(0.6, 6, 7))
    (centering,) = [
        c for c in fit_isoflop(C, N, loss, n_bootstrap=0).checks if c["name"] == "centering"
    ]
    assert not centering["passed"]
    assert (
        "C=1e+17: minimum at 0.24 of the sampled log-N range, in its lower quarter"
        in (centering["detail"])
    )


def test_minimum_outside_the_sampled_sizes_fails_centering() -> None:
    C, N, D, loss = isoflop_grid()
    top = np.equal(C, C.max())
    N[top] *= 20  # every size far above the largest budget's optimum
    loss[top] = isoflop_grid(sizes=CLEAN_SIZES * 20)[3][top]
    fit = fit_isoflop(C, N, loss, n_bootstrap=0)
    (centering,) = [c for c in fit.checks if c["name"] == "centering"]
    assert not fit.extras["budgets"][-1]["in_range"] and not centering["passed"]
    assert "outside the sampled" in centering["detail"]


# --- the check functions ---------------------------------------------------------------------


def fit_with(law="power", params=None, ci95=None, derived=None, **kw) -> FitResult:
    return FitResult(law, params or {}, ci95=ci95 or {}, derived=derived or {}, **kw)


def test_bounds_name_the_parameter_and_bound() -> None:
    fit = fit_with(params={"E": 1.5, "A": 3.0, "alpha": 0.1}, ci95={"E": (1e-20, 2.2)})
    bounds = {"E": (0.0, np.inf), "A": (1e-300, np.inf), "alpha": (0.0, 10.0)}
    result = checks.within_bounds(fit, bounds, loss_scale=2.0)
    assert not result["passed"] and result["params"] == ["E"]
    assert (
        "E's 95% interval [1e-20, 2.2] reaches its lower bound 0 (within 0.02)" in result["detail"]
    )
    fit = fit_with(params={"E": 1.5, "A": 3.0, "alpha": 9.995})
    result = checks.within_bounds(fit, bounds, loss_scale=2.0)
    assert (
        result["params"] == ["alpha"]
        and "alpha = 9.99 reaches its upper bound 10 (within 0.01)" in (result["detail"])
    )


def test_intervals_of_exponents_coefficients_and_predictions() -> None:
    fit = fit_with(
        "chinchilla",
        params={"E": 1.0, "A": 10.0, "B": 10.0, "alpha": 0.3, "beta": 0.3},
        ci95={"E": (0.9, 1.1), "A": (1.0, 500.0), "B": (5, 20), "alpha": (0.0, 0.5)},
        derived={"a": 0.5, "b": 0.5, "G": 1.0},
    )
    fit.ci95["beta"] = (0.2, 0.4)
    result = checks.intervals(
        fit, exponents=["alpha", "beta"], coefficients=["E", "A", "B"], depends=DEPENDS
    )
    assert not result["passed"]
    assert "exponent alpha's interval [0, 0.5] reaches 0" in result["detail"]
    assert "A's interval [1, 500] spans a factor 500 (rule: at most 100)" in result["detail"]
    # What rests on alpha and A is not identified either.
    assert set(result["params"]) == {"alpha", "A", "a", "b", "G"}
    prediction = {"N_opt at C=1e+20": (1e9, 1e8, 2e9, ["k_N", "a"])}
    result = checks.intervals(fit, predictions=prediction)
    assert not result["passed"] and "a factor 20 (rule: at most 10" in result["detail"]
    no_draws = checks.intervals(fit_with(params={"alpha": 0.3}), exponents=["alpha"])
    assert not no_draws["passed"] and "no 95% interval for alpha" in no_draws["detail"]


def test_compute_law_needs_both_n_and_d_to_grow() -> None:
    N = np.geomspace(1e6, 1e8, 5)
    ladder_check = checks.compute_law(N, 20 * N, 120 * N**2, ["E"])
    assert ladder_check["passed"]
    one_n = checks.compute_law(np.full(5, 1e7), N, 6e7 * N, ["E"])
    assert not one_n["passed"] and "L(D) relabelled" in one_n["detail"]


def test_agreement_compares_the_intervals_of_a() -> None:
    def approach(lo, hi):
        return fit_with("isoflop", derived={"a": (lo + hi) / 2}, ci95={"a": (lo, hi)})

    assert checks.agreement(("A2", approach(0.4, 0.6)), ("A3", approach(0.55, 0.7)))["passed"]
    apart = checks.agreement(("A2", approach(0.4, 0.5)), ("A3", approach(0.2, 0.3)))
    assert not apart["passed"] and "A2 and A3 DISAGREE: intervals do not overlap" in apart["detail"]
    unknown = checks.agreement(("A2", approach(0.4, 0.5)), ("A3", fit_with(derived={"a": 0.3})))
    assert not unknown["passed"] and "without both intervals" in unknown["detail"]


def test_trusted_means_converged_and_no_failing_check() -> None:
    assert fit_with().trusted  # no failing check
    fit = fit_with(converged=False, message="max iterations")
    assert not fit.trusted and fit.failed_checks[0]["name"] == "converged"
    fit = fit_with(checks=[checks.check("bounds", False, "E at 0", ["E"])])
    assert not fit.trusted and fit.not_identified == {"E"}
    document = json.loads(json.dumps(fit.to_dict()))
    assert document["trusted"] is False and document["checks"][0]["name"] == "bounds"
    assert FitResult.from_dict(document | {"title": "x"}).checks == fit.checks


def test_unrun_checks_fail_rather_than_pass(clean_grid) -> None:
    C, N, _, loss = clean_grid
    fit = fit_isoflop(C, N, loss, n_bootstrap=0, check_extrapolation=False)
    failed = {c["name"]: c["detail"] for c in fit.failed_checks}
    assert failed == {
        "intervals": failed["intervals"],
        "extrapolation": "not run (check_extrapolation=False)",
    }
    assert "no 95% interval" in failed["intervals"]
    two_budgets = np.less(C, 5e17)
    two = fit_isoflop(C[two_budgets], N[two_budgets], loss[two_budgets], n_bootstrap=0)
    (extrapolation,) = [c for c in two.checks if c["name"] == "extrapolation"]
    assert (
        not extrapolation["passed"]
        and "cannot refit without the largest budget" in (extrapolation["detail"])
    )


def test_leave_largest_out_groups_budgets_and_splits_tokens(clean_grid) -> None:
    C, N, D, loss = clean_grid
    noisy_C = C * (1 + 0.01 * np.random.default_rng(0).standard_normal(len(C)))
    report = leave_largest_out(fit_isoflop, noisy_C, N, loss, tokens=D)
    assert report["n_held_out"] == len(CLEAN_SIZES)
    assert report["fit"]["checks"][-1]["detail"] == "not run (check_extrapolation=False)"
    by_compute = leave_largest_out(fit_chinchilla, N, D, loss, key=6 * N * D, rtol=0.05)
    assert by_compute["n_held_out"] == len(CLEAN_SIZES)
    assert by_compute["key_threshold"] == pytest.approx(C.max(), rel=1e-6)
    assert n_opt(C.max()) == pytest.approx(np.sort(N[np.equal(C, C.max())])[3])


def test_a_passing_check_says_how_much_of_its_rule_it_used() -> None:
    """`used` is the margin of a verdict: 0 far inside the rule, 1 at its limit."""
    budgets = [  # minima at 0.5 and 0.7 of their log-N ranges: 0 and 0.8 of the allowed offset
        {"C": 1e18, "N": [1e6, 1e8], "N_opt": 1e7},
        {"C": 1e19, "N": [1e6, 1e8], "N_opt": 10**7.4},
    ]
    assert checks.centering(budgets)["used"] == pytest.approx(0.8)
    report = {"errors": {"N_opt": {"abs": 0.07}}, "n_held_out": 5, "n_train": 15}
    found = checks.extrapolation(
        lambda: report, quantity="N_opt", statistic="abs", threshold=0.35, held_out="it"
    )
    assert found["passed"] and found["used"] == pytest.approx(0.2)
    fit = FitResult("power", {"alpha": 0.3, "A": 10.0}, ci95={"alpha": (0.2, 0.4), "A": (5, 20)})
    found = checks.intervals(fit, exponents=["alpha"], coefficients=["A"])
    # alpha's nearer end is halfway to 0 from its far one
    assert found["used"] == pytest.approx(0.5)
    assert checks.check("design", True, "4 budgets")["used"] is None  # a count: no margin to read
