"""`scaling-fit`: fit scaling laws to run directories or a table, print them, save JSON and
figures, write a Markdown report, optionally log everything to W&B.

    scaling-fit power outputs/sweeps/ladder --x flops --json fit.json --plot figures/
    scaling-fit chinchilla --csv points.csv --n-col params --d-col tokens --loss-col loss
    scaling-fit isoflop outputs/sweeps/isoflop --plot figures/ --bootstrap 500
    scaling-fit report outputs/sweeps/ --out analysis/report.md --wandb

Every fit checks itself (analysis/checks.py): the terminal and the report show an untrusted fit
as NOT TRUSTED, with its failing checks, before any number. `report` writes report.md and
report.json beside it. --json writes FitResult.to_dict() (with checks and trusted; for `report`,
the report.json document), NaN as null; bootstrap draws (extras["bootstrap"], behind the frontier
bands) are capped at the first 1000 per quantity.

Bad input (no runs, a missing column, too few points) ends with one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from scalinglab.analysis import checks
from scalinglab.analysis.compute_optimal import fit_envelope, fit_isoflop
from scalinglab.analysis.hparams import (
    fit_hparams,
    fit_hparams_nd,
    hparam_rules,
    lr_transfer,
    transfer_verdict,
)
from scalinglab.analysis.laws import compute_optimal_allocation, fit_chinchilla, fit_power_law
from scalinglab.analysis.load import (
    BUDGET_RTOL,
    budget_flops,
    budget_labels,
    completed,
    left_out_message,
    load_csv,
    load_curves,
    load_runs,
    seed_means,
    settings,
)
from scalinglab.analysis.plots import (
    plot_curves,
    plot_frontier,
    plot_hparams,
    plot_hparams_nd,
    plot_isoflop,
    plot_loss,
    plot_transfer,
    save,
)
from scalinglab.analysis.report import (
    Section,
    agreements,
    capped_draws,
    fit_table,
    format_fit,
    report_document,
    write_json,
    write_report,
)
from scalinglab.analysis.result import FitResult

# The metrics.csv column that matches each run-level loss, for the training-curve envelope.
CURVE_LOSS = {"val_loss": "val/loss", "best_val_loss": "val/loss", "train_loss": "train/loss"}
# Logged steps that the training curves' running mean spans.
SMOOTH = 5
# The power law's x in words: what each point is the lowest loss at.
AXIS_WORDS = {"n_params": "model size", "tokens": "token count", "flops": "compute budget"}


@dataclass
class Study:
    """What a command fits: `points` has one row per completed run (or table row) with the
    chosen loss as `loss` and the compute budget as `budget` (FLOPs)."""

    points: pd.DataFrame
    summary: list[str]
    args: argparse.Namespace

    @property
    def sweep_id(self) -> str | None:
        sweeps = self.points.get("sweep_id", pd.Series(dtype=str)).dropna().unique()
        return str(sweeps[0]) if len(sweeps) == 1 else None

    @property
    def known_floor(self) -> float | None:
        """The irreducible loss every run's data records (synthetic languages), if they agree."""
        floors = self.points.get("irreducible_loss", pd.Series(dtype=float)).dropna().unique()
        return float(floors[0]) if len(floors) == 1 else None

    @cached_property
    def curves(self) -> tuple[pd.DataFrame, str]:
        """Per-step (flops, loss, n_params, run_id, schedule_end) rows of completed runs, and the
        loss column; read once for the envelope and the curves figure. schedule_end: the run's
        final tokens (run.json), where its schedule ends."""
        if self.args.csv:
            rows = _rows(self, ["flops", "loss", "n_params"], "the envelope")
            return rows.assign(schedule_end=rows.get("tokens")), "loss"
        loss = CURVE_LOSS[self.args.loss]
        curves = completed(load_curves(self.args.paths)).dropna(subset=["flops"])
        final_tokens = self.points.drop_duplicates("run_id").set_index("run_id")["tokens"]
        curves = curves.assign(schedule_end=curves["run_id"].map(final_tokens))
        return curves[curves["flops"] > 0], loss

    def against_floor(self, fit: FitResult) -> str:
        """ " Known floor ...: fitted E is x% above/below it." for a fit with an E, else ""."""
        floor, E = self.known_floor, fit.params.get("E")
        if floor is None or E is None:
            return ""
        lo, hi = fit.ci95.get("E", (float("nan"), float("nan")))
        return (
            f" The data records its irreducible loss: {floor:.4g} nats/token; the fitted "
            f"E = {E:.4g} [{lo:.4g}, {hi:.4g}] is {E / floor - 1:+.1%} from it."
        )


