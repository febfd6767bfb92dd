"""Bootstrap resampling over runs and percentile intervals, shared by every fit."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np


def resample_indices(
    rng: np.random.Generator,
    n: int,
    *,
    strata: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Row indices of one bootstrap resample of `n` rows, drawn with replacement.

    strata: label per row; rows are redrawn within each label, so every stratum (an IsoFLOP
            budget, say) keeps its size.
    groups: label per row; whole groups (the rows of one training curve) are redrawn together,
            numbered in order of their first row, not of their labels: a run's id is random, so
            its sorted place would make the resamples differ between two trainings of one study.
    """
    if groups is not None:
        _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        numbered = np.argsort(np.argsort(first))[inverse.ravel()]  # by first appearance
        members = [np.flatnonzero(numbered == k) for k in range(len(first))]
        picked = rng.integers(0, len(first), len(first))
        return np.concatenate([members[k] for k in picked])
    if strata is not None:
        parts = []
        for label in np.unique(strata):
            rows = np.flatnonzero(strata == label)
            parts.append(rows[rng.integers(0, len(rows), len(rows))])
        return np.concatenate(parts)
    return rng.integers(0, n, n)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap samples (NaNs ignored)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return float(lo), float(hi)


def skipped_note(n_ok: int, n_bootstrap: int) -> str:
    """A message fragment when some resamples could not be fitted ("" when all were)."""
    if n_ok == n_bootstrap:
        return ""
    return f"; {n_bootstrap - n_ok} of {n_bootstrap} bootstrap resamples could not be fitted"


def bootstrap_draws(
    fit_resample: Callable[[np.ndarray], Mapping[str, float] | None],
    n: int,
    *,
    n_bootstrap: int,
    seed: int,
    strata: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[dict[str, list[float]], int]:
    """Every quantity `fit_resample` returns, over `n_bootstrap` resamples: ({name: draws}, number
    of resamples that fitted). The i-th draw of every name comes from the same resample, so
    functions of several parameters (a frontier k_N C^a) keep their correlation.

    fit_resample(indices) refits on the given rows and returns {name: value}, the same names every
    time; it returns None (or raises ValueError) when a resample cannot be fitted, e.g. too few
    distinct points; such resamples are skipped. Deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    n_ok = 0
    for _ in range(n_bootstrap):
        indices = resample_indices(rng, n, strata=strata, groups=groups)
        try:
            values = fit_resample(indices)
        except (ValueError, np.linalg.LinAlgError):
            values = None
        if values is None:
            continue
        n_ok += 1
        for name, value in values.items():
            draws.setdefault(name, []).append(float(value))
    return draws, n_ok


def intervals(
    draws: Mapping[str, Sequence[float]], level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """The percentile interval of each quantity's draws."""
    return {name: percentile_interval(v, level) for name, v in draws.items()}
