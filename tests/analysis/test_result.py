"""FitResult in a notebook: a repr that fits a screen, summary() as a table, plot() for every law,
and the README's notebook snippet, run as written."""

from __future__ import annotations

import copy
import re
import shutil
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure

from scalinglab.analysis.laws import chinchilla_loss, fit_chinchilla, fit_power_law, power_law
from scalinglab.analysis.laws.envelope import fit_envelope
from scalinglab.analysis.laws.isoflop import fit_isoflop
from scalinglab.analysis.load import completed, load_curves, load_runs
from scalinglab.analysis.result import FitResult

README = Path(__file__).parents[2] / "README.md"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")  # plot() without ax opens pyplot figures


@pytest.fixture(scope="module")
def power() -> tuple[np.ndarray, np.ndarray, FitResult]:
    """A power law at 200 bootstrap draws: the size whose repr was 9,452 characters."""
    x = np.geomspace(1e4, 1e8, 12)
    y = power_law(x, 2.0, 40.0, 0.3) * np.exp(0.01 * np.random.default_rng(0).standard_normal(12))
    return x, y, fit_power_law(x, y, n_bootstrap=200)


@pytest.fixture(scope="module")
def runs(isoflop_sweep: Path) -> pd.DataFrame:
    return completed(load_runs(isoflop_sweep))


def failing(fit: FitResult, name: str, detail: str, params: list[str]) -> FitResult:
    return replace(
        fit, checks=[{"name": name, "passed": False, "detail": detail, "params": params}]
    )


def test_repr_fits_a_screen_and_shows_no_draws(power) -> None:
    _, _, fit = power
    text = repr(fit)
    lines = text.splitlines()
    assert lines[0] == "FitResult(power, 12 points, trusted)"
    assert len(text) < 600 and len(lines) == 4 and max(map(len, lines)) <= 100
    for name, value in fit.params.items():
        lo, hi = fit.ci95[name]
        (line,) = [line for line in lines if line.split()[0] == name]
        assert f"{value:.4g}" in line and f"[{lo:.4g}, {hi:.4g}]" in line
    assert repr(replace(fit, extras={})) == text  # draws and data never shown
    assert str(fit) == text


def test_repr_says_not_trusted_with_each_failing_check_on_one_line(power) -> None:
    _, _, fit = power
    detail = "E's 95% interval reaches its lower bound 0 " + "and more words " * 20
    text = repr(failing(fit, "bounds", detail, ["E"]))
    lines = text.splitlines()
    assert lines[0] == "FitResult(power, 12 points, NOT TRUSTED)"
    assert lines[1].startswith("  failed bounds: E's 95% interval") and lines[1].endswith("…")
    assert len(lines[1]) <= 102  # indent + the width
    (e_line,) = [line for line in lines if line.split()[0] == "E"]
    assert e_line.endswith("(not identified)")
    not_converged = repr(replace(fit, converged=False, message="max iterations"))
    assert "failed converged: the optimiser did not converge: max iterations" in not_converged


def test_summary_is_a_table_of_values_intervals_and_checks(power) -> None:
    _, _, fit = power
    table = fit.summary()
    assert list(table.index) == ["E", "A", "alpha"]
    assert table["value"].to_dict() == fit.params
    assert (table[["ci95_lo", "ci95_hi"]].apply(tuple, axis=1).to_dict()) == fit.ci95
    assert set(table["failed_checks"]) == {"none"} and table.attrs["trusted"] is True
    assert table.attrs["law"] == "power" and table.attrs["n_points"] == 12

    # A failing check names the parameters it concerns; one about the whole fit concerns all.
    untrusted = failing(fit, "bounds", "E at 0", ["E"])
    untrusted.checks.append({"name": "design", "passed": False, "detail": "few", "params": []})
    table = untrusted.summary()
    assert table.loc["E", "failed_checks"] == "bounds, design"
    assert table.loc["alpha", "failed_checks"] == "design"
    assert table.loc["E", "identified"] == "no" and table.loc["alpha", "identified"] == "yes"
    assert table.attrs["trusted"] is False


