"""Fit tables (for the terminal, Markdown and W&B) and the Markdown report of a study."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from scalinglab.analysis.plots import save
from scalinglab.analysis.result import FitResult


def fit_table(fit: FitResult) -> pd.DataFrame:
    """One row per fitted parameter and derived quantity: name, kind ("param"/"derived"),
    value, ci95_lo, ci95_hi (NaN where the fit has no interval)."""
    rows = []
    for kind, values in (("param", fit.params), ("derived", fit.derived)):
        for name, value in values.items():
            if kind == "derived" and name in fit.params:
                continue  # isoflop/envelope/hparams report their coefficients in both
            lo, hi = fit.ci95.get(name, (math.nan, math.nan))
            rows.append({"name": name, "kind": kind, "value": value, "ci95_lo": lo, "ci95_hi": hi})
    return pd.DataFrame(rows, columns=["name", "kind", "value", "ci95_lo", "ci95_hi"])


def fit_status(fit: FitResult) -> str:
    """ "converged" or "NOT converged", with the fit's message."""
    state = "converged" if fit.converged else "NOT converged"
    return f"{state}: {fit.message}" if fit.message else state


def format_fit(fit: FitResult, title: str = "") -> str:
    """The fit as readable text: title, table of values with 95% intervals, points, status."""
    table = fit_table(fit).to_string(index=False, float_format=lambda v: f"{v:.4g}")
    return "\n".join(
        [
            f"== {title or fit.law} ==",
            table,
            f"points: {fit.n_points}   {fit_status(fit)}",
        ]
    )


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table; floats with 4 significant digits."""

    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines)


@dataclass
class Section:
    """One analysis: its fit, figures (by file name) and extra tables, or why it was skipped."""

    title: str = ""
    description: str = ""
    fit: FitResult | None = None
    figures: dict[str, Figure] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    skipped: str = ""


def write_report(sections: list[Section], out: str | Path, *, summary: list[str]) -> Path:
    """Write the Markdown report to `out` and its figures (PNG and SVG) beside it.
    `summary`: lines describing the data, shown first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Scaling-law report", "", "## Data", ""]
    lines += [f"- {line}" for line in summary]
    for section in sections:
        lines += ["", f"## {section.title}", "", section.description, ""]
        if section.fit is None:
            lines += [f"Skipped: {section.skipped}"]
            continue
        lines += [
            markdown_table(fit_table(section.fit)),
            "",
            f"Points: {section.fit.n_points}; {fit_status(section.fit)}",
        ]
        for caption, table in section.tables.items():
            lines += ["", f"{caption}:", "", markdown_table(table)]
        for name, figure in section.figures.items():
            png, _ = save(figure, out.parent, name)
            lines += ["", f"![{name}]({png.name})"]
    out.write_text("\n".join(lines) + "\n")
    return out
