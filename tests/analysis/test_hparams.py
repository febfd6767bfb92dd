"""Optimal learning rate and batch size versus compute, on grids with a known optimum."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scalinglab.analysis.laws.hparams import fit_hparams
from scalinglab.analysis.validate import leave_largest_out, residual_summary

BUDGETS = np.geomspace(1e17, 1e21, 5)
LR_GRID = 1e-4 * 2 ** (np.arange(17) / 2)  # 1e-4 .. 2.56e-2, half-octave steps
BATCH_GRID = 16 * 2 ** (np.arange(15) / 2)  # 16 .. 2048


def optimal_lr(C):
    return 0.02 * (np.asarray(C) / 1e17) ** -0.15


def optimal_batch(C):
    return 64 * (np.asarray(C) / 1e17) ** 0.3


def hparam_grid(seed: int, budgets=BUDGETS, noise: float = 0.001):
    """A bowl in (log2 lr, log2 batch) around the known optimum, on top of a falling loss."""
    rng = np.random.default_rng(seed)
    C, lr, batch = (g.ravel() for g in np.meshgrid(budgets, LR_GRID, BATCH_GRID, indexing="ij"))
    loss = (
        3.0 * (C / 1e17) ** -0.05
        + 0.05 * np.log2(lr / optimal_lr(C)) ** 2
        + 0.02 * np.log2(batch / optimal_batch(C)) ** 2
        + noise * rng.standard_normal(C.size)
    )
    return C, lr, batch, loss


@pytest.fixture(scope="module")
def hparams():
    data = hparam_grid(seed=0)
    return data, fit_hparams(*data, n_bootstrap=100, seed=0)


def test_hparams_recover_scaling_exponents(hparams):
    _, fit = hparams
    assert fit.law == "hparams" and fit.converged, fit.message
    assert abs(fit.params["e_lr"] - -0.15) < 0.03
    assert abs(fit.params["e_bs"] - 0.3) < 0.05
    assert fit.derived == fit.params
    assert set(fit.ci95) == {"k_lr", "e_lr", "k_bs", "e_bs"}
    assert fit.ci95["e_lr"][0] <= fit.params["e_lr"] <= fit.ci95["e_lr"][1]
    predicted = fit.predict(1e19)
    assert predicted["lr"] == pytest.approx(optimal_lr(1e19), rel=0.25)
    assert predicted["batch_size"] == pytest.approx(optimal_batch(1e19), rel=0.35)
    json.dumps(fit.to_dict())


def test_hparams_bands(hparams):
    _, fit = hparams
    for budget, c in zip(fit.extras["budgets"], BUDGETS, strict=True):
        assert budget["C"] == pytest.approx(c) and budget["in_range"]
        lo, hi = budget["lr_band"]
        assert (
            lo <= budget["lr_opt"] <= hi and lo <= optimal_lr(c) * 1.5 and hi >= optimal_lr(c) / 1.5
        )
        lo, hi = budget["batch_size_band"]
        assert lo <= budget["batch_size_opt"] <= hi
        assert budget["n_band"] >= 1
        assert len(budget["lr"]) == len(LR_GRID) * len(BATCH_GRID)
        losses = np.array(budget["loss"])
        assert budget["best_loss"] == losses.min()
        assert budget["n_band"] == np.sum(losses <= losses.min() * (1 + fit.extras["tolerance"]))


def test_hparams_tolerance_widens_the_band():
    data = hparam_grid(seed=1)
    narrow = fit_hparams(*data, tolerance=0.005, n_bootstrap=0)
    wide = fit_hparams(*data, tolerance=0.03, n_bootstrap=0)
    for a, b in zip(narrow.extras["budgets"], wide.extras["budgets"], strict=True):
        assert b["n_band"] > a["n_band"]
        assert b["lr_band"][0] <= a["lr_band"][0] and b["lr_band"][1] >= a["lr_band"][1]


def test_hparams_flags_optimum_on_grid_edge():
    C, lr, batch, loss = hparam_grid(seed=2)
    # At the largest budget the optimum sits below the grid: loss keeps falling as lr falls.
    top = BUDGETS[-1] == C
    loss = np.where(top, loss + np.log2(lr / LR_GRID[0]), loss)
    fit = fit_hparams(C, lr, batch, loss, n_bootstrap=0)
    assert [b["in_range"] for b in fit.extras["budgets"]] == [True] * 4 + [False]
    assert "edge" in fit.message and fit.extras["flagged_budgets"] == pytest.approx([BUDGETS[-1]])


def test_hparams_is_deterministic_for_a_seed():
    data = hparam_grid(seed=3, budgets=BUDGETS[:3])
    assert fit_hparams(*data, n_bootstrap=20, seed=1) == fit_hparams(*data, n_bootstrap=20, seed=1)


def test_hparams_validation_helpers(hparams):
    data, fit = hparams
    report = leave_largest_out(fit_hparams, *data)
    assert set(report["errors"]) == {"lr", "batch_size"}
    assert report["errors"]["lr"]["max_abs_relative_error"] < 0.3
    assert residual_summary(fit)["lr"]["n"] == len(BUDGETS)


@pytest.mark.parametrize(
    ("mutate", "kwargs", "match"),
    [
        (lambda C, lr, bs, L: (np.full_like(C, 1e18), lr, bs, L), {}, "two compute budgets"),
        (lambda C, lr, bs, L: (C, np.r_[np.nan, lr[1:]], bs, L), {}, "lr has non-finite"),
        (lambda C, lr, bs, L: (C, lr, np.r_[0, bs[1:]], L), {}, "batch_size must be positive"),
        (lambda C, lr, bs, L: (C, lr, bs, L[:-1]), {}, "same length"),
        (lambda C, lr, bs, L: (C, lr, bs, L), {"tolerance": 1.5}, "tolerance"),
    ],
)
def test_hparams_rejects_bad_input(mutate, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_hparams(*mutate(*hparam_grid(seed=4, budgets=BUDGETS[:2])), n_bootstrap=0, **kwargs)
