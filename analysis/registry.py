"""The registry of laws: what each law is, found where it lives.

A law is one module of `scalinglab.analysis.laws`. The module holds all of it (its pure fit, its
prediction, its checks, its figure, its report section) and lists its `Law` objects in `LAWS`.
FitResult, the report and the CLI reach a law only through `get(name)` and `laws()`, so adding a
law adds one module, and no code elsewhere branches on a law's name.

This module imports nothing of the analysis package (FitResult calls it), and the laws are
imported by name on first use: `scaling-fit --help` loads no fit's dependencies.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

LAWS_PACKAGE = "scalinglab.analysis.laws"


@dataclass(frozen=True)
class Argument:
    """One argparse argument of a law's command: add_argument(*flags, **options)."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    """A `scaling-fit` subcommand. fits: it takes the scale columns and the bootstrap options
    (every fit but `transfer`, whose intervals are bands)."""

    name: str
    help: str
    description: str
    arguments: tuple[Argument, ...] = ()
    fits: bool = True
    order: int = 0


@dataclass(frozen=True)
class ReportEntry:
    """A section of `scaling-fit report`: its title, the options of the law's analyse(), and
    its place (sections are analysed in this order)."""

    title: str
    order: int
    options: dict[str, Any] = field(default_factory=dict)


class Law:
    """What every law provides. Subclasses override what their law has; the defaults say, in one
    line, that it has none.

    name:      the FitResult.law string it owns.
    approach:  the law's number among Chinchilla's approaches to the compute-optimal frontier
               (1 envelope, 2 IsoFLOP, 3 L(N, D)); approaches fitted to the same runs must agree.
    command:   its `scaling-fit` subcommand, if it has one.
    report:    its sections of `scaling-fit report`.
    depends:   derived values -> the parameters they rest on (not identified when those are not).
    """

    name: str = ""
    approach: int | None = None
    command: Command | None = None
    report: tuple[ReportEntry, ...] = ()
    depends: dict[str, tuple[str, ...]] = {}

    def predict(self, fit: Any, *inputs: Any) -> Any:
        raise ValueError(f"no prediction for law {self.name!r}")

    def allocation(self, derived: Any, C: Any) -> tuple[Any, Any]:
        """(N_opt, D_opt) at compute C from the derived values (which may be arrays of draws)."""
        raise ValueError(
            "compute-optimal allocation needs a chinchilla, isoflop or envelope fit, "
            f"got law={self.name!r}"
        )

    def plot(self, fit: Any, ax: Any = None, **options: Any) -> Any:
        """Draw the fit on `ax` (None: a new pyplot Axes) and return the Axes."""
        raise ValueError(f"no drawing for law {self.name!r}")

    def draw_loss(self, ax: Any, fit: Any, curve_x: Any, **context: Any) -> list[Any]:
        """Draw the law over plot_loss's points (context: x_name, loss, curves, scale); returns
        the losses drawn, which the y range must hold."""
        return []

    def held_out(self, full: Any, train: Any, arrays: tuple, held: Any, key: Any) -> tuple:
        """({quantity: predicted}, {quantity: observed}) at the rows `held` out of `train`'s
        data, what leave-largest-out compares; full() is the fit on all of `arrays`."""
        raise ValueError(f"leave_largest_out does not support law {self.name!r}")

    def residuals(self, fit: Any, *arrays: Any) -> dict[str, tuple[Any, Any]]:
        """{quantity: (predicted, observed)} over the data the fit was fitted to."""
        raise ValueError(f"no residuals for law {self.name!r}")

    def headline(self, fit: Any) -> list[dict[str, Any]]:
        """The results a trusted fit stands for: [{quantity, text, value, lo, hi, at}], text a
        format string with one {} for the value and its interval."""
        return []

    def load(self, args: Any) -> Any:
        """The data a command reads (a Study): the run frame by default."""
        from scalinglab.analysis.study import load_study

        return load_study(args)

    def analyse(self, study: Any, fitted: dict[str, Any], **options: Any) -> Any:
        """The law's report section (a Section) from a Study; `fitted`: earlier sections' fits
        by law, for a figure drawing them side by side."""
        raise ValueError(f"law {self.name!r} has no analysis of runs")

    def wandb_prefix(self, section: Any) -> str:
        """The prefix of the section's keys in a W&B run (law/fit, law/trusted, ...)."""
        return self.name

    def companions(self, study: Any, section: Any) -> list[Any]:
        """Sections of the data that go with this law's (figures without a fit)."""
        return []