def load_study(args: argparse.Namespace) -> Study:
    """The completed runs under args.paths (or the rows of args.csv), with `loss` and `budget`,
    and summary lines: counts, what was left out and why, ranges."""
    if args.csv:
        given = {
            "n_params": args.n_col,
            "tokens": args.d_col,
            "flops": args.c_col,
            "loss": args.loss_col,
            # hparams: the learning rate, and the batch size in tokens per step
            "lr": getattr(args, "lr_col", None),
            "tokens_per_step": getattr(args, "batch_col", None),
        }
        points = load_csv(args.csv, {name: column for name, column in given.items() if column})
        summary = [f"{len(points)} points from {args.csv}"]
    elif args.paths:
        runs = load_runs(args.paths)
        points = completed(runs)
        summary = [f"{len(runs)} runs under {', '.join(args.paths)}, {len(points)} completed"]
        summary += [left_out_message(runs)] if left_out_message(runs) else []
        points["loss"] = points[args.loss]
        sweeps = sorted(points["sweep_id"].dropna().unique())
        masked = points["objective"].eq("mlm").all()
        unit = "nats per masked token" if masked else "nats/token"
        summary.append(f"loss: {args.loss} ({unit}); sweeps: {', '.join(sweeps) or 'none'}")
        summary += objectives_line(points, args.mix_objectives)
    else:
        raise ValueError("give run or sweep directories, or --csv FILE")
    missing_loss = int(points["loss"].isna().sum())
    if missing_loss:
        points = points.dropna(subset=["loss"])
        summary.append(f"{missing_loss} runs without a loss left out")
    budget_col = args.budget_col
    if budget_col is None and "budget.flops" in points and points["budget.flops"].notna().all():
        budget_col = "budget.flops"  # the sweep's own nominal budgets (`budget.flops=...`)
    if budget_col:
        if budget_col not in points:
            raise ValueError(
                f"--budget-col {budget_col!r} is not a column of the data; "
                f"columns: {', '.join(map(str, points.columns))}"
            )
        points["budget"] = pd.to_numeric(points[budget_col], errors="coerce")
    elif "flops" in points:
        # One grouping of runs into budgets (load.budget_labels), the one the fits use too.
        has_flops = points["flops"].notna() & (points["flops"] > 0)
        flops = points.loc[has_flops, "flops"].to_numpy(float)
        if len(flops):
            labels = budget_labels(flops, args.budget_tol)
            points.loc[has_flops, "budget"] = budget_flops(flops, labels)[labels]
    for column, unit in (("n_params", "parameters"), ("tokens", "tokens"), ("flops", "FLOPs")):
        if column in points and points[column].notna().any():
            lo, hi = points[column].min(), points[column].max()
            summary.append(f"{column}: {lo:.3g} to {hi:.3g} {unit}")
    return Study(points, summary, args)


def objectives_line(points: pd.DataFrame, mix: bool) -> list[str]:
    """Runs of one objective, or a refusal: a masked-token loss (mlm) and a next-token loss (clm)
    are different quantities, and one law through both fits neither. `mix` (--mix-objectives)
    fits them together anyway, and says so."""
    counts = points["objective"].value_counts().sort_index()
    if len(counts) < 2:
        return [f"objective: {counts.index[0]}"] if len(counts) and counts.index[0] != "clm" else []
    found = ", ".join(f"{n} {objective}" for objective, n in counts.items())
    if not mix:
        raise ValueError(
            f"the runs mix training objectives ({found}): their losses are different "
            "quantities; fit each objective's runs apart, or pass --mix-objectives"
        )
    return [f"objectives mixed in one law (--mix-objectives): {found}"]


def _rows(study: Study, columns: Sequence[str], what: str) -> pd.DataFrame:
    """The points with every column in `columns`, or a ValueError saying which are missing."""
    points = study.points
    missing = [c for c in columns if c not in points or points[c].isna().all()]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)}, which the data does not have")
    return points.dropna(subset=list(columns))


def _fit_options(study: Study) -> dict:
    return {"n_bootstrap": study.args.bootstrap, "seed": study.args.seed}


def _budget_options(study: Study) -> dict:
    """Options of the fits that group runs into budgets: the CLI's --budget-tol too."""
    return _fit_options(study) | {"budget_tol": study.args.budget_tol}


def _allocations(fit: FitResult, budgets: Sequence[float]) -> pd.DataFrame:
    """Compute-optimal N, D at each decade of compute from the data's range to one beyond."""
    lo, hi = np.log10(np.min(budgets)), np.log10(np.max(budgets))
    compute = 10.0 ** np.arange(np.round(lo), np.round(hi) + 2)
    return pd.DataFrame({"C (FLOPs)": compute, **compute_optimal_allocation(fit, compute)})


