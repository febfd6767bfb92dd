"""The critical batch size (McCandlish et al. 2018): its fit, checks, figure and command.

To reach a given loss, a run of batch size B takes S steps and E = B·S examples (sequences or
tokens: B's unit). Their tradeoff is S = S_min·(1 + B_noise/B), equivalently E = E_min·(1 +
B/B_noise) with E_min = S_min·B_noise: below B_noise a larger batch saves steps at little cost in
examples, above it extra parallelism stops buying time. The critical batch size B_crit = E_min /
S_min (= B_noise under this law) is where a run takes twice the fewest steps and twice the fewest
examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np

import scalinglab.analysis.checks as checks
from scalinglab.analysis.fitting import bootstrap
from scalinglab.analysis.inputs import aligned, positive_1d, same_length
from scalinglab.analysis.registry import Argument, Command, Law
from scalinglab.analysis.result import FitResult

MIN_BATCH_SIZES = 4  # distinct batch sizes a group's tradeoff is fitted to
MAX_SHAPE_RMS = 0.1  # rms of the log residuals (about 10%): the data has the law's shape
PARAMS = ("S_min", "B_noise", "E_min", "B_crit")


class BatchGroup(TypedDict):
    group: str
    params: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    data: dict[str, list[float]]  # {batch, steps}
    rms_log_residual: float


class BatchExtras(TypedDict, total=False):
    groups: list[BatchGroup]
    dropped: list[str]  # targets, or groups, left out, each with its reason
    unit: str  # what B counts: sequences or tokens per step
    n_bootstrap: int


def steps_needed(B: np.ndarray, S_min: float, B_noise: float) -> np.ndarray:
    """S = S_min·(1 + B_noise/B): the steps a batch of B takes to reach the target."""
    return S_min * (1.0 + B_noise / np.asarray(B, dtype=float))


def _start(B: np.ndarray, S: np.ndarray) -> np.ndarray:
    """(log S_min, log B_noise) from S = a + b/B by least squares (a = S_min, b = S_min·B_noise),
    or the data's own scale where that line is not positive."""
    b, a = np.polyfit(1.0 / B, S, 1)
    if a <= 0 or b <= 0:
        a, b = S.min() / 2, S.min() / 2 * np.median(B)
    return np.log([a, b / a])


def _solve(B: np.ndarray, S: np.ndarray, theta0: np.ndarray) -> Any:
    from scipy.optimize import least_squares  # only when fitting: the CLI's help stays light

    def residuals(theta: np.ndarray) -> np.ndarray:
        return np.log(steps_needed(B, np.exp(theta[0]), np.exp(theta[1]))) - np.log(S)

    # A box 10 e-folds past the data: where S ∝ 1/B throughout, B_noise runs off to it (and the
    # bracket check says B_crit is beyond the batch sizes) instead of overflowing.
    lo = np.log([S.min(), B.min()]) - [10.0, 10.0]
    hi = np.log([S.max(), B.max()]) + [1.0, 10.0]
    theta0 = np.clip(theta0, lo + 1e-9, hi - 1e-9)
    return least_squares(residuals, theta0, bounds=(lo, hi), method="trf", xtol=1e-12, ftol=1e-12)


def _derived(theta: np.ndarray) -> dict[str, float]:
    S_min, B_noise = float(np.exp(theta[0])), float(np.exp(theta[1]))
    E_min = S_min * B_noise
    return {"S_min": S_min, "B_noise": B_noise, "E_min": E_min, "B_crit": E_min / S_min}


def _fit_group(B: np.ndarray, S: np.ndarray, n_bootstrap: int, seed: int) -> tuple[dict, Any]:
    fit = _solve(B, S, _start(B, S))

    def fit_resample(idx: np.ndarray) -> dict[str, float] | None:
        if np.unique(B[idx]).size < 2:
            return None
        refit = _solve(B[idx], S[idx], fit.x)
        return _derived(refit.x) if refit.success else None

    boot = bootstrap(fit_resample, len(B), n_bootstrap=n_bootstrap, seed=seed)
    return {"fit": fit, "params": _derived(fit.x), "boot": boot}, fit


