"""Figures: built from fits without pyplot, with labelled log axes, saved as PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from scalinglab.analysis.compute_optimal import fit_isoflop, frontier_band
from scalinglab.analysis.laws import fit_chinchilla, fit_power_law
from scalinglab.analysis.load import budget_flops, budget_labels, completed, load_curves, load_runs
from scalinglab.analysis.plots import (
    plot_curves,
    plot_frontier,
    plot_isoflop,
    plot_loss,
    save,
)

from .fake_runs import TRUTH, chinchilla_loss, optimal_n_params


@pytest.fixture(scope="module")
def runs(isoflop_sweep: Path):
    runs = completed(load_runs(isoflop_sweep))
    labels = budget_labels(runs["flops"])
    runs["budget"] = budget_flops(runs["flops"], labels)[labels]
    return runs


def legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def labels(fig: Figure) -> list[str]:
    ax = fig.axes[0]
    return [ax.get_xlabel(), ax.get_ylabel(), ax.get_title(), ax.get_xscale()]


def test_power_law_plot_draws_the_fit(runs, tmp_path: Path) -> None:
    fit = fit_power_law(runs["n_params"], runs["val_loss"], n_bootstrap=0)
    fig = plot_loss(runs["n_params"], runs["val_loss"], fit, tokens=runs["tokens"])
    xlabel, ylabel, title, xscale = labels(fig)
    assert "parameters" in xlabel and "nats/token" in ylabel and title and xscale == "log"
    assert len(fig.axes) == 2  # the plot and its tokens colorbar
    assert "training tokens" in fig.axes[1].get_ylabel()
    assert any("alpha" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    png, svg = save(fig, tmp_path / "figs", "loss")
    assert png.read_bytes()[:4] == b"\x89PNG" and svg.read_text().lstrip().startswith("<?xml")


def test_chinchilla_plot_has_a_curve_per_token_level(runs) -> None:
    fit = fit_chinchilla(runs["n_params"], runs["tokens"], runs["val_loss"], n_bootstrap=0)
    fig = plot_loss(runs["n_params"], runs["val_loss"], fit, tokens=runs["tokens"])
    curves = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("fit at D")]
    assert len(curves) == 4
    n_grid, loss_grid = curves[0].get_data()
    level = runs["tokens"].min()  # the first curve is at the fewest tokens trained on
    assert np.allclose(loss_grid, chinchilla_loss(n_grid, level), rtol=1e-3)
    with pytest.raises(ValueError, match="tokens"):
        plot_loss(runs["n_params"], runs["val_loss"], fit)


def test_isoflop_plot_flags_minima_outside_the_sampled_sizes(tmp_path: Path) -> None:
    # Three budgets; at the largest, every size is above the optimum, so its minimum is outside.
    budgets, sizes = [1e15, 1e16, 1e17], []
    for budget, factors in zip(budgets, [[0.25, 0.5, 1, 2, 4]] * 2 + [[2, 4, 8]], strict=True):
        sizes += [(budget, optimal_n_params(budget) * f) for f in factors]
    compute, n_params = np.array(sizes).T
    loss = chinchilla_loss(n_params, compute / (6 * n_params))
    fit = fit_isoflop(compute, n_params, loss, n_bootstrap=20)
    assert [b["in_range"] for b in fit.extras["budgets"]] == [True, True, False]
    fig = plot_isoflop(fit)
    assert [t.get_text() for t in fig.axes[0].texts] == ["minimum outside\nsampled sizes"]
    frontier = plot_frontier(fit, budgets)
    ax = frontier.axes[0]
    assert ax.get_xlim()[1] >= 1e18  # one decade of extrapolation
    assert f"95% band ({fit.extras['n_bootstrap_ok']} bootstrap refits)" in legend(ax)
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    line = ax.get_lines()[0]
    lo, hi = frontier_band(fit, line.get_xdata())
    assert np.allclose(band.get_paths()[0].vertices[:, 1].min(), lo.min())
    assert np.allclose(band.get_paths()[0].vertices[:, 1].max(), hi.max())
    assert len(save(frontier, tmp_path, "frontier")) == 2


def test_frontier_without_bootstrap_has_no_band(runs) -> None:
    fit = fit_isoflop(runs["budget"], runs["n_params"], runs["val_loss"], n_bootstrap=0)
    ax = plot_frontier(fit, [1e15, 1e17]).axes[0]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert "no band: no bootstrap draws (n_bootstrap=0)" in legend(ax)
    assert not any("95%" in text for text in legend(ax))


def test_curves_plot_one_line_per_run(isoflop_sweep: Path) -> None:
    curves = completed(load_curves(isoflop_sweep))
    fig = plot_curves(curves, x="flops", loss="val/loss")
    assert len(fig.axes[0].get_lines()) == curves["run_id"].nunique()
    assert fig.axes[0].get_yscale() == "log" and "FLOPs" in fig.axes[0].get_xlabel()
    assert "parameters" in fig.axes[1].get_ylabel()


def test_truth_constants_are_consistent() -> None:
    # The fixtures' optimum sits at ~20 tokens per parameter.
    ratio = (TRUTH["B"] / TRUTH["A"]) ** (1 / TRUTH["alpha"])
    assert 19 < ratio < 21