def analyse_power(study: Study, x: str = "n_params") -> Section:
    """L(x) = E + A x^-alpha through the lowest loss at each x (flops: at each budget), runs that
    differ in seed alone averaged first (load.seed_means)."""
    column = "budget" if x == "flops" else x
    runs = _rows(study, [column, "loss"], f"the power law in {x}")
    setting = settings(runs)
    rows = seed_means(runs, setting=setting)
    best = rows.loc[rows.groupby(column)["loss"].idxmin()]
    seeds = best["n_seeds"]
    averaged = seeds.max() > 1
    singles = runs[np.isin(setting, best["setting"])]
    fit = fit_power_law(best[column], best["loss"], **_fit_options(study))
    has_tokens = x != "tokens" and "tokens" in best and best["tokens"].notna().all()
    if x == "flops":
        fit.checks.insert(1, _compute_law_check(best, list(fit.params)))
    elif {"n_params", "tokens"} <= set(best) and best[["n_params", "tokens"]].notna().all(
        axis=None
    ):
        fit.checks.insert(1, checks.one_slice(x, best["n_params"], best["tokens"], fit.params))
    figure = plot_loss(
        best[column],
        best["loss"],
        fit,
        x_name=x,
        tokens=best["tokens"] if has_tokens else None,
        floor=study.known_floor,
        seeds=(singles[column], singles["loss"]) if averaged else None,
    )
    what = f"the lowest loss at each {AXIS_WORDS[x]}"
    if averaged:
        counts = (
            f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()} to {seeds.max()}"
        )
        fit.extras["points_are"] = f"each the mean of {counts} seeds"
        what += f" ({fit.extras['points_are']}: runs that differ in seed alone)"
    return Section(
        description=f"L = E + A·{x}^-alpha fitted to {what} ({len(best)} of {len(rows)} points)."
        + study.against_floor(fit),
        fit=fit,
        figures={f"loss_vs_{x}": figure},
        captions={
            f"loss_vs_{x}": f"{what[0].upper()}{what[1:]} against {x} (log-log, {len(best)} "
            f"points), with the fitted L = E + A·{x}^-alpha"
            + ("." if fit.trusted else "; the fit is not trusted.")
        },
    )


def _compute_law_check(best: pd.DataFrame, params: list[str]) -> dict:
    """checks.compute_law over the points of an L(C) fit, or a failing design check when the data
    has no parameter and token counts to tell."""
    known = [c for c in ("n_params", "tokens") if c in best and best[c].notna().all()]
    if len(known) < 2:
        return checks.check(
            "design",
            False,
            "cannot tell whether L(C) is a compute law: the points have no parameter and token "
            "counts (over runs of one D, L(C) is L(N) relabelled)",
            params,
        )
    return checks.compute_law(best["n_params"], best["tokens"], best["budget"], params)


def analyse_chinchilla(study: Study) -> Section:
    rows = _rows(study, ["n_params", "tokens", "loss"], "the chinchilla law")
    fit = fit_chinchilla(rows["n_params"], rows["tokens"], rows["loss"], **_fit_options(study))
    budgets = 6.0 * rows["n_params"] * rows["tokens"]
    untrusted = "" if fit.trusted else " The fit is not trusted: the frontier is not a result."
    floor = study.known_floor
    on_floor = "" if floor is None else " Dashed: the floor the data records."
    return Section(
        description=f"L = E + A/N^alpha + B/D^beta, Huber loss on log L over {len(rows)} runs; "
        "N_opt ∝ C^a, D_opt ∝ C^b with C = 6ND." + study.against_floor(fit),
        fit=fit,
        figures={
            "chinchilla": plot_loss(
                rows["n_params"], rows["loss"], fit, tokens=rows["tokens"], floor=floor
            ),
            "chinchilla_tokens": plot_loss(
                rows["tokens"],
                rows["loss"],
                fit,
                x_name="tokens",
                n_params=rows["n_params"],
                floor=floor,
            ),
            "frontier_chinchilla": plot_frontier(fit, budgets),
        },
        captions={
            "chinchilla": f"Final loss of {len(rows)} runs against parameters, coloured by "
            "training tokens, with the fitted L(N, D) = E + A/N^alpha + B/D^beta drawn at a few "
            "token counts (Approach 3)." + on_floor + untrusted.replace("frontier", "fit"),
            "chinchilla_tokens": f"The same {len(rows)} runs against training tokens, coloured by "
            "parameters, with the fitted law drawn at a few model sizes: the L(D) slices."
            + on_floor
            + untrusted.replace("frontier", "fit"),
            "frontier_chinchilla": "Compute-optimal model size N_opt(C) implied by the fitted "
            "L(N, D) (Approach 3), with its 95% bootstrap band; grey: extrapolation beyond the "
            "largest run." + untrusted,
        },
        tables={"Compute-optimal allocation": _allocations(fit, budgets)},
    )


