"""What every fit checks of its inputs before fitting: arrays, starting points and bounds.

Bounds, one convention: a dict from parameter name to (low, high), in the parameter's own units
(A itself, not log A), naming only the parameters to bound; the others keep their defaults. Every
fit records the box it used the same way, extras["bounds"] = {name: [low, high]}, which
checks.within_bounds reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def positive_1d(name: str, values: object) -> np.ndarray:
    """`values` as a 1-D float array, or a ValueError naming what is wrong with it."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric: {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: a fit needs points")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} has non-finite values (NaN or inf) at index {bad[:5].tolist()}")
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise ValueError(
            f"{name} must be positive; got {float(arr[bad[0]]):g} at index {int(bad[0])}"
            f"{f' and {bad.size - 1} more' if bad.size > 1 else ''}"
        )
    return arr


def aligned(**values: object) -> None:
    """A ValueError where two of `values` are pandas Series (or anything with an index) whose
    indexes differ: arrays are paired by position, and Series so paired would be wrong pairs."""
    indexed = {
        name: v.index for name, v in values.items() if hasattr(v, "index") and hasattr(v, "iloc")
    }
    first = next(iter(indexed.items()), None)
    for name, index in indexed.items():
        if first is not None and not index.equals(first[1]):
            raise ValueError(
                f"{first[0]} and {name} are Series with different indexes: their rows would be "
                "paired by position; align them (e.g. frame[[...]] of one frame) or pass arrays"
            )


def same_length(**arrays: np.ndarray) -> int:
    """The arrays' common length, or a ValueError listing each one's."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")
    return next(iter(lengths.values()))


def count(name: str, value: object, least: int) -> int:
    """A fit option that counts something (n_bootstrap, n_starts...): an int of at least `least`,
    or a ValueError naming it."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be a count, {least} or more; got {value!r}")
    return int(value)


def enough_points(n: int, n_params: int, what: str) -> None:
    if n < n_params:
        raise ValueError(f"{what} has {n_params} parameters but only {n} points")


def fraction(tolerance: float) -> float:
    """A near-optimal band's width, a fraction of the best loss in [0, 1)."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance is a fraction of the best loss in [0, 1), got {tolerance}")
    return tolerance


def named(values: Sequence[float] | Mapping[str, float] | None, names: Sequence[str], what: str):
    """Values given by name or in the order of `names`, as a dict, or a ValueError."""
    if values is None or isinstance(values, Mapping):
        values = dict(values or {})
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"{what}: unknown parameter(s) {sorted(unknown)}; expected {names}")
        return values
    values = list(values)
    if len(values) != len(names):
        raise ValueError(f"{what} needs {len(names)} values in order {names}, got {len(values)}")
    return dict(zip(names, values, strict=True))


def box(
    bounds: Mapping[str, tuple[float, float]] | None,
    defaults: Mapping[str, tuple[float, float]],
) -> dict[str, tuple[float, float]]:
    """The box a fit uses: `defaults` with the given {name: (low, high)} replacing theirs, or a
    ValueError naming what breaks the convention (module docstring)."""
    names = list(defaults)
    if bounds is not None and not isinstance(bounds, Mapping):
        # A sequence is ambiguous: in parameter order, or scipy's (lows, highs)?
        raise ValueError(
            f"bounds must be a dict name -> (low, high), e.g. {{'alpha': (0.0, 2.0)}}, "
            f"for parameters {names}; got {type(bounds).__name__} {bounds!r}"
        )
    out = dict(defaults)
    for name, pair in named(bounds, names, "bounds").items():
        try:
            low, high = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"bounds[{name!r}] must be a pair (low, high), got {pair!r}") from None
        if not low < high:
            raise ValueError(f"bounds[{name!r}] must have low < high, got ({low:g}, {high:g})")
        out[name] = (low, high)
    return out