def test_power_plot_draws_its_data_law_and_band(power) -> None:
    x, y, fit = power
    ax = fit.plot()
    assert isinstance(ax, Axes) and ax.figure.get_axes() == [ax]
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert np.allclose(points.get_offsets(), np.column_stack([x, y]))
    (line,) = [line for line in ax.get_lines() if line.get_label().startswith("fit L")]
    assert np.allclose(line.get_ydata(), fit.predict(line.get_xdata()))
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1
    # On a given Axes, with the options of plot_loss.
    given = Figure().add_subplot()
    assert fit.plot(ax=given, x_name="flops") is given
    assert given.get_xlabel() == "training compute C (FLOPs)"


def test_chinchilla_plot_draws_the_runs_and_the_law_at_a_few_token_counts(runs) -> None:
    fit = fit_chinchilla(runs["n_params"], runs["tokens"], runs["val_loss"], n_bootstrap=8)
    ax = fit.plot()
    points = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert np.allclose(points[0].get_offsets()[:, 1], runs["val_loss"])
    curves = [line for line in ax.get_lines() if line.get_label().startswith("fit at D")]
    assert len(curves) == 4
    n_grid, loss_grid = curves[0].get_data()
    assert np.allclose(loss_grid, chinchilla_loss(n_grid, runs["tokens"].min(), **fit.params))
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 4


def test_frontier_fits_plot_their_optima_and_law(runs, isoflop_sweep: Path) -> None:
    iso = fit_isoflop(runs["budget.flops"], runs["n_params"], runs["val_loss"], n_bootstrap=8)
    curves = completed(load_curves(isoflop_sweep)).dropna(subset=["val/loss"])
    envelope = fit_envelope(curves["flops"], curves["val/loss"], curves["n_params"], n_bootstrap=8)
    for fit in (iso, envelope):
        ax = fit.plot()
        (line,) = [line for line in ax.get_lines() if line.get_label().startswith("N_opt")]
        assert np.allclose(line.get_ydata(), fit.predict(line.get_xdata())["N_opt"])
        assert ax.get_title() == f"Compute-optimal model size ({fit.law})"
    lines = [line for line in iso.plot().lines if len(line.get_xdata())]
    drawn = {(line.get_xdata()[0], line.get_ydata()[0]) for line in lines}
    assert {(b["C"], b["N_opt"]) for b in iso.extras["budgets"]} <= drawn


def test_plot_names_what_to_call_where_one_axes_cannot_hold_the_fit(power) -> None:
    hparams = FitResult(law="hparams", params={"k_lr": 1.0, "e_lr": -0.1, "k_bs": 1, "e_bs": 0.3})
    with pytest.raises(ValueError, match=r"plot_hparams\(fit\)"):
        hparams.plot()
    x, y, fit = power
    document = copy.deepcopy(fit.to_dict())  # to_dict shares extras with the fit
    del document["extras"]["data"]  # a fit saved before it kept its data
    with pytest.raises(ValueError, match=r"carries no data .*plot_loss\(x, y, fit\)"):
        FitResult.from_dict(document).plot()
    assert plt.get_fignums() == []  # nothing half-drawn left behind


def test_readme_notebook_snippet_runs_as_written(isoflop_sweep: Path, tmp_path: Path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (snippet,) = [block for block in blocks if "fit.plot()" in block]
    for step in ("load_runs(", "fit_isoflop(", "fit.plot()", "fit.summary()"):
        assert step in snippet
    shutil.copytree(isoflop_sweep, tmp_path / "outputs" / "sweeps" / "demo")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, str(README), "exec"), namespace)  # noqa: S102
    assert namespace["fit"].law == "isoflop" and namespace["fit"].trusted
    assert list(namespace["table"].index) == ["k_N", "a", "k_D", "b"]
    assert (tmp_path / "isoflop_fit.png").read_bytes()[:4] == b"\x89PNG"
