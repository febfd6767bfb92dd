"""One analysis of a study as the report and the terminal show it: a fit, its figures and tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scalinglab.analysis.result import FitResult

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


@dataclass
class Section:
    """One analysis: its fit, figures (by file name) with a one-line caption each, and extra
    tables, or why it was skipped. law: the command that made it (power, isoflop, ...).
    notes: lines the terminal prints after the fit's table (a verdict in words).
    files: {path: text} to write beside the fit (a rules file); only the writers write them."""

    title: str = ""
    description: str = ""
    fit: FitResult | None = None
    figures: dict[str, Figure] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    skipped: str = ""
    law: str = ""
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