def analyse_isoflop(study: Study, chinchilla: FitResult | None = None) -> Section:
    """Approach 2; `chinchilla`, an Approach-3 fit of the same runs, adds its frontier to the
    figure."""
    rows = _rows(study, ["budget", "n_params", "loss"], "IsoFLOP")
    sizes_per_budget = rows.groupby("budget")["n_params"].nunique()
    if (sizes_per_budget >= 3).sum() < 2:
        raise ValueError(
            f"IsoFLOP needs two or more compute budgets with three or more model sizes each; "
            f"found {len(sizes_per_budget)} budgets with {sizes_per_budget.tolist()} sizes "
            f"(runs whose FLOPs step by at most {study.args.budget_tol:.1%} share a budget; "
            "see --budget-tol, --budget-col)"
        )
    tokens = rows["tokens"] if "tokens" in rows and rows["tokens"].notna().all() else None
    fit = fit_isoflop(
        rows["budget"], rows["n_params"], rows["loss"], tokens=tokens, **_budget_options(study)
    )
    budgets = [b["C"] for b in fit.extras["budgets"]]
    untrusted = "" if fit.trusted else " The fit is not trusted: the frontier is not a result."
    return Section(
        description=f"A parabola in log10 N per compute budget ({len(budgets)} budgets, "
        f"{len(rows)} runs), then N_opt = k_N C^a and D_opt = k_D C^b through the minima.",
        fit=fit,
        figures={"isoflop": plot_isoflop(fit, chinchilla)},
        captions={
            "isoflop": f"Left: final loss against parameters at each of the {len(budgets)} "
            "compute budgets, the parabola fitted in log10 N per budget and its minimum with its "
            "95% interval. Right: those minima against compute and the law N_opt = k_N C^a "
            "fitted through them with its 95% bootstrap band (Approach 2)"
            + (
                ", beside the frontier implied by the L(N, D) fit (Approach 3)"
                if chinchilla
                else ""
            )
            + "; grey: extrapolation beyond the largest budget."
            + untrusted,
        },
        tables={"Compute-optimal allocation": _allocations(fit, budgets)},
    )


def analyse_envelope(study: Study) -> Section:
    curves, loss = study.curves
    curves = curves.dropna(subset=[loss])
    ends = curves["schedule_end"]
    fit = fit_envelope(
        curves["flops"],
        curves[loss],
        curves["n_params"],
        run_id=curves["run_id"],
        schedule_end=ends if ends.notna().all() and (ends > 0).all() else None,
        **_fit_options(study),
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
        tables={"Compute-optimal allocation": _allocations(fit, used)},
    )


def training_curves(study: Study, envelope: FitResult | None = None) -> Section:
    """Every run's curve (no fit): the smoothed training loss and the validations against
    compute, with the Approach-1 envelope when that fit is trusted."""
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


def _positive_columns(rows: pd.DataFrame, columns: dict[str, str]) -> None:
    """Refuse, in one line, a column (`columns`: frame column -> the name the user knows it by)
    holding a value that is not positive: a law in logs cannot take it, and a fit would go on
    after numpy's warnings."""
    for column, name in columns.items():
        values = pd.to_numeric(rows[column], errors="coerce")
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            first = bad.to_numpy().nonzero()[0][0]
            value = rows[column].iloc[first]
            value = value.item() if isinstance(value, np.generic) else value
            raise ValueError(
                f"{name} must be positive and finite in every run: {int(bad.sum())} are not "
                f"(the first, run {rows['run_id'].iloc[first]}, has {value!r})"
            )