def _group_checks(
    label: str, suffix: str, B: np.ndarray, params: dict, ci95: dict, rms: float
) -> list[dict]:
    """A group's checks: enough batch sizes, B_crit inside them, the law's shape, intervals;
    a failing one names the group's parameters (NAME + suffix) as not identified."""
    where = f"{label}: " if label else ""
    names = [f"{k}{suffix}" for k in PARAMS]
    crit = [f"{k}{suffix}" for k in ("B_noise", "B_crit", "E_min")]
    sizes = np.unique(B)
    B_crit = params["B_crit"]
    below, above = int((sizes < B_crit).sum()), int((sizes > B_crit).sum())
    lo, hi = ci95.get("B_crit", (np.nan, np.nan))
    factor = hi / lo if np.isfinite([lo, hi]).all() and lo > 0 else np.inf
    return [
        checks.check(
            "design",
            sizes.size >= MIN_BATCH_SIZES,
            f"{where}{sizes.size} batch sizes; the law needs at least {MIN_BATCH_SIZES}",
            names,
        ),
        checks.check(
            "bracket",
            below >= 1 and above >= 1,
            f"{where}B_crit = {B_crit:.3g} with {below} batch sizes below it and {above} above "
            f"(measured {sizes.min():.3g} to {sizes.max():.3g}; rule: some on each side)",
            crit,
        ),
        checks.check(
            "shape",
            rms <= MAX_SHAPE_RMS,
            f"{where}the steps depart from S_min·(1 + B_noise/B) by {rms:.3f} rms in log "
            f"(rule: at most {MAX_SHAPE_RMS})",
            names,
            used=rms / MAX_SHAPE_RMS,
        ),
        checks.check(
            "intervals",
            factor <= checks.MAX_COEFFICIENT_FACTOR,
            f"{where}B_crit's 95% interval [{lo:.3g}, {hi:.3g}] spans a factor {factor:.3g} "
            f"(rule: at most {checks.MAX_COEFFICIENT_FACTOR:g})",
            crit,
        ),
    ]


def fit_critical_batch(
    batch: np.ndarray,
    steps: np.ndarray,
    groups: Sequence[Any] | None = None,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    unit: str = "sequences",
    dropped: Sequence[str] = (),
) -> FitResult:
    """Fit S = S_min·(1 + B_noise/B) to the steps S each batch size B took to reach one target
    loss, by least squares on log S, in each group (a model size, a target loss) of `groups`.

    params: S_min, B_noise, E_min = S_min·B_noise and B_crit = E_min/S_min, named `NAME[group]`
        when there are groups; B and E in `unit` (what batch counts). Intervals: bootstrap over
        the batch sizes of each group.
    checks, per group: design (at least 4 batch sizes), bracket (B_crit has batch sizes on both
        sides), shape (log residuals at most 0.1 rms), intervals (B_crit's within a factor 100).
    dropped: what the caller left out, with its reason (targets some batch never reached).
    """
    aligned(batch=batch, steps=steps)
    B, S = positive_1d("batch", batch), positive_1d("steps", steps)
    n = same_length(batch=B, steps=S)
    labels = np.array(["" for _ in range(n)] if groups is None else [str(g) for g in groups])
    if labels.size != n:
        raise ValueError(f"groups has {labels.size} values for {n} points")
    result = FitResult(law="batch", params={}, n_points=n)
    found: list[BatchGroup] = []
    for label in dict.fromkeys(labels):
        rows = labels == label
        if np.unique(B[rows]).size < 2:
            raise ValueError(f"{label or 'the data'}: one batch size; the law needs several")
        group, fit = _fit_group(B[rows], S[rows], n_bootstrap, seed)
        rms = float(np.sqrt(np.mean(fit.fun**2)))
        ci95 = group["boot"].ci95
        suffix = f"[{label}]" if groups is not None else ""
        result.params |= {f"{k}{suffix}": v for k, v in group["params"].items()}
        result.ci95 |= {f"{k}{suffix}": v for k, v in ci95.items()}
        result.converged &= bool(fit.success)
        result.checks += _group_checks(label, suffix, B[rows], group["params"], ci95, rms)
        data = {"batch": B[rows].tolist(), "steps": S[rows].tolist()}
        found.append(BatchGroup(group=label, params=group["params"], ci95=ci95, data=data,
                                rms_log_residual=rms))  # fmt: skip
    extras: BatchExtras = {"groups": found, "dropped": list(dropped), "unit": unit}
    extras["n_bootstrap"] = n_bootstrap
    result.extras = dict(extras)
    return result


