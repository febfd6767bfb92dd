"""Figures for scaling studies. Each function takes data and fits and returns a matplotlib Figure;
`save` writes it as PNG and SVG.

Figures are built with `matplotlib.figure.Figure` (rendered by Agg), never pyplot, so no global
state or display is involved and nothing leaks between calls. The one-panel figures (plot_loss,
plot_frontier) draw on a given `ax` instead when one is passed (a notebook's, FitResult.plot's),
and return its figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, LogLocator, NullFormatter

from scalinglab.analysis.frontier import compute_optimal_allocation, frontier_band
from scalinglab.analysis.registry import get as get_law
from scalinglab.analysis.result import FitResult

AXIS_LABELS = {
    "x": "x",
    "n_params": "parameters N",
    "n_params_nonembedding": "non-embedding parameters N",
    "tokens": "training tokens D",
    "flops": "training compute C (FLOPs)",
    "loss": "loss (nats/token)",
    "lr": "peak learning rate",
}
SYMBOLS = {"n_params": "N", "tokens": "D", "flops": "C"}
COLORMAP = "viridis"


def _figure(
    title: str, size: tuple[float, float] = (6.4, 4.6), ax: Axes | None = None
) -> tuple[Figure, Axes]:
    """A new one-panel figure, or `ax` and its figure; titled and gridded."""
    if ax is None:
        ax = Figure(figsize=size, layout="constrained").add_subplot()
    fig = ax.get_figure()
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


_LABEL_EVERY_TICK = 0.6  # decades: a narrower log axis labels every minor tick


def _plain_log_labels(axis: object) -> None:
    """Label a log axis spanning less than a decade or two (losses) with plain numbers, 2.4,
    not 2.4×10^0, minor ticks included."""
    axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axis.set_minor_locator(_LossLocator(subs="auto"))
    thresholds = (2, _LABEL_EVERY_TICK)  # fewer labels beyond, none beyond 2 decades
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=thresholds))


class _LossLocator(LogLocator):
    """Minor ticks of a loss axis. Matplotlib's are 2..9 x 10^k, none between 1 and 2 where most
    losses in nats lie; on an axis narrow enough to label every tick, fifths there too."""

    def tick_values(self, vmin: float, vmax: float) -> np.ndarray:
        narrow = abs(np.log10(vmax / vmin)) < _LABEL_EVERY_TICK
        self.set_params(subs=(1.2, 1.4, 1.6, 1.8, *range(2, 10)) if narrow else "auto")
        return super().tick_values(vmin, vmax)


def colour_scale(fig: Figure, ax: Axes, norm: Normalize, label: str) -> Colormap:
    """A colorbar for `norm`; returns the colormap to draw with."""
    cmap = colormaps[COLORMAP]
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label)
    return cmap


def log_norm(values: Sequence[float]) -> LogNorm:
    lo, hi = np.nanmin(values), np.nanmax(values)
    return LogNorm(lo, hi if hi > lo else lo * 1.01)


def error_bar(value: float, interval: Sequence[float] | None) -> list[list[float]] | None:
    """Matplotlib's [[below], [above]] for an interval; None without one. A percentile interval
    need not contain the estimate (few resamples, skewed fits), so the arms are floored at 0."""
    if interval is None or not np.all(np.isfinite(interval)):
        return None
    lo, hi = interval
    return [[max(value - lo, 0.0)], [max(hi - value, 0.0)]]


def span(values: np.ndarray, below: float = 0.3, above: float = 0.3, n: int = 200) -> np.ndarray:
    """Log-spaced points covering `values`, extended by the given decades either side."""
    lo, hi = np.log10(np.nanmin(values)) - below, np.log10(np.nanmax(values)) + above
    return np.logspace(lo, hi, n)


def loss_band(
    fit: FitResult,
    x: np.ndarray | float,
    tokens: np.ndarray | float | None = None,
    *,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap band of a power or chinchilla fit's loss: at each x (chinchilla: at each
    (N, D) pair, either one a scalar), the central `level` percentile interval of the loss
    predicted by each resample's refitted law (extras["bootstrap"]). Each resample's parameters are
    used together, as in frontier_band. A ValueError if the fit has no draws."""
    draws = fit.extras.get("bootstrap")
    if not draws:
        raise ValueError(f"the {fit.law} fit has no bootstrap draws, so its loss has no band")
    per_draw = {name: np.asarray(draws[name], float) for name in fit.params}
    inputs = tuple(np.asarray(v, float)[..., None] for v in (x, tokens) if v is not None)
    with np.errstate(over="ignore"):  # an unidentified fit's draws may overflow: an open band
        losses = replace(fit, params=per_draw).predict(*inputs)  # x by resamples
    tail = 50.0 * (1.0 - level)  # as percentile_interval, vectorised over x
    lo, hi = np.nanpercentile(losses, [tail, 100.0 - tail], axis=-1)
    return lo, hi