def analyse_hparams(study: Study) -> Section:
    """lr_opt and batch_opt as laws of compute C (--law compute) or of N and D (--law nd)."""
    # The batch law in tokens per optimizer step where runs record it (it carries across sequence
    # lengths and device counts, and the training rules take it); else in sequences.
    points, args = study.points, study.args
    recorded = "tokens_per_step" in points and points["tokens_per_step"].notna().all()
    batch = "tokens_per_step" if recorded else "batch_size"
    nd = getattr(args, "law", "compute") == "nd"
    scale = ["n_params", "tokens"] if nd else ["budget"]
    rows = _rows(study, [*scale, "lr", batch, "loss"], "the hyperparameter fit")
    names = {
        "budget": f"compute ({args.budget_col or args.c_col or 'flops'})",
        "n_params": f"N ({args.n_col or 'n_params'})",
        "tokens": f"D ({args.d_col or 'tokens'})",
        "lr": f"the learning rate ({getattr(args, 'lr_col', None) or 'lr'})",
        batch: f"the batch size ({getattr(args, 'batch_col', None) or batch})",
        "loss": f"the loss ({args.loss_col or args.loss})",
    }
    _positive_columns(rows, {c: names[c] for c in (*scale, "lr", batch, "loss")})
    unit = "tokens" if batch == "tokens_per_step" else "sequences"
    if nd:
        fit = fit_hparams_nd(
            rows["n_params"], rows["tokens"], rows["lr"], rows[batch], rows["loss"],
            **_budget_options(study),
        )  # fmt: skip
        fit.extras["batch_unit"] = unit
        cells = fit.extras["cells"]
        return Section(
            description=f"Per (N, D) cell ({len(cells)} cells, {len(rows)} runs), the runs within "
            f"{fit.extras['tolerance']:.0%} of the best loss; their centre is the optimum. "
            f"lr_opt = k_lr N^alpha_lr D^beta_lr, batch_opt = k_bs N^alpha_bs D^beta_bs ({unit} "
            "per step), log-linear least squares.",
            fit=fit,
            figures={"hparams_nd": plot_hparams_nd(fit)},
            captions={
                "hparams_nd": "Each (N, D) cell's optimal learning rate against N and optimal "
                "batch size against D (its near-optimal band as the bar), coloured by the other "
                "variable, with the fitted laws at each cell's N and D."
                + ("" if fit.trusted else " The fit is not trusted.")
            },
        )
    fit = fit_hparams(
        rows["budget"], rows["lr"], rows[batch], rows["loss"], **_budget_options(study)
    )
    fit.extras["batch_unit"] = unit
    return Section(
        description=f"Per budget, the runs within {fit.extras['tolerance']:.0%} of the best loss; "
        "their centre is the optimum. lr_opt = k_lr C^e_lr, batch_opt = k_bs C^e_bs "
        f"({fit.extras['batch_unit']} per step; {len(rows)} runs).",
        fit=fit,
        figures={"hparams": plot_hparams(fit)},
        captions={
            "hparams": "Learning rate against batch size at each compute budget, each run "
            "coloured by its loss above the budget's best; the near-optimal band's centre is "
            "the optimum that lr_opt = k_lr C^e_lr and batch_opt = k_bs C^e_bs are fitted to."
            + ("" if fit.trusted else " The fit is not trusted.")
        },
    )


RULES_HEADER = {
    "hparams": """\
# Learning rate and batch size as power laws of the compute budget C (FLOPs), fitted by
# `scaling-fit hparams`. Train with them: scaling-train hparams=fitted hparams_file=THIS_FILE
""",
    "hparams_nd": """\
# Learning rate and batch size as power laws of parameters N and training tokens D, fitted by
# `scaling-fit hparams --law nd`. Train with them: scaling-train hparams=fitted hparams_file=THIS_FILE
""",
}

# Columns of the run frame that `transfer` reads (a CSV may name its own).
TRANSFER_COLUMNS = {
    "parametrization": "model.parametrization",
    "width": "model.d_model",
    "lr": "optimizer.lr",
}


def load_transfer(args: argparse.Namespace) -> Study:
    """The runs (or CSV rows) of a learning-rate x width sweep as `transfer` reads them:
    parametrization (absent or blank: sp), width, lr and loss columns."""
    paths = list(args.paths)
    csv = args.csv or (paths[0] if len(paths) == 1 and paths[0].endswith(".csv") else None)
    if csv:
        points = pd.read_csv(csv)
        points.insert(0, "run_id", [str(i) for i in range(len(points))])
        loss, source = args.loss_col or "loss", f"{len(points)} rows of {csv}"
    elif paths:
        runs = load_runs(paths)
        points = completed(runs)
        loss = args.loss
        source = f"{len(runs)} runs under {', '.join(paths)}, {len(points)} completed"
    else:
        raise ValueError("give run or sweep directories, or a CSV file")
    given = {
        "parametrization": args.parametrization_col or TRANSFER_COLUMNS["parametrization"],
        "width": args.width_col or TRANSFER_COLUMNS["width"],
        "lr": args.lr_col or TRANSFER_COLUMNS["lr"],
        "loss": loss,
    }
    missing = [c for k, c in given.items() if k != "parametrization" and c not in points]
    if missing:
        raise ValueError(
            f"transfer needs the columns {', '.join(missing)}, which the data does not have "
            "(name them: --width-col, --lr-col, --loss-col)"
        )
    frame = pd.DataFrame({"run_id": points["run_id"]})
    for key, column in given.items():
        frame[key] = points.get(column, np.nan)
    frame["parametrization"] = frame["parametrization"].astype(object).fillna("sp").astype(str)
    frame = frame.dropna(subset=["width", "lr", "loss"])
    names = {"width": given["width"], "lr": given["lr"], "loss": given["loss"]}
    _positive_columns(frame, names)
    found = ", ".join(f"{n} {p}" for p, n in frame["parametrization"].value_counts().items())
    return Study(frame, [source, f"{len(frame)} with a loss: {found}"], args)


