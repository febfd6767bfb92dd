"""The laws, one module each (registry.py says what a module provides): power, chinchilla,
isoflop, envelope, hparams, hparams_nd, transfer. The registry imports them by name; the names
below are the ones notebooks have imported from `scalinglab.analysis.laws`."""

from scalinglab.analysis.frontier import compute_optimal_allocation
from scalinglab.analysis.laws.chinchilla import (
    chinchilla_loss,
    chinchilla_objective,
    fit_chinchilla,
)
from scalinglab.analysis.laws.power import fit_power_law, power_law

__all__ = [
    "chinchilla_loss",
    "chinchilla_objective",
    "compute_optimal_allocation",
    "fit_chinchilla",
    "fit_power_law",
    "power_law",
]
