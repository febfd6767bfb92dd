"""The one grouping of runs into compute budgets that every fit and the CLI use (numpy only)."""

from __future__ import annotations

import numpy as np

# Runs whose FLOPs lie within 5% of each other share a compute budget (see budget_labels).
BUDGET_RTOL = 0.05

__all__ = ["BUDGET_RTOL", "budget_flops", "budget_labels"]


def budget_labels(flops: np.ndarray, rtol: float = BUDGET_RTOL) -> np.ndarray:
    """The compute budget each run belongs to, as an index (0 for the smallest): the one grouping
    of runs into budgets that every fit and the CLI use.

    Runs aimed at one budget land a little apart (step counts round, the attention term differs
    by size), so runs whose sorted FLOPs step by at most a factor (1 + rtol) share a budget.
    flops: positive and finite, one per run.
    """
    log_flops = np.log(np.asarray(flops, dtype=float))
    if log_flops.ndim != 1 or not np.all(np.isfinite(log_flops)):
        raise ValueError("budget grouping needs positive, finite FLOPs, one per run")
    if rtol < 0:
        raise ValueError(f"the budget tolerance must be non-negative, got {rtol}")
    order = np.argsort(log_flops, kind="stable")
    new_budget = np.r_[True, np.diff(log_flops[order]) > np.log1p(rtol)]
    labels = np.empty(len(log_flops), dtype=int)
    labels[order] = np.cumsum(new_budget) - 1
    return labels


def budget_flops(flops: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each budget's FLOPs, indexed by label: the geometric mean of its runs' FLOPs."""
    log_flops = np.log(np.asarray(flops, dtype=float))
    sums = np.bincount(labels, weights=log_flops)
    return np.exp(sums / np.bincount(labels))
