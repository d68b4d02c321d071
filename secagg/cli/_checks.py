"""Argument checks that name the flag the user typed, the rule, and what was found.

:func:`number` and :func:`name` are ``argparse`` types shared by every command line of the
project (``secagg``, ``secagg-client``, ``secagg-server``): each numeric option states its range
once, where it is declared, and a value outside it is refused before anything runs, e.g.
``argument --rounds: must be an integer >= 1, found 0``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from secagg.errors import InvalidParameter

__all__ = ["ArgumentParser", "check_range", "name", "number"]


def check_range(flag: str, value: float, *, low: float, high: float | None = None,
                high_inclusive: bool = True) -> None:
    """Raise :class:`InvalidParameter` unless ``low <= value`` (and ``value <= high`` or ``<``)."""
    above = high is not None and (value > high if high_inclusive else value >= high)
    if value < low or above:
        closing = "]" if high_inclusive else ")"
        rule = f">= {low}" if high is None else f"in [{low}, {high}{closing}"
        raise InvalidParameter(f"{flag} must be {rule}, found {value}")


def _show(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**63 else f"{value:g}"


def _rule(kind: str, low: float | None, high: float | None, low_open: bool, high_open: bool,
          unit: str) -> str:
    if low is not None and high is not None:
        rule = (f"{kind} in {'(' if low_open else '['}{_show(low)}, {_show(high)}"
                f"{')' if high_open else ']'}")
    elif low is not None:
        rule = f"{kind} {'>' if low_open else '>='} {_show(low)}"
    elif high is not None:
        rule = f"{kind} {'<' if high_open else '<='} {_show(high)}"
    else:
        rule = kind
    return f"{rule} {unit}".rstrip()


def number(kind: type[int] | type[float], *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False,
           unit: str = "") -> Callable[[str], int | float]:
    """An ``argparse`` type: parse an int or a finite float and check it lies in the range.

    ``low``/``high`` bound it (``None``: unbounded on that side); ``low_open``/``high_open``
    exclude the bound itself (``low=0, low_open=True``: strictly positive). ``unit`` is shown in
    the rule (``seconds``)."""
    what = "an integer" if kind is int else "a number"
    rule = _rule(what, low, high, low_open, high_open, unit)

    def parse(text: str) -> int | float:
        try:
            value: int | float = int(text, 10) if kind is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, found {text or repr(text)}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, found {text}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {rule}, found {text}")
        if high is not None and (value >= high if high_open else value > high):
            raise argparse.ArgumentTypeError(f"must be {rule}, found {text}")
        return value

    parse.__name__ = "integer" if kind is int else "number"  # argparse names the type so
    return parse


def name(text: str) -> str:
    """An ``argparse`` type for names (a federation's, an enterprise's): the identity rules of
    :mod:`secagg.identity`, and an empty or blank name is refused as such."""
    from secagg.identity import _check_name

    if not text.strip():
        raise argparse.ArgumentTypeError(f"must not be empty or blank, found {text!r}")
    try:
        return _check_name(text, "a name")
    except InvalidParameter as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("a name ")) from None


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