def analyse_transfer(study: Study) -> Section:
    """The optimal learning rate per (parametrization, width) with its near-optimal band, and
    whether each parametrization's optimum holds across widths within one grid step."""
    rows = study.points
    fit = lr_transfer(
        rows["parametrization"].to_numpy(),
        rows["width"],
        rows["lr"],
        rows["loss"],
        tolerance=study.args.tolerance,
    )
    table = pd.DataFrame(
        {
            "parametrization": c["parametrization"],
            "width": c["width"],
            "lr_opt": c["lr_opt"],
            "band_lo": c["lr_band"][0],
            "band_hi": c["lr_band"][1],
            "best_lr": c["best_lr"],
            "best_loss": c["best_loss"],
            "runs": len(c["lr"]),
        }
        for c in fit.extras["cells"]
    )
    band = f"within {fit.extras['tolerance']:.0%} of the best loss"
    return Section(
        description=f"Per (parametrization, width), lr_opt is the centre of the near-optimal band "
        f"(the learning rates {band}); the interval is that band, not a bootstrap. "
        + " ".join(transfer_verdict(fit)),
        fit=fit,
        figures={"transfer": plot_transfer(fit)},
        captions={
            "transfer": "Final loss against learning rate at each width, one panel per "
            f"parametrization; the marker and bar: each width's lr_opt and its band ({band})."
        },
        tables={"Optimal learning rate per width": table},
    )


# What `report` attempts, in order: (title, command, options).
REPORT_ANALYSES = [
    ("Power law L(N)", "power", {"x": "n_params"}),
    ("Power law L(C)", "power", {"x": "flops"}),
    ("Chinchilla L(N, D), Approach 3", "chinchilla", {}),
    ("IsoFLOP profiles, Approach 2", "isoflop", {}),
    ("Training-curve envelope, Approach 1", "envelope", {}),
    ("Learning rate and batch size", "hparams", {}),
]
ANALYSE: dict[str, Callable[..., Section]] = {
    "power": analyse_power,
    "chinchilla": analyse_chinchilla,
    "isoflop": analyse_isoflop,
    "envelope": analyse_envelope,
    "hparams": analyse_hparams,
    "transfer": analyse_transfer,
}


def run_report(study: Study) -> list[Section]:
    """Every analysis the data supports; the others are kept with the reason they were skipped."""
    sections: list[Section] = []
    fitted: dict[str, FitResult] = {}
    for title, command, options in REPORT_ANALYSES:
        if command == "isoflop":  # drawn with Approach 3's frontier beside its own
            options = {"chinchilla": fitted.get("chinchilla")}
        try:
            section = ANALYSE[command](study, **options)
        except ValueError as error:
            section = Section(skipped=str(error))
        section.title, section.law = title, command
        sections.append(section)
        if section.fit is not None:
            fitted[command] = section.fit
    if not study.args.csv:
        try:
            sections.insert(0, training_curves(study, fitted.get("envelope")))
        except ValueError as error:  # no metrics.csv: no curves to draw
            print(f"no training curves: {error}")
    out = write_report(sections, study.args.out, summary=study.summary)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return sections


def _pixels(figure: Figure) -> np.ndarray:
    """The figure rendered to RGBA pixels: wandb.Image(figure) itself needs pyplot's state."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def report_files(sections: list[Section], out: Path) -> list[Path]:
    """What `write_report` wrote: the report, report.json beside it, each figure's PNG."""
    figures = [out.parent / f"{name}.png" for section in sections for name in section.figures]
    return [out, out.with_suffix(".json"), *figures]


def log_to_wandb(sections: list[Section], study: Study, report: list[Path] = ()) -> None:
    """Log each fit's table, values and figures to a W&B run of job_type "analysis", in the
    sweep's group so it sits beside the training runs; the `report` files (report.md,
    report.json, figures) as its `analysis-report` artifact."""
    import wandb

    run = wandb.init(
        project=study.args.wandb_project,
        entity=study.args.wandb_entity,
        group=study.sweep_id,
        job_type="analysis",
        config={
            "command": study.args.command,
            "loss": study.args.loss,
            "n_bootstrap": getattr(study.args, "bootstrap", None),  # transfer: none
            "seed": getattr(study.args, "seed", None),
        },
    )
    try:
        for section in sections:
            if section.fit is None:
                continue
            law = section.fit.law if section.fit.law != "power" else next(iter(section.figures))
            run.log(
                {
                    f"{law}/fit": wandb.Table(dataframe=fit_table(section.fit)),
                    **{
                        f"{law}/{name}": wandb.Image(_pixels(fig))
                        for name, fig in section.figures.items()
                    },
                }
            )
            values = section.fit.params | section.fit.derived | {"trusted": section.fit.trusted}
            run.summary.update({f"{law}/{name}": value for name, value in values.items()})
        if report:
            name = re.sub(r"[^\w.-]", "_", f"report-{study.sweep_id or 'runs'}")  # W&B's charset
            artifact = wandb.Artifact(name, type="analysis-report")
            for path in report:
                artifact.add_file(str(path))
            run.log_artifact(artifact)
    finally:
        wandb.finish()


