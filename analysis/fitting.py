"""The skeleton every fit shares: the bootstrap over its rows (and what a FitResult records of
it), and its extrapolation check by its own fit function. The fits (analysis/laws/) supply the
law; inputs.py checks their arrays."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import scalinglab.analysis.checks as checks
from scalinglab.analysis.bootstrap import bootstrap_draws, intervals, skipped_note
from scalinglab.analysis.inputs import count
from scalinglab.analysis.result import FitResult
from scalinglab.analysis.validate import leave_largest_out


@dataclass(frozen=True)
class Bootstrap:
    """A fit's resamples: {name: draws} (the i-th draw of every name from one resample), how many
    resamples fitted, and how many were asked for."""

    draws: dict[str, list[float]]
    n_ok: int
    n_bootstrap: int

    @property
    def ci95(self) -> dict[str, tuple[float, float]]:
        return intervals(self.draws)

    @property
    def note(self) -> str:
        """A message fragment when some resamples could not be fitted ("" when all were)."""
        return skipped_note(self.n_ok, self.n_bootstrap)

    def extras(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """What a FitResult's extras record of it; names: the draws kept (default all)."""
        draws = (
            self.draws if names is None else {k: self.draws[k] for k in names if k in self.draws}
        )
        return {"n_bootstrap": self.n_bootstrap, "n_bootstrap_ok": self.n_ok, "bootstrap": draws}


def bootstrap(
    fit_resample: Callable[[np.ndarray], Mapping[str, float] | None], n: int, **options: Any
) -> Bootstrap:
    """`fit_resample(indices)` over resamples of the `n` rows: bootstrap_draws with `options`
    (n_bootstrap, seed, strata or groups)."""
    count("n_bootstrap", options["n_bootstrap"], 0)
    draws, n_ok = bootstrap_draws(fit_resample, n, **options)
    return Bootstrap(draws, n_ok, options["n_bootstrap"])


def extrapolation(
    result: FitResult,
    fit_fn: Callable[..., FitResult],
    arrays: Sequence[np.ndarray],
    *,
    run: bool,
    quantity: str,
    statistic: str,
    threshold: float,
    held_out: str,
    **kw: Any,
) -> dict:
    """The extrapolation check of `result`: `fit_fn`, the law's own fit, refitted without the
    largest scale (leave_largest_out with kw) against `result` itself on all the data, which is
    never refitted. run=False (the refits' own check_extrapolation=False): fails as not run."""

    def leave_out() -> dict:
        return leave_largest_out(fit_fn, *arrays, full=result, **kw)

    return checks.extrapolation(
        leave_out if run else None,
        quantity=quantity,
        statistic=statistic,
        threshold=threshold,
        held_out=held_out,
    )