def draw_band(
    ax: Axes, x: np.ndarray, fit: FitResult, band, *, color: object, legend: str | None = "band"
) -> None:
    """The 95% bootstrap band `band()` (lo, hi) of `fit` over x, or a legend entry saying it has
    none: never a stand-in band. legend: what the entry calls it; None: no entry (a second band
    of one fit)."""
    if fit.extras.get("bootstrap"):
        lo, hi = band()
        n_ok = fit.extras["n_bootstrap_ok"]
        label = f"95% {legend} ({n_ok} bootstrap refits)" if legend else "_nolegend_"
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0, label=label)
    elif legend:
        n_bootstrap = fit.extras.get("n_bootstrap", 0)
        why = f"none of {n_bootstrap} resamples fitted" if n_bootstrap else "n_bootstrap=0"
        ax.plot([], [], " ", label=f"no band: no bootstrap draws ({why})")


def _short_number(value: float, _position: object = None) -> str:
    """Tick labels of one style within an axis: 2000, 5e5, 1e6 (never 500000 beside 1e+06)."""
    return f"{value:g}" if value < 1e5 else f"{value:.0e}".replace("e+0", "e").replace("e+", "e")


def with_ci(fit: FitResult, name: str) -> str:
    value = fit.params.get(name, fit.derived.get(name))
    if name in fit.ci95:
        lo, hi = fit.ci95[name]
        return f"{name} = {value:.3g} [{lo:.3g}, {hi:.3g}]"
    return f"{name} = {value:.3g}"