def build_parser() -> argparse.ArgumentParser:
    # Option groups as parents: every fit takes all four; `transfer` (no scale columns, no
    # bootstrap) only the inputs and the outputs, so its help lists only what it reads.
    inputs = argparse.ArgumentParser(add_help=False)
    data = inputs.add_argument_group("data")
    data.add_argument("paths", nargs="*", help="run or sweep directories (searched at any depth)")
    data.add_argument("--csv", help="a table of points instead of run directories")
    data.add_argument("--loss-col", help="CSV column of the loss (default: loss)")
    data.add_argument(
        "--loss",
        choices=sorted(CURVE_LOSS),
        default="val_loss",
        help="which loss of a run to fit (default: val_loss, the final one)",
    )
    scale = argparse.ArgumentParser(add_help=False)
    columns = scale.add_argument_group("scale: parameters, tokens, compute")
    columns.add_argument("--n-col", help="CSV column of parameters N")
    columns.add_argument("--d-col", help="CSV column of training tokens D")
    columns.add_argument("--c-col", help="CSV column of compute C (FLOPs); default 6·N·D")
    columns.add_argument(
        "--budget-col",
        help="column holding each run's compute budget (FLOPs); default: the budget.flops "
        "override when every run has one, else runs whose FLOPs agree within --budget-tol "
        "share a budget",
    )
    columns.add_argument(
        "--budget-tol",
        type=float,
        default=BUDGET_RTOL,
        help=f"runs whose sorted FLOPs step by at most this fraction share a budget, in every "
        f"fit ({BUDGET_RTOL})",
    )
    columns.add_argument(
        "--mix-objectives",
        action="store_true",
        help="fit runs of different objectives (clm and mlm) in one law; refused otherwise",
    )
    resampling = argparse.ArgumentParser(add_help=False)
    intervals = resampling.add_argument_group("intervals")
    intervals.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (200)")
    intervals.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the bootstrap resamples (0): same seed, same fit",
    )
    outputs = argparse.ArgumentParser(add_help=False)
    output = outputs.add_argument_group("output")
    output.add_argument(
        "--json", help="write the fit as JSON (report: the report.json document, here too)"
    )
    output.add_argument("--plot", help="write the figures (PNG and SVG) to this directory")
    output.add_argument(
        "--wandb", action="store_true", help="log fits and figures to a W&B run (job_type analysis)"
    )
    output.add_argument(
        "--wandb-project",
        default="scalinglab",
        help="W&B project of the --wandb run (scalinglab)",
    )
    output.add_argument(
        "--wandb-entity",
        help="W&B entity (user or team) of the --wandb run; default: your W&B default entity",
    )

    parser = argparse.ArgumentParser(
        prog="scaling-fit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help: str, description: str, fits: bool = True
    ) -> argparse.ArgumentParser:
        parents = [inputs, scale, resampling, outputs] if fits else [inputs, outputs]
        return commands.add_parser(name, parents=parents, help=help, description=description)

    power = command(
        "power",
        "L(x) = E + A x^-alpha through the best loss at each x",
        "Fit L(x) = E + A x^-alpha by least squares on log L through the lowest loss at each x "
        "(parameters, tokens, or each compute budget; runs that differ in seed alone are "
        "averaged first), with 95% bootstrap intervals and the fit's checks. Figure: "
        "loss_vs_<x>, with the single seeds behind their means.",
    )
    power.add_argument(
        "--x",
        choices=["n_params", "tokens", "flops"],
        default="n_params",
        help="the scale variable x: parameters, training tokens, or compute (each run's budget) "
        "(n_params)",
    )
    command(
        "chinchilla",
        "L(N, D), Chinchilla Approach 3",
        "Fit L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al.'s Approach 3, Huber loss on "
        "log L) to every completed run, and the compute-optimal N_opt(C), D_opt(C) it implies. "
        "Needs runs that vary N and D independently. Figures: chinchilla, frontier_chinchilla.",
    )
    command(
        "isoflop",
        "IsoFLOP parabolas, Approach 2",
        "Fit a parabola in log N to each compute budget's runs, take its minimum N_opt(C), then "
        "N_opt = k_N C^a and D_opt = k_D C^b through the minima (Approach 2); a budget whose "
        "minimum falls outside its sampled sizes is flagged, not used. Figure: isoflop.",
    )
    command(
        "envelope",
        "training-curve envelope, Approach 1",
        "From every run's training curve (metrics.csv), the lowest loss at each FLOP count and "
        "the model size reaching it, then N_opt = k_N C^a through those (Approach 1). "
        "Figures: frontier_envelope, curves.",
    )
    hparams = command(
        "hparams",
        "optimal lr and batch size vs compute",
        "Per compute budget, the runs within 1% of the best loss on a learning-rate x "
        "batch-size grid; their centre is the optimum. Then lr_opt = k_lr C^e_lr and "
        "batch_opt = k_bs C^e_bs; --rules writes them for scaling-train hparams=fitted. "
        "Figure: hparams.",
    )
    hparams.add_argument(
        "--law",
        choices=["compute", "nd"],
        default="compute",
        help="compute: lr_opt = k_lr C^e_lr, batch_opt = k_bs C^e_bs, per compute budget; nd: "
        "lr_opt = k_lr N^alpha_lr D^beta_lr, batch_opt = k_bs N^alpha_bs D^beta_bs, per (N, D) "
        "cell of runs (parameters and tokens each within --budget-tol) (compute)",
    )
    hparams.add_argument("--lr-col", help="CSV column of the peak learning rate (default: lr)")
    hparams.add_argument(
        "--batch-col",
        help="CSV column of the batch size in tokens per step (default: batch_size, in "
        "sequences, which --rules refuses)",
    )
    hparams.add_argument(
        "--rules",
        help="also write the fitted laws (either --law) to this YAML file, for scaling-train "
        "hparams=fitted",
    )
    hparams.add_argument(
        "--untrusted-ok",
        action="store_true",
        help="write --rules even when the fit is not trusted (the file records it)",
    )
    transfer = command(
        "transfer",
        "optimal lr per width and parametrization: does it transfer?",
        "From a learning-rate grid at several widths under each parametrization (sweep="
        "mup_transfer), the optimal learning rate per (parametrization, width): the centre of "
        "the near-optimal band, the learning rates within --tolerance of the best final loss, "
        "reported as its interval (not a bootstrap). Says whether each parametrization's optimum "
        "holds across widths within one grid step. paths: run or sweep directories, or "
        "one CSV file. Figure: transfer (loss vs lr per width, a panel per parametrization).",
        fits=False,
    )
    transfer.add_argument(
        "--parametrization-col",
        help="column of the parametrization (default: model.parametrization; absent or blank "
        "means sp)",
    )
    transfer.add_argument("--width-col", help="column of the width (default: model.d_model)")
    transfer.add_argument(
        "--lr-col", help="column of the peak (base) learning rate (default: optimizer.lr)"
    )
    transfer.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="the near-optimal band: runs within this fraction of the best loss (0.01)",
    )
    report = command(
        "report",
        "every fit the data supports, as one Markdown report",
        "Every fit the data supports (power laws in N and C, L(N, D), IsoFLOP, envelope, "
        "learning rate and batch size), each with its checks and figures, and why the others "
        "were skipped: --out report.md and report.json beside it, the figures in the same "
        "directory. Untrusted fits are marked and left out of the summary.",
    )
    report.add_argument("--out", default="report.md", help="the report; figures go beside it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its message; keep main's int contract
        return int(exit_.code or 0)
    try:
        study = load_transfer(args) if args.command == "transfer" else load_study(args)
        print("\n".join(study.summary))
        if args.command == "report":
            sections = run_report(study)
        else:
            options = {"x": args.x} if args.command == "power" else {}
            sections = [ANALYSE[args.command](study, **options)]
            sections[0].title = args.command + (f" L({args.x})" if options else "")
            if args.command == "envelope" and not args.csv:  # its curves, with it drawn on them
                sections.append(training_curves(study, sections[0].fit))
        for section in sections:
            if section.fit is not None:
                print(format_fit(section.fit, section.title))
                if section.fit.law == "transfer":  # its intervals are bands: shown as a table
                    for name, table in section.tables.items():
                        print(f"{name}:\n{table.to_string(index=False)}")
                    print("\n".join(transfer_verdict(section.fit)))
            elif section.skipped:
                print(f"== {section.title} == skipped: {section.skipped}")
        fitted = [s for s in sections if s.fit is not None]
        if args.json:
            # One fit: its FitResult.to_dict(); report: the report.json document.
            if args.command == "report":
                document = report_document(sections, study.summary, agreements(sections))
            else:
                document = capped_draws(fitted[0].fit.to_dict())
            write_json(document, args.json)
        if args.command == "hparams" and args.rules:
            document = hparam_rules(
                sections[0].fit, sources=args.paths or [args.csv], untrusted_ok=args.untrusted_ok
            )
            Path(args.rules).parent.mkdir(parents=True, exist_ok=True)
            header = RULES_HEADER[sections[0].fit.law]
            Path(args.rules).write_text(header + yaml.safe_dump(document, sort_keys=False))
            print(f"wrote {args.rules}: use it with scaling-train hparams=fitted hparams_file=...")
        if args.plot:
            for name, figure in (item for s in sections for item in s.figures.items()):
                save(figure, args.plot, name)
        if args.wandb:
            report = report_files(sections, Path(args.out)) if args.command == "report" else []
            log_to_wandb(fitted, study, report)
    except (ValueError, OSError) as error:
        print(f"scaling-fit: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
