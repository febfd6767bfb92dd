"""What a `scaling-fit` command fits: the completed runs under the given directories (or the rows
of a table) as one frame, with the chosen loss as `loss` and the compute budget as `budget`, and
the lines that say what was read and what was left out."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from scalinglab.analysis.budgets import budget_flops, budget_labels
from scalinglab.analysis.columns import CURVE_LOSS
from scalinglab.analysis.load import completed, left_out_message, load_csv, load_curves, load_runs


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
            points = rows(self, ["flops", "loss", "n_params"], "the envelope")
            return points.assign(schedule_end=points.get("tokens")), "loss"
        loss = CURVE_LOSS[self.args.loss]
        curves = completed(load_curves(self.args.paths)).dropna(subset=["flops"])
        final_tokens = self.points.drop_duplicates("run_id").set_index("run_id")["tokens"]
        curves = curves.assign(schedule_end=curves["run_id"].map(final_tokens))
        return curves[curves["flops"] > 0], loss

    def against_floor(self, fit: Any) -> str:
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
        summary += one_quantity(points, args.mix_objectives, args.mix_data)
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


# What makes runs' losses one quantity, and the flag that fits them together anyway: the objective
# (a masked-token loss is not a next-token one), the tokenizer (nats per token of another
# vocabulary), the validation tokens they are scored on, and the context they are scored in.
LOSS_SCALE = {
    "objective": "--mix-objectives",
    "tokenizer": "--mix-data",
    "val_set": "--mix-data",
    "seq_len": "--mix-data",
}


def table_or_runs(args: argparse.Namespace) -> str | None:
    """The CSV a command reads (`--csv`, or a lone path ending in .csv), or None for run
    directories; refused in one line when it is given neither."""
    paths = list(args.paths)
    csv = args.csv or (paths[0] if len(paths) == 1 and paths[0].endswith(".csv") else None)
    if csv is None and not paths:
        raise ValueError("give run or sweep directories, or a CSV file")
    return csv


def one_quantity(points: pd.DataFrame, mix_objectives: bool, mix_data: bool) -> list[str]:
    """Summary lines for runs whose losses are one quantity (LOSS_SCALE); a ValueError naming each
    key on which they differ, and its values, unless its flag allows it. Runs recorded before a
    key was (no value) are not counted as differing."""
    allowed = {"--mix-objectives": mix_objectives, "--mix-data": mix_data}
    differing, lines = {}, []
    for key, flag in LOSS_SCALE.items():
        if key not in points:
            continue
        counts = points[key].dropna().value_counts().sort_index()
        found = ", ".join(f"{n} {value}" for value, n in counts.items())
        if len(counts) > 1:
            differing.setdefault(flag, []).append(f"{key} ({found})")
        elif key == "objective" and len(counts) and counts.index[0] != "clm":
            lines.append(f"objective: {counts.index[0]}")
    for flag, keys in differing.items():
        if not allowed[flag]:
            raise ValueError(
                f"the runs' losses are not one quantity: they differ in {'; '.join(keys)}; fit "
                f"each group apart, or pass {flag}"
            )
        lines.append(f"losses of different kinds in one law ({flag}): {'; '.join(keys)}")
    return lines


def rows(study: Study, columns: Sequence[str], what: str) -> pd.DataFrame:
    """The points with every column in `columns`, or a ValueError saying which are missing."""
    points = study.points
    missing = [c for c in columns if c not in points or points[c].isna().all()]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)}, which the data does not have")
    return points.dropna(subset=list(columns))


def fit_options(study: Study) -> dict:
    return {"n_bootstrap": study.args.bootstrap, "seed": study.args.seed}


def budget_options(study: Study) -> dict:
    """Options of the fits that group runs into budgets: the CLI's --budget-tol too."""
    return fit_options(study) | {"budget_tol": study.args.budget_tol}


def positive_columns(frame: pd.DataFrame, columns: dict[str, str]) -> None:
    """Refuse, in one line, a column (`columns`: frame column -> the name the user knows it by)
    holding a value that is not positive: a law in logs cannot take it, and a fit would go on
    after numpy's warnings."""
    for column, name in columns.items():
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            first = bad.to_numpy().nonzero()[0][0]
            value = frame[column].iloc[first]
            value = value.item() if isinstance(value, np.generic) else value
            raise ValueError(
                f"{name} must be positive and finite in every run: {int(bad.sum())} are not "
                f"(the first, run {frame['run_id'].iloc[first]}, has {value!r})"
            )