def plot_loss(
    x: Sequence[float],
    loss: Sequence[float],
    fit: FitResult | None = None,
    *,
    x_name: str = "n_params",
    tokens: Sequence[float] | None = None,
    n_params: Sequence[float] | None = None,
    floor: float | None = None,
    seeds: tuple[Sequence[float], Sequence[float]] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Loss against x (x_name: n_params, tokens, flops, or x for any other), log-log, with the
    fitted law and its 95% bootstrap band (loss_band; the legend says when there is none).
    seeds: (x, loss) of the single runs when each point is a mean over seeds, drawn hollow
    behind them, so the spread between data orders shows beside the fit's band.

    tokens: colours the points by training tokens; a chinchilla fit (x_name="n_params") is
    then drawn as L(N) at a few token counts spanning the data, in the same colours, each with
    its band. n_params, with x_name="tokens": the other slice, L(D) at a few model sizes.
    floor: a loss the data is known to have as its floor (a synthetic language's
    irreducible_loss), drawn beside the fitted E. The y range is the data's and the fitted
    curves': a band wider than that is cut.
    """
    x, loss = np.asarray(x, float), np.asarray(loss, float)
    fig, ax = _figure(f"Loss vs {AXIS_LABELS[x_name].split(' (')[0]}", ax=ax)
    ax.set(xscale="log", yscale="log", xlabel=AXIS_LABELS[x_name], ylabel=AXIS_LABELS["loss"])
    _plain_log_labels(ax.yaxis)
    curve_x = span(x)
    if np.log10(curve_x[-1] / curve_x[0]) < 2.5:  # one or two powers of 10: label 2s and 5s too
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(_short_number)
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide within a decade
    curves = []  # the law's losses drawn (and E near them): the y range holds them and the data
    if seeds is not None:
        ax.scatter(*seeds, s=14, facecolors="none", edgecolors="0.4", lw=0.8, label="single seeds")
        curves.append(np.asarray(seeds[1], float))
    # The points are coloured by the other variable of L(N, D): tokens, or sizes for L(D).
    other_name = "n_params" if x_name == "tokens" and n_params is not None else "tokens"
    other = n_params if other_name == "n_params" else tokens
    one_level = other is not None and np.nanmin(other) == np.nanmax(other)
    points = "means over seeds" if seeds is not None else "runs"
    law = None if fit is None else get_law(fit.law)
    scale = None
    if other is None or (one_level and not getattr(law, "curves_per_level", False)):
        symbol = SYMBOLS[other_name]
        label = f"{points} ({symbol} = {np.nanmin(other):.3g})" if one_level else points
        ax.scatter(x, loss, color="C0", zorder=3, label=label)
    else:
        other = np.asarray(other, float)
        norm = log_norm(other)
        cmap = colour_scale(fig, ax, norm, AXIS_LABELS[other_name])
        ax.scatter(x, loss, color=cmap(norm(other)), zorder=3)
        ax.scatter([], [], color="0.5", label=f"{points} (coloured by {SYMBOLS[other_name]})")
        scale = LossScale(other_name, other, cmap, norm)
    if law is not None:
        curves += law.draw_loss(
            ax, fit, curve_x, x_name=x_name, loss=loss, curves=curves, scale=scale
        )
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label=f"known floor {floor:.4g}")
        curves.append(np.array([floor]))
    if fit is not None:  # an unidentified fit's band can span decades: keep the data readable
        shown = np.concatenate([loss, *curves])
        ax.set_ylim(np.nanmin(shown) / 1.05, np.nanmax(shown) * 1.05)
    ax.legend(fontsize=8)
    return fig


@dataclass(frozen=True)
class LossScale:
    """How plot_loss coloured its points: by `other` (tokens or n_params, named `name`)."""

    name: str
    other: np.ndarray
    cmap: Colormap
    norm: LogNorm


def plot_data(fit: FitResult, ax: Axes | None, hint: str, draw) -> Axes:
    """FitResult.plot of a law fitted to points: draw(data, ax) the points it carries
    (extras["data"]) on `ax` (None: a new pyplot Axes), or a ValueError naming `hint`, the call
    that draws it from the data instead."""
    data = fit.extras.get("data")
    if data is None:
        raise ValueError(
            f"this {fit.law} fit carries no data (extras['data']; read from an older JSON?): "
            f"call scalinglab.analysis.{hint}"
        )
    ax = new_axes() if ax is None else ax
    draw(data, ax)
    return ax


def new_axes() -> Axes:
    """A one-panel pyplot figure's Axes (FitResult.plot without an ax: a notebook shows it)."""
    import matplotlib.pyplot as plt  # only here: the report's figures never touch pyplot

    _, ax = plt.subplots(figsize=(6.4, 4.6), layout="constrained")
    return ax


def draw_frontier(
    ax: Axes, fit: FitResult, compute: np.ndarray, *, color: str, label: str, ls: str = "-"
) -> None:
    """N_opt(C) of a chinchilla, isoflop or envelope fit over `compute`, with its 95% bootstrap
    band (frontier_band), or a legend entry saying it has none: never a stand-in band."""
    n_opt = compute_optimal_allocation(fit, compute)["N_opt"]
    ax.plot(compute, n_opt, color=color, ls=ls, label=f"{label}, {with_ci(fit, 'a')}")
    draw_band(ax, compute, fit, lambda: frontier_band(fit, compute), color=color)


def frontier_axes(ax: Axes, budgets: np.ndarray, beyond_decades: float) -> np.ndarray:
    """Log axes for N_opt(C) from the smallest budget to `beyond_decades` past the largest, the
    extrapolated part shaded; returns the compute grid."""
    compute = np.logspace(np.log10(budgets.min()), np.log10(budgets.max()) + beyond_decades, 100)
    ax.set(
        xscale="log", yscale="log", xlabel=AXIS_LABELS["flops"], ylabel="optimal parameters N_opt"
    )
    ax.axvspan(budgets.max(), compute.max(), color="0.92", zorder=0, label="extrapolation")
    return compute


def trust_label(label: str, fit: FitResult) -> str:
    return label if fit.trusted else f"{label} (NOT trusted)"


def plot_frontier(
    fit: FitResult,
    budgets: Sequence[float],
    *,
    beyond_decades: float = 1.0,
    ax: Axes | None = None,
) -> Figure:
    """The compute-optimal model size N_opt(C) of a chinchilla, isoflop or envelope fit, from the
    smallest budget to `beyond_decades` past the largest, with its 95% bootstrap band.

    The band is frontier_band: at each C, the 2.5-97.5 percentiles of N_opt(C) over the
    bootstrap resamples' refitted laws, so it includes the intercept's uncertainty and its
    correlation with the exponent. A fit without bootstrap draws (n_bootstrap=0) gets no band,
    and the legend says so. The measured optima (IsoFLOP minima with their intervals, or the
    envelope's winners) are drawn as points; flagged ones hollow.
    """
    fig, ax = _figure(trust_label(f"Compute-optimal model size ({fit.law})", fit), ax=ax)
    compute = frontier_axes(ax, np.asarray(budgets, float), beyond_decades)
    draw_frontier(ax, fit, compute, color="C0", label="N_opt ∝ C^a")
    for point in fit.extras.get("budgets", []):
        ax.errorbar(
            point["C"],
            point["N_opt"],
            yerr=error_bar(point["N_opt"], point.get("N_opt_ci95")),
            fmt="o",
            color="C1",
            capsize=3,
            mfc="C1" if point["in_range"] else "white",
        )
    envelope = [p for p in fit.extras.get("envelope", []) if p["in_range"]]
    if envelope:
        ax.scatter([p["C"] for p in envelope], [p["N"] for p in envelope], color="C1", s=12)
    if fit.extras.get("budgets") or envelope:
        ax.plot([], [], "o", color="C1", label="measured optima")
    ax.legend(fontsize=8)
    return fig


def plot_curves(
    curves: pd.DataFrame,
    *,
    x: str = "flops",
    loss: str = "train/loss",
    val: str | None = "val/loss",
    fit: FitResult | None = None,
    smooth: int = 5,
) -> Figure:
    """Every run's training curve, log-log against tokens or flops, coloured by its parameter
    count: `loss` (train/loss) as a line, smoothed by a centred running mean over `smooth` logged
    steps in log space, and the `val` column's points (validations) as dots. An envelope fit adds
    its points, the lowest loss in each FLOP bin, when it is trusted (otherwise the legend says
    it was left out)."""
    curves = curves.sort_values(["run_id", x])
    fig, ax = _figure(f"Training curves ({curves['run_id'].nunique()} runs)")
    ax.set(xscale="log", yscale="log", xlabel=AXIS_LABELS[x], ylabel=AXIS_LABELS["loss"])
    _plain_log_labels(ax.yaxis)
    norm = log_norm(curves["n_params"])
    cmap = colour_scale(fig, ax, norm, AXIS_LABELS["n_params"])
    show_val = val is not None and val != loss and val in curves
    for _, run in curves.groupby("run_id"):
        color = cmap(norm(run["n_params"].iloc[0]))
        line = run.dropna(subset=[x, loss])
        log_loss = np.log(line[loss]).rolling(smooth, center=True, min_periods=1).mean()
        ax.plot(line[x], np.exp(log_loss), color=color, lw=1, alpha=0.85)
        if show_val:
            points = run.dropna(subset=[x, val])
            ax.scatter(points[x], points[val], color=color, s=14, edgecolors="k", lw=0.4, zorder=3)
    ax.plot([], [], color="0.4", lw=1, label=f"{loss} (running mean of {smooth} logged steps)")
    if show_val:
        ax.scatter([], [], color="0.6", s=14, edgecolors="k", lw=0.4, label=val)
    envelope = [p for p in (fit.extras.get("envelope", []) if fit else []) if p["in_range"]]
    if envelope and fit.trusted:
        ax.scatter(
            [p["C"] for p in envelope],
            [p["loss"] for p in envelope],
            color="C3",
            s=10,
            zorder=4,
            label="envelope: lowest loss per FLOP bin",
        )
    elif fit is not None:
        ax.plot([], [], " ", label="envelope not drawn: its fit is not trusted")
    ax.legend(fontsize=8)
    return fig


def save(
    fig: Figure, directory: str | Path, name: str, formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    """Write `fig` as DIRECTORY/NAME.png and .svg (or the given formats); returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.{suffix}" for suffix in formats]
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths
