"""Figures: built from fits without pyplot, with labelled log axes, saved as PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure

from scalinglab.analysis import laws
from scalinglab.analysis.frontier import frontier_band
from scalinglab.analysis.laws import (
    compute_optimal_allocation,
    fit_chinchilla,
    fit_power_law,
    power_law,
)
from scalinglab.analysis.laws.envelope import fit_envelope
from scalinglab.analysis.laws.isoflop import fit_isoflop, plot_isoflop
from scalinglab.analysis.load import budget_flops, budget_labels, completed, load_curves, load_runs
from scalinglab.analysis.plotting import plot_curves, plot_frontier, plot_loss, save

from .fake_runs import chinchilla_loss, optimal_n_params


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


def band_edges(band: PolyCollection, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest y that a fill_between polygon reaches at each x."""
    vertices = band.get_paths()[0].vertices
    at = [vertices[np.isclose(vertices[:, 0], value, rtol=1e-12), 1] for value in x]
    return np.array([y.min() for y in at]), np.array([y.max() for y in at])


def percentile_band(per_draw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2.5 and 97.5 percentiles over the draws (last axis), computed here, not by the code."""
    return tuple(np.percentile(per_draw, [2.5, 97.5], axis=-1))


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
    assert np.allclose(loss_grid, laws.chinchilla_loss(n_grid, level, **fit.params))
    with pytest.raises(ValueError, match="tokens"):
        plot_loss(runs["n_params"], runs["val_loss"], fit)


def test_chinchilla_l_of_d_slices_with_their_bands_and_the_known_floor(runs) -> None:
    fit = fit_chinchilla(runs["n_params"], runs["tokens"], runs["val_loss"], n_bootstrap=20)
    floor = 0.97 * runs["val_loss"].min()
    fig = plot_loss(
        runs["tokens"],
        runs["val_loss"],
        fit,
        x_name="tokens",
        n_params=runs["n_params"],
        floor=floor,
    )
    ax = fig.axes[0]
    assert "training tokens" in ax.get_xlabel() and "parameters" in fig.axes[1].get_ylabel()
    curves = [line for line in ax.get_lines() if line.get_label().startswith("fit at N")]
    assert len(curves) == 4
    d_grid, loss_grid = curves[-1].get_data()
    size = runs["n_params"].max()  # the last curve is at the largest model
    assert np.allclose(loss_grid, laws.chinchilla_loss(size, d_grid, **fit.params))
    # Its band: percentiles of the resamples' own laws at that size, computed here.
    draws = {k: np.asarray(v) for k, v in fit.extras["bootstrap"].items()}
    per_draw = laws.chinchilla_loss(
        size, d_grid[:, None], *(draws[k] for k in ("E", "A", "B", "alpha", "beta"))
    )
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    lo, hi = band_edges(bands[-1], d_grid[::40])
    expected_lo, expected_hi = percentile_band(per_draw[::40])
    np.testing.assert_allclose(lo, expected_lo, rtol=1e-9)
    np.testing.assert_allclose(hi, expected_hi, rtol=1e-9)
    (known,) = [line for line in ax.get_lines() if line.get_label().startswith("known floor")]
    assert np.allclose(known.get_ydata(), floor) and ax.get_ylim()[0] < floor
    with pytest.raises(ValueError, match="n_params given"):
        plot_loss(runs["tokens"], runs["val_loss"], fit, x_name="tokens")
    # Few measured sizes: a curve through each, so every point lies on its own model's curve.
    few = runs[runs["n_params"].isin(sorted(runs["n_params"].unique())[:3])]
    fig = plot_loss(few["tokens"], few["val_loss"], fit, x_name="tokens", n_params=few["n_params"])
    curves = [c for c in fig.axes[0].get_lines() if c.get_label().startswith("fit at N")]
    assert [c.get_label() for c in curves] == [
        f"fit at N = {n:.2g}" for n in sorted(few["n_params"].unique())
    ]


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
    assert "minimum outside sampled sizes" in legend(fig.axes[0])
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


def test_isoflop_figure_has_the_frontiers_of_both_approaches(runs) -> None:
    """One figure: the profiles, and beside them the minima with the fitted N_opt(C) and its band,
    and Approach 3's frontier from the same runs on the same axes."""
    iso = fit_isoflop(runs["budget"], runs["n_params"], runs["val_loss"], n_bootstrap=30)
    chin = fit_chinchilla(runs["n_params"], runs["tokens"], runs["val_loss"], n_bootstrap=30)
    fig = plot_isoflop(iso, chin)
    profiles, frontier = fig.axes[:2]
    assert profiles.get_xscale() == "log" and frontier.get_yscale() == "log"
    texts = legend(frontier)
    assert any(t.startswith("IsoFLOP (Approach 2)") and "a = " in t for t in texts)
    assert any(t.startswith("L(N, D) fit (Approach 3)") for t in texts)
    assert sum(t.startswith("95% band (") for t in texts) == 2  # one per approach
    bands = [c for c in frontier.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # one per approach
    iso_line, chin_line = (line for line in frontier.get_lines() if len(line.get_xdata()) > 1)
    c = iso_line.get_xdata()
    assert np.allclose(iso_line.get_ydata(), iso.predict(c)["N_opt"])
    assert np.allclose(chin_line.get_ydata(), compute_optimal_allocation(chin, c)["N_opt"])
    # Each budget's minimum is drawn at its (C, N_opt) with an error bar.
    drawn = {
        (round(line.get_xdata()[0]), round(line.get_ydata()[0]))
        for line in frontier.lines
        if len(line.get_xdata())
    }
    for budget in iso.extras["budgets"]:
        assert (round(budget["C"]), round(budget["N_opt"])) in drawn
    # An untrusted fit says so in the legend.
    iso.checks = [{"name": "design", "passed": False, "detail": "x", "params": []}]
    assert any("NOT trusted" in t for t in legend(plot_isoflop(iso).axes[1]))


def test_curves_plot_a_smoothed_line_and_validation_dots_per_run(isoflop_sweep: Path) -> None:
    curves = completed(load_curves(isoflop_sweep))
    n_runs = curves["run_id"].nunique()
    fig = plot_curves(curves, x="flops", loss="train/loss", val="val/loss")
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if len(line.get_xdata())]
    assert len(lines) == n_runs
    dots = [c for c in ax.collections if len(c.get_offsets())]
    assert len(dots) == n_runs
    assert sum(len(c.get_offsets()) for c in dots) == curves["val/loss"].notna().sum()
    assert ax.get_yscale() == "log" and "FLOPs" in ax.get_xlabel()
    assert "parameters" in fig.axes[1].get_ylabel()
    # The line is a running mean of the logged losses in log space: never outside their range.
    run = curves[curves["run_id"] == curves["run_id"].iloc[0]].dropna(subset=["train/loss"])
    (line,) = [
        line for line in lines if np.allclose(line.get_xdata(), np.sort(run["flops"].to_numpy()))
    ]
    y = line.get_ydata()
    assert run["train/loss"].min() <= y.min() and y.max() <= run["train/loss"].max()


def test_curves_draw_the_envelope_only_when_it_is_trusted(isoflop_sweep: Path) -> None:
    curves = completed(load_curves(isoflop_sweep)).dropna(subset=["val/loss"])
    fit = fit_envelope(curves["flops"], curves["val/loss"], curves["n_params"], n_bootstrap=0)
    fit.checks = [{"name": "design", "passed": True, "detail": "", "params": []}]
    ax = plot_curves(curves, loss="val/loss", fit=fit).axes[0]
    assert "envelope: lowest loss per FLOP bin" in legend(ax)
    fit.checks = [{"name": "design", "passed": False, "detail": "one end", "params": []}]
    ax = plot_curves(curves, loss="val/loss", fit=fit).axes[0]
    assert "envelope not drawn: its fit is not trusted" in legend(ax)
    assert "envelope: lowest loss per FLOP bin" not in legend(ax)


def test_power_law_plot_draws_the_points_the_law_and_its_band() -> None:
    """What is drawn is the data, the fitted law at the line's x, and the 95% band of the
    bootstrap refits' laws at that x; the y range holds the data and the line."""
    rng = np.random.default_rng(0)
    x = np.geomspace(1e4, 1e8, 12)
    y = power_law(x, 2.0, 40.0, 0.3) * np.exp(0.01 * rng.standard_normal(12))
    fit = fit_power_law(x, y, n_bootstrap=40)
    fig = plot_loss(x, y, fit)
    ax = fig.axes[0]
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert np.allclose(points.get_offsets(), np.column_stack([x, y]))
    (line,) = [line for line in ax.get_lines() if line.get_label().startswith("fit L")]
    line_x, line_y = line.get_data()
    assert line_x.min() < x.min() and line_x.max() > x.max()
    assert np.allclose(line_y, power_law(line_x, **fit.params))
    draws = fit.extras["bootstrap"]
    per_draw = power_law(line_x[:, None], *(np.array(draws[k]) for k in ("E", "A", "alpha")))
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    lo, hi = percentile_band(per_draw)
    assert np.allclose(band_edges(band, line_x), (lo, hi), rtol=1e-9)
    assert np.all(lo <= line_y * 1.001) and np.all(line_y <= hi * 1.001)
    assert "95% band (40 bootstrap refits)" in legend(ax)
    bottom, top = ax.get_ylim()
    assert bottom <= min(y.min(), line_y.min()) and top >= max(y.max(), line_y.max())
    # Without draws there is no band, and the legend says why.
    bare = plot_loss(x, y, fit_power_law(x, y, n_bootstrap=0)).axes[0]
    assert not [c for c in bare.collections if isinstance(c, PolyCollection)]
    assert "no band: no bootstrap draws (n_bootstrap=0)" in legend(bare)


def test_a_band_wider_than_the_data_is_cut_to_the_data() -> None:
    """An unidentified fit's band can span decades; the y range stays the data's and the law's
    (A of every refit scaled up here: a band far above the points)."""
    x = np.geomspace(1e4, 1e8, 8)
    y = power_law(x, 2.0, 40.0, 0.3)
    fit = fit_power_law(x, y, n_bootstrap=20)
    fit.extras["bootstrap"]["A"] = [a * 1e3 for a in fit.extras["bootstrap"]["A"]]
    ax = plot_loss(x, y, fit).axes[0]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert band.get_paths()[0].vertices[:, 1].max() > 10 * y.max()
    (line,) = [line for line in ax.get_lines() if line.get_label().startswith("fit L")]
    shown = np.concatenate([y, line.get_ydata(), [fit.params["E"]]])  # E: a dotted line
    assert ax.get_ylim() == pytest.approx((shown.min() / 1.05, shown.max() * 1.05))


def test_an_E_far_below_the_data_is_named_not_drawn_to_scale() -> None:
    """E = 1e-20 (not identified) on the y range would squash the points into a sliver."""
    x = np.geomspace(1e4, 1e8, 8)
    y = power_law(x, 2.0, 40.0, 0.3)
    fit = fit_power_law(x, y, n_bootstrap=0)
    fit.params["E"] = 1e-20
    ax = plot_loss(x, y, fit).axes[0]
    assert "irreducible loss E = 1e-20, below" in legend(ax)
    (line,) = [line for line in ax.get_lines() if line.get_label().startswith("fit L")]
    assert ax.get_ylim()[0] == pytest.approx(min(y.min(), line.get_ydata().min()) / 1.05)


def test_plot_loss_draws_on_a_given_axes() -> None:
    x = np.geomspace(1e4, 1e8, 8)
    fit = fit_power_law(x, power_law(x, 2.0, 40.0, 0.3), n_bootstrap=0)
    ax = Figure().add_subplot()
    assert plot_loss(x, power_law(x, 2.0, 40.0, 0.3), fit, ax=ax) is ax.figure
    assert len(ax.figure.axes) == 1 and ax.get_xscale() == "log"
    assert [line.get_label() for line in ax.get_lines()][0].startswith("fit L")


def test_plot_loss_shows_the_seeds_behind_each_mean() -> None:
    x = np.geomspace(1e4, 1e8, 8)
    y = power_law(x, 2.0, 40.0, 0.3)
    fit = fit_power_law(x, y, n_bootstrap=0)
    singles = np.repeat(x, 2), np.repeat(y, 2) * np.tile([0.9, 1.1], 8)
    ax = plot_loss(x, y, fit, seeds=singles).axes[0]
    assert {"single seeds", "means over seeds"} <= set(legend(ax))
    # The y range holds every single run, not only the means.
    assert ax.get_ylim()[0] <= singles[1].min() and ax.get_ylim()[1] >= singles[1].max()
