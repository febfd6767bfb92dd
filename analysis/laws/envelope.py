"""The training-curve envelope, Chinchilla's Approach 1: the lowest loss at each FLOP count across
training curves, the model size reaching it, then N_opt = k_N C^a and D_opt = C / (6 N_opt).

Units: flops in FLOPs, n_params in parameters, losses in nats per token.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

import scalinglab.analysis.checks as checks
from scalinglab.analysis.fitting import bootstrap
from scalinglab.analysis.frontier import PowerFrontier, frontier_intervals, loglog_fit
from scalinglab.analysis.inputs import aligned, count, positive_1d, same_length
from scalinglab.analysis.registry import Command, Law, ReportEntry
from scalinglab.analysis.result import FitResult

# Logged steps that the training curves' running mean spans.
SMOOTH = 5


class EnvelopeExtras(TypedDict):
    envelope: list[dict[str, Any]]  # per FLOP bin: C, loss, N (the winner), in_range
    n_bootstrap: int
    n_bootstrap_ok: int
    bootstrap: dict[str, list[float]]


def _envelope_points(flops, loss, n_params, edges, smallest, largest):
    """Per log-spaced FLOP bin, the row with the lowest loss: (C, loss, N, in_range) where the
    winner being the smallest or largest model means the optimum may lie outside the sweep."""
    bins = np.clip(np.searchsorted(edges, flops, side="right") - 1, 0, len(edges) - 2)
    order = np.lexsort((loss, bins))  # by bin, then loss: the first row of each bin wins
    first = order[np.r_[True, bins[order][1:] != bins[order][:-1]]]
    wins = n_params[first]
    return flops[first], loss[first], wins, (wins > smallest) & (wins < largest)


def _inputs(flops, loss, n_params, run_id, schedule_end, n_bins: int) -> tuple:
    """The curves' rows as arrays of one length that can make an envelope, or a ValueError."""
    aligned(flops=flops, loss=loss, n_params=n_params, run_id=run_id, schedule_end=schedule_end)
    flops, loss = positive_1d("flops", flops), positive_1d("loss", loss)
    n_params = positive_1d("n_params", n_params)
    arrays = {"flops": flops, "loss": loss, "n_params": n_params}
    if run_id is not None:
        arrays["run_id"] = run_id = np.asarray(run_id)
    if schedule_end is not None:
        arrays["schedule_end"] = schedule_end = positive_1d("schedule_end", schedule_end)
    same_length(**arrays)
    if np.unique(n_params).size < 3:
        raise ValueError(
            f"the envelope needs at least three model sizes, got {np.unique(n_params).size}"
        )
    count("n_bins", n_bins, 2)
    return flops, loss, n_params, run_id, schedule_end


def fit_envelope(
    flops: np.ndarray,
    loss: np.ndarray,
    n_params: np.ndarray,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    run_id: np.ndarray | None = None,
    n_bins: int = 40,
    schedule_end: np.ndarray | None = None,
) -> FitResult:
    """Chinchilla Approach 1: the lowest loss reached at each FLOP count across training curves,
    the model size reaching it, then N_opt = k_N C^a and D_opt = C / (6 N_opt) = k_D C^b.

    flops, loss, n_params: one row per (run, logged step): cumulative training FLOPs, loss there,
    the run's parameters. run_id: curve label per row (default: n_params, one curve per size).
    n_bins: log-spaced FLOP bins over the logged range. Bins won by the smallest or largest model
    are left out of the fits (flagged in extras), since the optimum may lie beyond the sweep.
    Intervals: bootstrap over whole curves (runs).
    params and derived: k_N, a, k_D, b. objective: sum of squared log10 residuals of the N_opt law.
    extras["envelope"]: per bin {C, loss, N, in_range}. extras["bootstrap"]: {k_N, a, k_D, b:
    per-resample values}, the i-th entries from one resample, for frontier_band; {} without.
    schedule_end: per row, the token count at which its curve's schedule ends (the run's final
    tokens); default: each curve's last FLOPs / (6 N), which the attention term inflates.
    checks: design (the curves' schedules end at 3 or more distinct token counts: intermediate
    points of schedules that all end at one count are not compute-optimal losses), intervals
    (a, b exclude 0; N_opt at the largest envelope point used within a factor 10). No
    extrapolation check: leave_largest_out does not refit envelopes.
    """
    flops, loss, n_params, run_id, schedule_end = _inputs(
        flops, loss, n_params, run_id, schedule_end, n_bins
    )
    n = len(flops)
    edges = np.geomspace(flops.min(), flops.max(), n_bins + 1)
    smallest, largest = n_params.min(), n_params.max()

    def law(idx: np.ndarray) -> dict[str, float] | None:
        c, _, wins, inside = _envelope_points(
            flops[idx], loss[idx], n_params[idx], edges, smallest, largest
        )
        if np.unique(wins[inside]).size < 2:
            return None
        k_n, a, _ = loglog_fit(c[inside], wins[inside])
        k_d, b, _ = loglog_fit(c[inside], c[inside] / (6.0 * wins[inside]))
        return {"k_N": k_n, "a": a, "k_D": k_d, "b": b}

    values = law(np.arange(n))
    if values is None:
        raise ValueError(
            "the envelope has fewer than two model sizes winning FLOP bins strictly between the "
            "smallest and largest model: widen the sweep of sizes or train longer"
        )
    c, best_loss, wins, inside = _envelope_points(flops, loss, n_params, edges, smallest, largest)
    _, _, objective = loglog_fit(c[inside], wins[inside])
    curve = n_params if run_id is None else run_id
    boot = bootstrap(law, n, n_bootstrap=n_bootstrap, seed=seed, groups=curve)
    extras: EnvelopeExtras = {
        "envelope": [
            {"C": float(ci), "loss": float(li), "N": float(ni), "in_range": bool(ok)}
            for ci, li, ni, ok in zip(c, best_loss, wins, inside, strict=True)
        ],
        **boot.extras(),
    }
    result = FitResult(
        law="envelope",
        params=dict(values),
        ci95=boot.ci95,
        derived=dict(values),
        n_points=int(inside.sum()),
        converged=True,
        message=f"{int(inside.sum())} of {len(c)} envelope points used; "
        f"{int((~inside).sum())} won by the smallest or largest model left out" + boot.note,
        objective=objective,
        extras=dict(extras),
    )
    result.checks = [
        checks.schedule_ends(_curve_ends(flops, n_params, curve, schedule_end), list(values)),
        frontier_intervals(result, float(c[inside].max())),
    ]
    return result


