"""The one result type every fit returns, its JSON form (the `scaling-fit --json` schema), and
its notebook faces: a short repr, summary() as a table, plot() on an Axes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scalinglab.analysis.registry import get as get_law

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

# The repr's width in characters: a failing check's detail is cut to it (summary() has it all).
REPR_WIDTH = 100


@dataclass
class FitResult:
    """A fitted law.

    law:       "power", "chinchilla", "isoflop", "envelope", "hparams", "hparams_nd" or "transfer".
    params:    fitted parameters by name (chinchilla: E, A, B, alpha, beta).
    ci95:      95% bootstrap interval [lo, hi] for every param and derived value that has one.
    derived:   quantities computed from the params (chinchilla/isoflop/envelope: a, b, ...).
    n_points:  points the fit used.
    converged: whether the optimiser reported success; `message` says why not.
    objective: final value of the fit's objective (lower is better).
    extras:    law-specific data for plots and reports (per-budget parabolas, residuals...);
               JSON-serialisable, typed per law (each law module's *Extras TypedDict). extras["bootstrap"] holds each resample's refitted values,
               {name: [draw, ...]}, for frontier_band and loss_band; extras["data"], the points
               a power ({x, y}) or chinchilla ({N, D, loss}) fit was fitted to, for plot().
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
        "batch_size"}; hparams_nd: predict(N, D) -> {"lr", "batch_size"}. C in FLOPs, N in
        parameters, D in tokens.
        """
        return get_law(self.law).predict(self, *inputs)

    def rows(self) -> list[dict[str, Any]]:
        """One row per fitted parameter and derived quantity: name, kind ("param"/"derived"),
        value, ci95_lo, ci95_hi (NaN where the fit has no interval), identified ("no" where a
        failing check finds it not identified)."""
        rows = []
        not_identified = self.not_identified
        for kind, values in (("param", self.params), ("derived", self.derived)):
            for name, value in values.items():
                if kind == "derived" and name in self.params:
                    continue  # isoflop/envelope/hparams report their coefficients in both
                lo, hi = self.ci95.get(name, (math.nan, math.nan))
                identified = "no" if name in not_identified else "yes"
                rows.append(
                    {"name": name, "kind": kind, "value": value}
                    | {"ci95_lo": lo, "ci95_hi": hi, "identified": identified}
                )
        return rows

    def __repr__(self) -> str:
        """A screenful: law, points, trusted or not with each failing check (its detail cut to
        one line), then every parameter and derived value with its 95% interval. Never the
        bootstrap draws or the data (extras)."""
        failed = self.failed_checks
        trust = "trusted" if not failed else "NOT TRUSTED"
        lines = [f"FitResult({self.law}, {self.n_points} points, {trust})"]
        for check in failed:  # indented under the header, cut to the width
            lines.append("  " + _one_line(f"failed {check['name']}: {check['detail']}", REPR_WIDTH))
        for row in self.rows():
            has_interval = not math.isnan(row["ci95_lo"])
            interval = f"[{row['ci95_lo']:.4g}, {row['ci95_hi']:.4g}]" if has_interval else ""
            notes = [] if row["kind"] == "param" else ["derived"]
            notes += ["not identified"] if row["identified"] == "no" else []
            note = f"  ({', '.join(notes)})" if notes else ""
            lines.append(
                f"  {row['name']:<6} = {row['value']:<10.4g} {interval:<24}{note}".rstrip()
            )
        return "\n".join(lines)

    def summary(self) -> pd.DataFrame:
        """One row per parameter and derived value (index: name): kind, value, ci95_lo, ci95_hi
        (the 95% interval, NaN without one), identified, and failed_checks: the failing checks
        that concern it (those naming it, and those about the whole fit), comma-separated, or
        "none". attrs: law, n_points, trusted."""
        from pandas import DataFrame  # only here: a FitResult is plain data

        columns = ["name", "kind", "value", "ci95_lo", "ci95_hi", "identified"]
        table = DataFrame(self.rows(), columns=columns).set_index("name")
        failed = self.failed_checks

        def concerning(name: str) -> str:
            names = [c["name"] for c in failed if not c.get("params") or name in c["params"]]
            return ", ".join(dict.fromkeys(names)) or "none"

        table["failed_checks"] = [concerning(name) for name in table.index]
        table.attrs.update(law=self.law, n_points=self.n_points, trusted=self.trusted)
        return table

    def plot(self, ax: Axes | None = None, **options: Any) -> Axes:
        """Draw the fit with its data and 95% bootstrap band on `ax` (None: a new pyplot figure,
        so a notebook shows it) and return the Axes. The drawing is the report's own:

        power:              plot_loss(x, y, fit): the points, the law and its band (options:
                            x_name="n_params" | "tokens" | "flops" for the axis label).
        chinchilla:         plot_loss(N, loss, fit, tokens=D): L(N) at a few token counts.
        isoflop, envelope:  plot_frontier: the measured optima and N_opt(C) with its band
                            (plot_isoflop(fit) draws the IsoFLOP profiles beside it).
        hparams:            a ValueError: its figure has a panel per budget (plot_hparams).
        `options` go to that function.
        """
        return get_law(self.law).plot(self, ax, **options)

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


def _one_line(text: str, width: int) -> str:
    """`text` on one line of at most `width` characters, cut with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
