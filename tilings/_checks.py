"""Argument checks shared by the tilings functions (one-line UsageErrors)."""

from __future__ import annotations

import numbers

from tilesweep.errors import UsageError


def check_positive_int(name: str, value: object, *, below: int | None = None) -> int:
    """Return `value` as an int if it is a positive integer (under `below`, if given), else raise a UsageError."""
    # bool is an Integral but never a size; numpy integers are accepted.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__}); pass a whole number >= 1")
    if value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}; pass a whole number >= 1")
    if below is not None and value >= below:
        raise UsageError(f"{name} must be a positive integer below {below}, got {value!r}")
    return int(value)