def _curve_ends(flops, n_params, curve_id, schedule_end) -> np.ndarray:
    """The token count at which each curve's schedule ends: its schedule_end, else its last FLOPs
    over 6 N."""
    _, curve = np.unique(curve_id, return_inverse=True)
    if schedule_end is None:
        schedule_end = flops / (6.0 * n_params)
    ends = np.zeros(curve.max() + 1)
    np.maximum.at(ends, curve, schedule_end)
    return ends


class EnvelopeLaw(PowerFrontier):
    name = "envelope"
    approach = 1
    rows = "envelope"
    fields = {"N_opt": "N"}
    held_out = Law.held_out  # envelopes are not refitted without their largest budget
    command = Command(
        "envelope",
        "training-curve envelope, Approach 1",
        "From every run's training curve (metrics.csv), the lowest loss at each FLOP count and "
        "the model size reaching it, then N_opt = k_N C^a through those (Approach 1). "
        "Figures: frontier_envelope, curves.",
        order=40,
    )
    report = (ReportEntry("Training-curve envelope, Approach 1", 40),)

    def plot(self, fit: FitResult, ax: Any = None, **options: Any) -> Any:
        from scalinglab.analysis.plotting import new_axes, plot_frontier

        ax = new_axes() if ax is None else ax
        used = [p["C"] for p in fit.extras["envelope"] if p["in_range"]]
        plot_frontier(fit, used, ax=ax, **options)
        return ax

    def analyse(self, study: Any, fitted: dict, **options: Any) -> Any:
        return analyse_envelope(study)

    def companions(self, study: Any, section: Any) -> list[Any]:
        """The training curves the envelope is drawn from, with it on them when trusted."""
        if study.args.csv:
            return []
        try:
            return [training_curves(study, section.fit)]
        except ValueError as error:  # no metrics.csv: no curves to draw
            print(f"no training curves: {error}")
            return []


LAWS = [EnvelopeLaw()]


def analyse_envelope(study: Any) -> Any:
    """Approach 1 over every run's training curve (metrics.csv)."""
    import pandas as pd

    from scalinglab.analysis.frontier import allocations
    from scalinglab.analysis.plotting import plot_frontier
    from scalinglab.analysis.section import Section
    from scalinglab.analysis.study import fit_options

    curves, loss = study.curves
    curves = curves.dropna(subset=[loss])
    ends = curves["schedule_end"]
    fit = fit_envelope(
        curves["flops"],
        curves[loss],
        curves["n_params"],
        run_id=curves["run_id"],
        schedule_end=ends if ends.notna().all() and (ends > 0).all() else None,
        **fit_options(study),
    )
    used = [p["C"] for p in fit.extras["envelope"] if p["in_range"]]
    untrusted = "" if fit.trusted else " The fit is not trusted: the frontier is not a result."
    n_curves = curves["run_id"].nunique()
    return Section(
        description=f"The lowest {loss} at each FLOP count over {n_curves} "
        "training curves, and the model size reaching it: N_opt = k_N C^a.",
        fit=fit,
        figures={"frontier_envelope": plot_frontier(fit, used)},
        captions={
            "frontier_envelope": "The model sizes winning the envelope and the power law "
            "N_opt = k_N C^a fitted through them (Approach 1), with its 95% bootstrap band; "
            "grey: extrapolation." + untrusted,
        },
        tables={"Compute-optimal allocation": pd.DataFrame(allocations(fit, used))},
    )


def training_curves(study: Any, envelope: FitResult | None = None) -> Any:
    """Every run's curve (no fit): the smoothed training loss and the validations against
    compute, with the Approach-1 envelope when that fit is trusted."""
    from scalinglab.analysis.plotting import plot_curves
    from scalinglab.analysis.section import Section

    curves, _ = study.curves
    n_runs = curves["run_id"].nunique()
    drawn = envelope is not None and envelope.trusted
    envelope_note = {
        True: "; red: the envelope, the lowest loss at each FLOP count, that Approach 1 fits.",
        False: "; the envelope is not drawn: its fit is not trusted.",
    }
    return Section(
        title="Training curves",
        description=f"{n_runs} runs: what every fit below is made of.",
        figures={"curves": plot_curves(curves, x="flops", fit=envelope, smooth=SMOOTH)},
        captions={
            "curves": f"Training loss (running mean over {SMOOTH} logged steps) and validation loss "
            f"(dots) of {n_runs} runs against training FLOPs, coloured by model size"
            + (envelope_note[drawn] if envelope is not None else ".")
        },
    )
