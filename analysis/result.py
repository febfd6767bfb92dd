"""The one result type every fit returns, and its JSON form (the `scaling-fit --json` schema)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FitResult:
    """A fitted law.

    law:       "power", "chinchilla", "isoflop", "envelope" or "hparams".
    params:    fitted parameters by name (chinchilla: E, A, B, alpha, beta).
    ci95:      95% bootstrap interval [lo, hi] for every param and derived value that has one.
    derived:   quantities computed from the params (chinchilla/isoflop/envelope: a, b, ...).
    n_points:  points the fit used.
    converged: whether the optimiser reported success; `message` says why not.
    objective: final value of the fit's objective (lower is better).
    extras:    law-specific data for plots and reports (per-budget parabolas, residuals...);
               JSON-serialisable. chinchilla/isoflop/envelope: extras["bootstrap"] holds each
               resample's refitted values, {name: [draw, ...]}, for frontier_band.
    checks:    what the fit checked about itself (analysis/checks.py): {name, passed, detail,
               params}, params naming the parameters and derived values a failing check finds
               not identified ([] when it concerns the fit as a whole).
    """

    law: str
    params: dict[str, float]
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    derived: dict[str, float] = field(default_factory=dict)
    n_points: int = 0
    converged: bool = True
    message: str = ""
    objective: float = math.nan
    extras: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed_checks(self) -> list[dict[str, Any]]:
        """The reasons not to trust the fit, as check dicts: non-convergence first (named
        "converged"), then every failing check in order."""
        reasons = []
        if not self.converged:
            detail = f"the optimiser did not converge: {self.message}"
            reasons.append({"name": "converged", "passed": False, "detail": detail, "params": []})
        return reasons + [c for c in self.checks if not c["passed"]]

    @property
    def trusted(self) -> bool:
        """The fit converged and none of its checks failed."""
        return not self.failed_checks

    @property
    def not_identified(self) -> set[str]:
        """Parameters and derived values that a failing check finds not identified."""
        return {name for check in self.failed_checks for name in check.get("params", [])}

    def predict(self, *inputs: Any) -> Any:
        """Evaluate the fitted law.

        power: predict(x) -> y; chinchilla: predict(N, D) -> loss (nats/token);
        isoflop, envelope: predict(C) -> {"N_opt", "D_opt"}; hparams: predict(C) -> {"lr",
        "batch_size"}. C in FLOPs, N in parameters, D in tokens.
        """
        from scalinglab.analysis.laws import chinchilla_loss, power_law  # laws imports this module

        p = self.params
        if self.law == "power":
            return power_law(*inputs, p.get("E", 0.0), p["A"], p["alpha"])
        if self.law == "chinchilla":
            return chinchilla_loss(*inputs, **p)
        (C,) = inputs
        C = np.asarray(C, dtype=float)
        if self.law in ("isoflop", "envelope"):
            return {"N_opt": p["k_N"] * C ** p["a"], "D_opt": p["k_D"] * C ** p["b"]}
        if self.law == "hparams":
            return {"lr": p["k_lr"] * C ** p["e_lr"], "batch_size": p["k_bs"] * C ** p["e_bs"]}
        raise ValueError(f"no prediction for law {self.law!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": self.law,
            "params": dict(self.params),
            "ci95": {k: [float(lo), float(hi)] for k, (lo, hi) in self.ci95.items()},
            "derived": dict(self.derived),
            "n_points": self.n_points,
            "converged": self.converged,
            "message": self.message,
            "objective": self.objective,
            "extras": self.extras,
            "checks": [dict(c) for c in self.checks],
            "trusted": self.trusted,
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> FitResult:
        """The fit back from its to_dict() (or --json) form; `trusted` and any other key that is
        not a field (a report's "title") are recomputed or dropped."""
        fields = set(cls.__dataclass_fields__)
        values = {k: v for k, v in document.items() if k in fields}
        values["ci95"] = {k: tuple(v) for k, v in values.get("ci95", {}).items()}
        return cls(**values)
