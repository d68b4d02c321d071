"""Where a CKKS client session's work goes, told to whoever drives it: sessions read no clock.

A session names each piece of its work (``"advertise"``, ``"check adverts"``, ``"deal"``,
``"open key"``, ``"encrypt"``, ``"sketch"``, ``"sign"``, ``"verify aggregate"``, ``"decrypt"``)
to an optional :data:`PhaseListener`: ``listener(name, True)`` when the piece starts and
``listener(name, False)`` when it ends (also when it ends by raising). The listener belongs to
the driver, which owns the clock: :class:`secagg.ckks.simulate.PhaseTimer` sums the seconds per
phase for the simulator and the benchmarks. Like a socket or a thread, a clock stays outside the
sans-IO session, so a driver can replay, test or time it however it likes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from secagg.errors import InvalidParameter

__all__ = ["PhaseListener", "Phases"]

#: ``listener(phase, started)``: ``started`` is True as the phase begins, False as it ends
PhaseListener = Callable[[str, bool], None]


class Phases:
    """A session's side: ``with phases("encrypt"): ...`` tells the listener, if there is one."""

    __slots__ = ("_listener",)

    def __init__(self, listener: PhaseListener | None = None) -> None:
        if listener is not None and not callable(listener):
            raise InvalidParameter("on_phase must be a callable(phase: str, started: bool), "
                                   f"found {type(listener).__name__}")
        self._listener = listener

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        listener = self._listener
        if listener is None:
            yield
            return
        listener(name, True)
        try:
            yield
        finally:
            listener(name, False)