# --------------------------------------------------------------------------------------------
# From training curves: the steps each run took to reach each target


def steps_to_reach(steps: np.ndarray, loss: np.ndarray, target: float) -> float | None:
    """The step at which a curve first reaches `target`, interpolated linearly in log steps
    between the logged points around it; None if it never does."""
    order = np.argsort(steps)
    steps, loss = np.asarray(steps, float)[order], np.asarray(loss, float)[order]
    reached = np.flatnonzero(loss <= target)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(steps[0])
    s0, s1, l0, l1 = steps[i - 1], steps[i], loss[i - 1], loss[i]
    fraction = (l0 - target) / (l0 - l1)
    return float(np.exp(np.log(s0) + fraction * (np.log(s1) - np.log(s0))))


def tradeoff_points(
    curves: Any, targets: Sequence[float] | None, loss: str
) -> tuple[Any, list[str]]:
    """(rows of group, target_loss, batch, steps; the targets dropped, each with its reason) from
    a curves frame (load_curves: run_id, step, the loss column, n_params, tokens_per_step).
    Groups are model sizes; B is tokens per step. Default targets: the worst final loss of a
    group's runs and 5% and 10% above it, which every run reaches."""
    import pandas as pd

    rows, dropped = [], []
    curves = curves.dropna(subset=[loss])
    for n_params, size in curves.groupby("n_params"):
        runs = {run_id: run for run_id, run in size.groupby("run_id")}
        finals = [run.sort_values("step")[loss].iloc[-1] for run in runs.values()]
        wanted = targets or [max(finals) * f for f in (1.0, 1.05, 1.1)]
        for target in wanted:
            reach = {
                run_id: steps_to_reach(run["step"], run[loss], target)
                for run_id, run in runs.items()
            }
            missed = [r for r, s in reach.items() if s is None]
            if missed:
                dropped.append(
                    f"N={n_params:.3g}, loss {target:.4g}: {len(missed)} of {len(runs)} runs "
                    "never reach it"
                )
                continue
            for run_id, steps in reach.items():
                batch = float(runs[run_id]["tokens_per_step"].iloc[0])
                rows.append({"group": f"N={n_params:.3g}, L={target:.4g}", "batch": batch,
                             "steps": steps})  # fmt: skip
    return pd.DataFrame(rows, columns=["group", "batch", "steps"]), dropped


# --------------------------------------------------------------------------------------------
# The law in the registry: its command, figure and section


