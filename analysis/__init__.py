"""Scaling-law analysis: load runs into tidy frames, fit laws, plot them, write a report.

The command line is `scaling-fit` (analysis/cli/); everything it does is importable here. Each law
is one module of analysis/laws/ (registry.py says what a law provides). Names load on first use,
so `scaling-fit --help` imports no fitting, plotting or table library.
"""

from __future__ import annotations

import importlib
from typing import Any

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
