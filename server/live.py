"""One open round in memory: its protocol object, what clients wait for, what it accepted.

The coordinator (:mod:`secagg_server.coordinator`) owns these; the HTTP layer reads them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .modes import RoundProtocol
from .store import INLINE_LIMIT, RoundRow

__all__ = ["LiveRound"]


@dataclass(eq=False)
class _Accepted:
    """One accepted message, kept to recognise an exact retry of it."""

    size: int
    seq: int
    body: bytes | None  # small bodies; large ones are compared with the stored copy
    durable: asyncio.Future[None] | None  # None: known to be on disk


@dataclass
class LiveRound:
    """One open round: the protocol object plus what clients are waiting for."""

    row: RoundRow
    protocol: RoundProtocol
    participants: frozenset[int]
    deadline: float
    seq: int = 0  # events recorded (or queued for the journal) so far
    stage_no: int = 0  # stage closes so far (clients poll with ``after=stage_no``)
    outbox: dict[int, bytes] = field(default_factory=dict)
    alive: frozenset[int] = frozenset()
    accepted: dict[int, list[_Accepted]] = field(default_factory=dict)  # per client
    stale: bool = False  # replaced by a rebuild from disk after a failed write
    notes: tuple[str, ...] = ()  # the mode's warnings when the round was opened (not stored)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def awaiting(self) -> frozenset[int]:
        """Participants whose message for the current stage is still awaited. A member left
        out of the round (a culprit of an earlier one) is never awaited: the protocol counts it
        as a dropout when the stage closes."""
        return frozenset(self.protocol.expected) & self.participants

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def largest_accepted(self, client_id: int) -> int:
        """The size of this client's largest accepted message (0 if none)."""
        return max((a.size for a in self.accepted.get(client_id, ())), default=0)

    def remember(self, client_id: int, body: bytes, seq: int,
                 durable: asyncio.Future[None] | None) -> None:
        small = body if len(body) <= INLINE_LIMIT else None
        self.accepted.setdefault(client_id, []).append(_Accepted(len(body), seq, small, durable))