def plot_tradeoff(fit: FitResult, ax: Any = None) -> Any:
    """Steps against examples (E = B·S) for each group, measured points and the fitted curve,
    B_crit marked (where both are twice their least)."""
    from matplotlib.figure import Figure

    from scalinglab.analysis.plotting import trust_label

    if ax is None:  # not pyplot's: a report's figures are closed with it
        ax = Figure(figsize=(6.4, 4.6), layout="constrained").add_subplot()
    unit = fit.extras.get("unit", "sequences")
    for k, group in enumerate(fit.extras["groups"]):
        B, S = np.array(group["data"]["batch"]), np.array(group["data"]["steps"])
        p, color = group["params"], f"C{k % 10}"
        grid = np.geomspace(B.min() / 4, B.max() * 4, 200)
        fitted = steps_needed(grid, p["S_min"], p["B_noise"])
        ax.plot(B * S, S, "o", color=color, label=f"{group['group'] or 'runs'}")
        ax.plot(grid * fitted, fitted, "-", color=color, lw=1)
        ax.plot([2 * p["E_min"]], [2 * p["S_min"]], "*", color=color, ms=12,
                label=f"B_crit = {p['B_crit']:.3g} {unit}")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel=f"examples to the target, E = B·S (B: {unit})",
           ylabel="steps to the target, S")  # fmt: skip
    ax.set_title(trust_label("steps against examples: S = S_min(1 + B_noise/B)", fit))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def load_batch(args: Any) -> Any:
    """The tradeoff points `batch` fits: from a CSV (batch, steps and an optional group column),
    or from runs' curves (the steps each run took to reach each target loss)."""
    import pandas as pd

    from scalinglab.analysis.load import load_curves
    from scalinglab.analysis.study import Study, one_quantity, positive_columns, table_or_runs

    paths = list(args.paths)
    csv = table_or_runs(args)
    if csv:
        table = pd.read_csv(csv)
        given = {"batch": args.batch_col or "batch_size", "steps": args.steps_col or "steps"}
        missing = [c for c in [*given.values(), args.group_col] if c and c not in table]
        if missing:
            raise ValueError(
                f"batch needs the columns {', '.join(missing)}, which {csv} does not have "
                "(name them: --batch-col, --steps-col, --group-col)"
            )
        points = pd.DataFrame({k: table[c] for k, c in given.items()})
        points["group"] = table[args.group_col].astype(str) if args.group_col else ""
        unit, source, dropped = given["batch"], f"{len(points)} rows of {csv}", []
    else:
        curves = load_curves(paths)
        # Steps to one loss compare only runs whose losses are one quantity (data, tokenizer, ...).
        runs = curves.drop_duplicates("run_id")
        kinds = one_quantity(runs, args.mix_objectives, args.mix_data)
        loss = {"val_loss": "val/loss", "train_loss": "train/loss"}.get(args.loss, "val/loss")
        points, dropped = tradeoff_points(curves, args.targets, loss)
        unit, source = "tokens", "; ".join([f"{len(runs)} runs under {', '.join(paths)}", *kinds])
    positive_columns(points, {"batch": "batch", "steps": "steps"})
    study = Study(points, [source, f"{len(points)} tradeoff points", *dropped], args)
    study.unit, study.dropped = unit, dropped
    return study


def analyse_batch(study: Any) -> Any:
    from scalinglab.analysis.section import Section

    points = study.points
    grouped = points["group"].nunique() > 1 or bool(points["group"].iloc[0])
    fit = fit_critical_batch(
        points["batch"], points["steps"], points["group"] if grouped else None,
        n_bootstrap=study.args.bootstrap, seed=study.args.seed, unit=study.unit,
        dropped=study.dropped,
    )  # fmt: skip
    return Section(
        description="S = S_min·(1 + B_noise/B) fitted to the steps each batch size took to "
        "reach a target loss; B_crit = E_min/S_min.",
        fit=fit,
        figures={"batch_tradeoff": plot_tradeoff(fit).figure},
        captions={
            "batch_tradeoff": "Steps against examples to each target loss; the star is "
            "B_crit, where both are twice their least."
        },  # fmt: skip
    )


class BatchLaw(Law):
    name = "batch"
    command = Command(
        "batch",
        "critical batch size: S = S_min (1 + B_noise/B) per target loss",
        "The critical batch size (McCandlish et al. 2018): for each target loss (and model "
        "size), the steps S each batch size B took to reach it, fitted to S = S_min·(1 + "
        "B_noise/B) by least squares on log S; B_crit = E_min/S_min with its 95% bootstrap "
        "interval. paths: run or sweep directories (the steps come from each run's metrics.csv, "
        "B in tokens per step, one group per model size and target), or one CSV file of steps "
        "already measured. Figure: batch_tradeoff (steps against examples).",
        arguments=(
            Argument(("--batch-col",), {"help": "CSV column of the batch size (batch_size)"}),
            Argument(("--steps-col",), {"help": "CSV column of the steps to the target (steps)"}),
            Argument(("--group-col",), {"help": "CSV column naming each point's group"}),
            Argument(
                ("--targets",),
                {
                    "type": lambda text: [float(v) for v in text.split(",")],
                    "help": "target losses, comma-separated (default: each size's worst final "
                    "loss, and 5%% and 10%% above it)",
                },
            ),
        ),
        order=70,
    )

    def load(self, args: Any) -> Any:
        return load_batch(args)

    def analyse(self, study: Any, fitted: dict, **options: Any) -> Any:
        return analyse_batch(study)


LAWS = [BatchLaw()]