class PointLaw(Law):
    """A law of a loss at each point (power, L(N, D)): it predicts the held-out rows' targets,
    the last array, from their inputs, the others."""

    target: str = "loss"  # the quantity predicted, named in checks and residuals
    data: str = "(N, D, loss)"  # the arrays, in words

    def held_out(self, full: Any, train: Any, arrays: tuple, held: Any, key: Any) -> tuple:
        *inputs, target = (a[held] for a in arrays)
        return {self.target: train.predict(*inputs)}, {self.target: target.astype(float)}

    def residuals(self, fit: Any, *arrays: Any) -> dict[str, tuple[Any, Any]]:
        if len(arrays) != self.data.count(",") + 1:
            raise ValueError(
                f"residual_summary of a {self.name} fit needs its inputs and targets: {self.data}"
            )
        *inputs, target = arrays
        return {self.target: (fit.predict(*inputs), target)}


class OptimumLaw(Law):
    """A law through per-budget optima (IsoFLOP minima, envelope winners, the best lr and batch
    size): its extras[rows] hold them, with the field of each quantity it predicts."""

    rows: str = "budgets"
    fields: dict[str, str] = {}  # predict() key -> the row's field

    def optima(self, fit: Any) -> tuple[Any, dict[str, Any]]:
        """C and the per-budget optima the fit used for its laws."""
        import numpy as np

        used = [row for row in fit.extras[self.rows] if row.get("in_range", True)]
        c = np.array([row["C"] for row in used])
        return c, {q: np.array([row[f] for row in used]) for q, f in self.fields.items()}

    def held_out(self, full: Any, train: Any, arrays: tuple, held: Any, key: Any) -> tuple:
        c, optima = self.optima(full())
        outside = c > key[~held].max()  # a budget's C is its runs' geometric mean
        if not outside.any():
            raise ValueError("the held-out budgets have no optimum inside their sampled range")
        return train.predict(c[outside]), {q: v[outside] for q, v in optima.items()}

    def residuals(self, fit: Any, *arrays: Any) -> dict[str, tuple[Any, Any]]:
        c, observed = self.optima(fit)
        predicted = fit.predict(c)
        return {q: (predicted[q], observed[q]) for q in observed}


_FOUND: dict[str, Law] = {}


def laws() -> dict[str, Law]:
    """Every law, by name, from the modules of the laws package (imported once, on first use)."""
    if not _FOUND:
        package = importlib.import_module(LAWS_PACKAGE)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{LAWS_PACKAGE}.{info.name}")
            for law in getattr(module, "LAWS", ()):
                _FOUND[law.name] = law
    return _FOUND


def get(name: str) -> Law:
    """The law named `name`, or a ValueError listing the known ones."""
    found = laws()
    if name not in found:
        raise ValueError(f"no law {name!r}; known laws: {', '.join(sorted(found))}")
    return found[name]


def commands() -> list[tuple[Command, Law]]:
    """Every law's `scaling-fit` subcommand, in the order of their `order`."""
    found = [(law.command, law) for law in laws().values() if law.command is not None]
    return sorted(found, key=lambda pair: pair[0].order)


def report_entries() -> list[tuple[ReportEntry, Law]]:
    """Every law's report sections, in the order they are analysed."""
    found = [(entry, law) for law in laws().values() for entry in law.report]
    return sorted(found, key=lambda pair: pair[0].order)
