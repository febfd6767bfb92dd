"""Scaling-law analysis: load runs into tidy frames, fit laws, plot them, write a report.

The command line is `scaling-fit` (analysis/cli.py); everything it does is importable here.
"""

from scalinglab.analysis import checks
from scalinglab.analysis.compute_optimal import fit_envelope, fit_isoflop, frontier_band
from scalinglab.analysis.hparams import fit_hparams
from scalinglab.analysis.laws import (
    chinchilla_loss,
    compute_optimal_allocation,
    fit_chinchilla,
    fit_power_law,
    power_law,
)
from scalinglab.analysis.load import (
    budget_flops,
    budget_labels,
    completed,
    left_out_message,
    load_csv,
    load_curves,
    load_runs,
    load_wandb,
    load_wandb_curves,
)
from scalinglab.analysis.plots import (
    plot_curves,
    plot_frontier,
    plot_hparams,
    plot_isoflop,
    plot_loss,
    save,
)
from scalinglab.analysis.report import fit_table, format_fit
from scalinglab.analysis.result import FitResult
from scalinglab.analysis.validate import leave_largest_out, residual_summary

__all__ = [
    "FitResult",
    "budget_flops",
    "budget_labels",
    "checks",
    "chinchilla_loss",
    "completed",
    "compute_optimal_allocation",
    "fit_chinchilla",
    "fit_envelope",
    "fit_hparams",
    "fit_isoflop",
    "fit_power_law",
    "fit_table",
    "format_fit",
    "frontier_band",
    "leave_largest_out",
    "left_out_message",
    "load_csv",
    "load_curves",
    "load_runs",
    "load_wandb",
    "load_wandb_curves",
    "plot_curves",
    "plot_frontier",
    "plot_hparams",
    "plot_isoflop",
    "plot_loss",
    "power_law",
    "residual_summary",
    "save",
]
