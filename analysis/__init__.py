"""Scaling-law analysis: load runs into tidy frames, fit laws, plot them, write a report.

The command line is `scaling-fit` (analysis/cli/); everything it does is importable here. Each law
is one module of analysis/laws/ (registry.py says what a law provides). Names load on first use,
so `scaling-fit --help` imports no fitting, plotting or table library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it.
_WHERE = {
    "FitResult": "result",
    "budget_flops": "budgets",
    "budget_labels": "budgets",
    "chinchilla_loss": "laws.chinchilla",
    "completed": "load",
    "compute_optimal_allocation": "frontier",
    "fit_chinchilla": "laws.chinchilla",
    "fit_envelope": "laws.envelope",
    "fit_hparams": "laws.hparams",
    "fit_hparams_nd": "laws.hparams_nd",
    "fit_isoflop": "laws.isoflop",
    "fit_power_law": "laws.power",
    "fit_table": "report",
    "format_fit": "report",
    "frontier_band": "frontier",
    "leave_largest_out": "validate",
    "left_out_message": "load",
    "load_csv": "load",
    "load_curves": "load",
    "load_runs": "load",
    "load_wandb": "load",
    "load_wandb_curves": "load",
    "lr_transfer": "laws.transfer",
    "plot_curves": "plotting",
    "plot_frontier": "plotting",
    "plot_hparams": "laws.hparams",
    "plot_hparams_nd": "laws.hparams_nd",
    "plot_isoflop": "laws.isoflop",
    "plot_loss": "plotting",
    "plot_transfer": "laws.transfer",
    "power_law": "laws.power",
    "residual_summary": "validate",
    "save": "plotting",
}
_MODULES = {"checks", "registry"}  # submodules offered as names

__all__ = sorted([*_WHERE, *_MODULES])

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports on first use
    from scalinglab.analysis.budgets import budget_flops, budget_labels
    from scalinglab.analysis.frontier import compute_optimal_allocation, frontier_band
    from scalinglab.analysis.laws.chinchilla import chinchilla_loss, fit_chinchilla
    from scalinglab.analysis.laws.envelope import fit_envelope
    from scalinglab.analysis.laws.hparams import fit_hparams, plot_hparams
    from scalinglab.analysis.laws.hparams_nd import fit_hparams_nd, plot_hparams_nd
    from scalinglab.analysis.laws.isoflop import fit_isoflop, plot_isoflop
    from scalinglab.analysis.laws.power import fit_power_law, power_law
    from scalinglab.analysis.laws.transfer import lr_transfer, plot_transfer
    from scalinglab.analysis.load import (
        completed,
        left_out_message,
        load_csv,
        load_curves,
        load_runs,
        load_wandb,
        load_wandb_curves,
    )
    from scalinglab.analysis.plotting import plot_curves, plot_frontier, plot_loss, save
    from scalinglab.analysis.report import fit_table, format_fit
    from scalinglab.analysis.result import FitResult
    from scalinglab.analysis.validate import leave_largest_out, residual_summary


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
