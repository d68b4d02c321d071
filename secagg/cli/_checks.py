"""Argument checks that name the flag the user typed, the rule, and what was found."""

from __future__ import annotations

from secagg.errors import InvalidParameter

__all__ = ["check_range"]


def check_range(flag: str, value: float, *, low: float, high: float | None = None,
                high_inclusive: bool = True) -> None:
    """Raise :class:`InvalidParameter` unless ``low <= value`` (and ``value <= high`` or ``<``)."""
    above = high is not None and (value > high if high_inclusive else value >= high)
    if value < low or above:
        closing = "]" if high_inclusive else ")"
        rule = f">= {low}" if high is None else f"in [{low}, {high}{closing}"
        raise InvalidParameter(f"{flag} must be {rule}, found {value}")
