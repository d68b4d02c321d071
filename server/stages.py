"""How live rounds move on: stage closes, their deadlines, and rebuilding a round from the store.

:class:`LiveRounds` holds every live round of one server process and is what
:class:`secagg_server.coordinator.Coordinator` (which takes messages in and opens, cancels and
long-polls rounds) is built on. Here:

* A stage closes as soon as everyone expected has answered (the coordinator calls
  :meth:`LiveRounds._advance` after the last accepted message) or when its deadline passes
  (:meth:`LiveRounds._tick`; silent clients become dropouts). The close is an event like a
  message: it is queued for the disk first and computed while it is written, and nothing it
  yields (the next messages, the result, a failure) is published before it is durable.
* On start-up every open round is rebuilt by replaying its events in order
  (:meth:`LiveRounds._replay`); its stage deadline restarts from now, giving clients time to
  reconnect. A round whose in-memory state ran ahead of a failed write is rebuilt the same way
  (:meth:`LiveRounds._rebuild`), so what clients were told never runs ahead of disk.
* A round that ends is recorded (released or failed, its bodies erased) before it leaves memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from secagg.contract import ReleasedAggregate
from secagg.errors import InvalidParameter
from secagg.identity import Roster

from .journal import Journal
from .live import LiveRound
from .modes import ModeSpec, Rejected, RoundFailed, RoundProtocol, default_modes
from .store import EventKind, RoundRow, RoundStatus, Store

__all__ = ["TICK_S", "LiveRounds", "not_live", "released_meta"]

log = logging.getLogger("secagg.server")
TICK_S = 0.1  # deadline checks only: a stage whose last message arrives closes at once


class LiveRounds:
    """Every live round of one server process, and how each moves from stage to stage."""

    def __init__(self, store: Store, modes: Mapping[str, ModeSpec] | None = None) -> None:
        self.store = store
        self.modes = dict(default_modes() if modes is None else modes)
        self.live: dict[int, LiveRound] = {}
        self._journal: Journal | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._rosters: dict[int, Roster | None] = {}  # a federation's roster never changes

    def roster(self, federation_id: int) -> Roster | None:
        """The federation's pinned roster (public), or None for one created without it."""
        if federation_id not in self._rosters:
            data = self.store.roster(federation_id)
            self._rosters[federation_id] = None if data is None else Roster.from_dict(data)
        return self._rosters[federation_id]

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise RuntimeError("Coordinator.start() was not called")
        return self._journal

    # ---- building and rebuilding ----------------------------------------------------------------

    def _build(self, row: RoundRow, protocol: RoundProtocol | None = None) -> LiveRound:
        """The live round of ``row``, its protocol built from the stored config (or the one
        just built from that same config when the round is opened)."""
        spec = self.modes.get(row.mode)
        if spec is None:
            raise InvalidParameter(f"mode {row.mode!r} is not enabled on this server")
        members = frozenset(range(int(row.config["num_clients"])))
        if protocol is None:
            protocol = spec.build(row.config, members, self.roster(row.federation_id))
        participants = members - frozenset(row.excluded)  # a left-out culprit is a dropout
        return LiveRound(row=row, protocol=protocol, participants=participants,
                         alive=participants, deadline=time.monotonic() + row.stage_timeout)

    def _replay(self, row: RoundRow) -> LiveRound | None:
        """Rebuild ``row`` from its stored events; the live round, or None if it completed."""
        live = self._build(row)
        for ev in self.store.events(row.id):
            if ev.kind is EventKind.MSG:
                assert ev.client_id is not None and ev.body is not None
                live.protocol.receive(ev.client_id, ev.body)
                live.remember(ev.client_id, ev.body, ev.seq, None)
            else:
                try:
                    out = live.protocol.advance()
                except RoundFailed as exc:  # crashed between a failing close and its record
                    self._finish_failed(row.id, str(exc), exc.culprit)
                    self.live.pop(row.id, None)
                    return None
                self._publish(live, out)
            live.seq = ev.seq + 1
        if live.protocol.done:  # crashed between the last stage close and the release
            agg, payload = live.protocol.result()
            self._finish_done(row.id, released_meta(row, agg), payload)
            self.live.pop(row.id, None)
            return None
        if not live.awaiting:
            live.deadline = time.monotonic()  # everyone had answered: close at the next tick
        self.live[row.id] = live
        log.info("round %d rebuilt from %d events at stage %s", row.id, live.seq,
                 live.protocol.stage)
        return live

    def _on_write_failure(self, rounds: set[int]) -> None:
        for round_id in rounds:
            self._spawn(self._rebuild(round_id))

    async def _rebuild(self, round_id: int) -> None:
        """Replace a round whose in-memory state ran ahead of a failed write by its stored state."""
        live = self.live.get(round_id)
        if live is None:
            self.journal.release(round_id)
            return
        async with live.lock:
            try:
                if self.live.get(round_id) is live:
                    live.stale = True
                    try:
                        await asyncio.to_thread(self._replay, live.row)
                    except Exception as exc:
                        log.error("round %d could not be rebuilt (%s); marking it failed",
                                  round_id, type(exc).__name__)
                        self.live.pop(round_id, None)
                        await asyncio.to_thread(self._finish_failed, round_id, "could not be "
                                                "rebuilt from the store after a failed write")
            finally:
                self.journal.release(round_id)
                live.notify()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- stage closes ---------------------------------------------------------------------------

    @staticmethod
    def _publish(live: LiveRound, out: dict[int, bytes]) -> None:
        live.stage_no += 1
        live.outbox = out
        live.alive = frozenset(out) if not live.protocol.done else live.alive
        live.deadline = time.monotonic() + live.row.stage_timeout

    async def _advance(self, live: LiveRound) -> None:
        """Close the current stage (caller holds ``live.lock``).

        The close is an event like a message, so it is queued for the disk first and computed
        while it is being written: replay repeats it, so what it yields (the next messages, the
        result, or a failure) is a function of the log. Nothing it yields is published before
        it is on disk (and with it every message before it)."""
        closing = live.protocol.stage
        round_id = live.row.id
        seq = live.seq
        live.seq += 1
        recorded = self.journal.append(round_id, seq, EventKind.ADVANCE, closing)
        try:
            out = await asyncio.to_thread(live.protocol.advance)
        except RoundFailed as exc:
            log.warning("round %d failed at stage %s: %s", round_id, closing, exc)
            await recorded
            await asyncio.to_thread(self._finish_failed, round_id, str(exc), exc.culprit)
            self._drop_live(live)
            return
        if live.protocol.done:
            agg, payload = await asyncio.to_thread(live.protocol.result)
            meta = released_meta(live.row, agg)
            # the result file is written while the close is committed; the status flips after
            await asyncio.gather(recorded, asyncio.to_thread(self.store.write_result, round_id,
                                                             payload))
            await asyncio.to_thread(self.store.finish_round, round_id, status=RoundStatus.DONE,
                                    result_meta=meta, erase=True)
            log.info("round %d released its aggregate (%d survivors)", round_id,
                     len(meta.get("survivors", ())))
            self._drop_live(live)
            return
        await recorded
        self._publish(live, out)
        live.notify()

    def _finish_done(self, round_id: int, meta: dict[str, Any], payload: bytes) -> None:
        self.store.finish_round(round_id, status=RoundStatus.DONE, result_meta=meta, result=payload,
                                erase=True)

    def _finish_failed(self, round_id: int, reason: str, culprit: int | None = None) -> None:
        """Record the failure; a named culprit goes into the round's metadata, where later
        rounds find it (:meth:`Store.culprits`)."""
        meta = None if culprit is None else {"culprit": culprit}
        self.store.finish_round(round_id, status=RoundStatus.FAILED, reason=reason,
                                result_meta=meta, erase=True)

    def _drop_live(self, live: LiveRound) -> None:
        if self.live.get(live.row.id) is live:
            self.live.pop(live.row.id, None)
        live.notify()

    # ---- deadlines ------------------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            for live in list(self.live.values()):
                if now < live.deadline or live.lock.locked():
                    continue
                try:
                    async with live.lock:
                        if self.live.get(live.row.id) is live and not live.stale \
                                and time.monotonic() >= live.deadline:
                            log.info("round %d: stage %s deadline passed; %d silent client(s) "
                                     "become dropouts", live.row.id, live.protocol.stage,
                                     len(live.awaiting))
                            await self._advance(live)
                except Exception:
                    log.exception("deadline handling failed for round %d", live.row.id)
                    live.deadline = time.monotonic() + live.row.stage_timeout


def released_meta(row: RoundRow, agg: ReleasedAggregate) -> dict[str, Any]:
    """What the store keeps of a released aggregate: :meth:`ReleasedAggregate.to_header`'s JSON
    for the round's id and mode (the one form every reader parses with ``from_header``)."""
    meta: dict[str, Any] = json.loads(
        dataclasses.replace(agg, round_id=row.id, mode=row.mode).to_header())
    return meta


def not_live(round_id: int, row: RoundRow | None) -> Rejected:
    """The refusal (409 ``round_<status>``) of a message to a round that is no longer live;
    ``row`` is its stored row (None: it could not be found, as if it failed)."""
    status = RoundStatus.FAILED if row is None else row.status
    reason = f": {row.reason}" if row is not None and row.reason else ""
    return Rejected(409, f"round_{status}", f"round {round_id} is {status}{reason}")
