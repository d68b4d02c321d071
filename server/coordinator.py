"""The round coordinator: live rounds in memory, every change durable before it is visible.

Rules that make crash recovery and fault handling simple:

* A message is applied to the in-memory protocol (which validates it and changes nothing on
  rejection) and appended to the store's event log; the client is acknowledged only once that
  append is on disk. Until then nothing derived from it is visible: a stage close is published
  only after its own event (which follows every message it depends on) is durable. If a write
  fails, every not-yet-durable event of the round is refused and the round is rebuilt from the
  store, so what clients were told never runs ahead of disk.
* Appends are group-committed by :mod:`secagg_server.journal`: whatever is ready when the disk
  is free goes in one transaction, one fsync, while the round lock is already released.
* A stage closes as soon as everyone expected has answered (the last accepted message closes
  it) or when its deadline passes (silent clients become dropouts). The close is recorded
  before the next messages are published to clients.
* On start-up every open round is rebuilt by replaying its events in order; its stage deadline
  restarts from now, giving clients time to reconnect.
* Clients wait with long polls on an :class:`asyncio.Event` that is swapped when what they wait
  for changes (a stage close, the end of the round), so a stage costs one round trip, not a
  polling interval.
* A client's exact retry of a message already accepted in the round is answered ``replayed``
  (409) in every mode, even after its stage closed: the earlier attempt counts. Once the round
  is complete, other messages get ``round_done`` (409), as every message does once the round
  has left memory; both tell the client runtime to ask the inbox how it stands. Retries are
  recognised by comparing with the accepted bytes (small bodies kept in memory, large ones
  read back from the store only when the length matches), so no body is hashed for it (the
  protocol sessions keep their own fingerprints).

Heavy work (protocol checks on large bodies, stage closes such as the unmask, file writes and
fsyncs) runs in worker threads, so the event loop keeps answering health checks and other
rounds; small messages (adverts, shares, unmask replies) are checked inline, which costs less
than the hop to a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from .modes import ModeSpec, Rejected, RoundFailed, default_modes
from .store import INLINE_LIMIT, EventKind, RoundRow, RoundStatus, Store

__all__ = ["CANCELLED", "Coordinator", "not_live", "released_meta"]

#: The reason a round cancelled by its operator ends with (clients see it in the inbox's 409).
CANCELLED = "cancelled by the federation's operator"

log = logging.getLogger("secagg.server")
TICK_S = 0.1  # deadline checks only: a stage whose last message arrives closes at once


class Coordinator:
    """Owns every live round of one server process."""

    def __init__(self, store: Store, modes: Mapping[str, ModeSpec] | None = None) -> None:
        self.store = store
        self.modes = dict(default_modes() if modes is None else modes)
        self.live: dict[int, LiveRound] = {}
        self._new_round: dict[int, asyncio.Event] = {}
        self._open_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
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

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._journal = Journal(self.store, self._on_write_failure)
        self._journal.start()
        await asyncio.to_thread(self.store.erase_finished)
        for row in self.store.rounds(RoundStatus.OPEN):
            try:
                await asyncio.to_thread(self._replay, row)
            except Exception as exc:  # a round that cannot be rebuilt must not stop the server
                log.error("round %d could not be rebuilt (%s); marking it failed", row.id,
                          type(exc).__name__)
                await asyncio.to_thread(self._finish_failed, row.id, "could not be rebuilt "
                                        "from the store after a restart")
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._journal is not None:
            await self._journal.stop()
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await task

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
                    self._finish_failed(row.id, str(exc))
                    self.live.pop(row.id, None)
                    return None
                self._publish(live, out)
            live.seq = ev.seq + 1
        if live.protocol.done:  # crashed between the last stage close and the release
            agg, payload = live.protocol.result()
            self._finish_done(row.id, released_meta(row, agg), payload)
            self.live.pop(row.id, None)
            return None
        if not live.protocol.expected:
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

    def _build(self, row: RoundRow) -> LiveRound:
        spec = self.modes.get(row.mode)
        if spec is None:
            raise InvalidParameter(f"mode {row.mode!r} is not enabled on this server")
        participants = frozenset(range(int(row.config["num_clients"])))
        roster = self.roster(row.federation_id)
        return LiveRound(row=row, protocol=spec.build(row.config, participants, roster),
                         participants=participants, alive=participants,
                         deadline=time.monotonic() + row.stage_timeout)

    @staticmethod
    def _publish(live: LiveRound, out: dict[int, bytes]) -> None:
        live.stage_no += 1
        live.outbox = out
        live.alive = frozenset(out) if not live.protocol.done else live.alive
        live.deadline = time.monotonic() + live.row.stage_timeout

    # ---- opening rounds -------------------------------------------------------------------------

    async def open_round(self, federation_id: int, num_clients: int, mode: str,
                         options: dict[str, Any], stage_timeout: float) -> LiveRound:
        """Open the federation's next round; the live round, with the mode's ``notes`` (the
        warnings its config raised, such as a small federation's odds of a failed round)."""
        spec = self.modes.get(mode)
        if spec is None:
            raise Rejected(400, "mode_unavailable", f"mode {mode!r} is not available on this "
                           "server" + (" (start it with --allow-plain)" if mode == "plain" else ""),
                           f"one of {sorted(self.modes)}")
        async with self._open_lock:
            index = self.store.next_round_index(federation_id)
            try:
                config, notes = spec.configure(num_clients, index, options,
                                               self.roster(federation_id))
            except (TypeError, ValueError) as exc:  # InvalidParameter, or a string for a number
                detail = str(exc) if isinstance(exc, InvalidParameter) else \
                    f"an option has the wrong type ({exc})"
                raise Rejected(400, "invalid_options", detail, "options of the documented types "
                               f"(see {spec.options_doc})") from None
            row = await asyncio.to_thread(self.store.create_round, federation_id, index, mode,
                                          config, stage_timeout)
            live = self._build(row)
            live.notes = notes
            self.live[row.id] = live
        self._new_round_event(federation_id).set()
        self._new_round[federation_id] = asyncio.Event()
        log.info("round %d opened (federation %d, index %d, mode %s)", row.id, federation_id,
                 index, mode)
        for note in notes:
            log.warning("round %d: %s", row.id, note)
        return live

    async def cancel(self, live: LiveRound) -> None:
        """End an open round now: it fails with :data:`CANCELLED` (every client waiting on it
        hears so), nothing is released. What was accepted is on disk before the round ends."""
        while True:
            async with live.lock:
                if live.stale:  # rebuilt from disk meanwhile: cancel the rebuilt round
                    newer = self.live.get(live.row.id)
                    if newer is None or newer is live:
                        raise not_live(live.row.id, self.store.round(live.row.id))
                    live = newer
                    continue
                if self.live.get(live.row.id) is not live:
                    raise not_live(live.row.id, self.store.round(live.row.id))
                pending = [a.durable for acc in live.accepted.values() for a in acc
                           if a.durable is not None]
                # a failed write among them: the round ends anyway
                await asyncio.gather(*pending, return_exceptions=True)
                await asyncio.to_thread(self._finish_failed, live.row.id, CANCELLED)
                self._drop_live(live)
                log.info("round %d cancelled by the operator at stage %s", live.row.id,
                         live.protocol.stage)
                return

    def _new_round_event(self, federation_id: int) -> asyncio.Event:
        return self._new_round.setdefault(federation_id, asyncio.Event())

    async def wait_next_round(self, federation_id: int, client_id: int, after: int,
                              wait: float) -> RoundRow | None:
        """The first open round of the federation with index > ``after`` (long poll)."""
        end = time.monotonic() + wait
        while True:
            event = self._new_round_event(federation_id)
            for live in sorted(self.live.values(), key=lambda lv: lv.row.index):
                row = live.row
                if row.federation_id == federation_id and row.index > after \
                        and client_id in live.participants and not live.protocol.done:
                    return row
            left = end - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), left)

    # ---- messages -------------------------------------------------------------------------------

    async def submit(self, live: LiveRound, client_id: int, body: bytes) -> str:
        """Validate, record durably, and close the stage if everyone has answered."""
        large = len(body) > INLINE_LIMIT
        while True:
            async with live.lock:
                if live.stale:  # rebuilt from disk meanwhile: go on with the rebuilt round
                    newer = self.live.get(live.row.id)
                    if newer is None or newer is live:
                        raise not_live(live.row.id, self.store.round(live.row.id))
                    live = newer
                    continue
                # A retry whose ack was lost gets the same answer even if the round completed
                # since: checked before completion, or that client would believe it dropped.
                await self._check_retry(live, client_id, body)
                if live.protocol.done:  # completed, or failing: the inbox tells which
                    raise Rejected(409, "round_done", f"round {live.row.id} has ended; its inbox "
                                   "tells how")
                limit = live.protocol.max_message_bytes()
                if len(body) > limit:  # read in full only in case it was a retry (see the app)
                    raise Rejected(413, "body_too_large", f"body is {len(body)} bytes; the limit "
                                   f"here is {limit}", f"at most {limit} bytes")
                self.journal.check(live.row.id)
                stage = live.protocol.stage
                if large:
                    await asyncio.to_thread(live.protocol.receive, client_id, body)
                else:
                    live.protocol.receive(client_id, body)
                seq = live.seq
                live.seq += 1
                durable = self.journal.append(live.row.id, seq, EventKind.MSG, stage, client_id,
                                             body)
                live.remember(client_id, body, seq, durable)
                if not live.protocol.expected:
                    await self._advance(live)  # publishes only once durable (after this message)
            await durable  # the ack waits for the disk, the round lock does not
            return stage

    async def _check_retry(self, live: LiveRound, client_id: int, body: bytes) -> None:
        """Refuse (409 replayed) an exact copy of a message this client already had accepted."""
        for prior in live.accepted.get(client_id, ()):
            if prior.size != len(body):
                continue
            if prior.durable is not None:
                await prior.durable  # a retry racing its original: answer once it is on disk
            if prior.body is not None:
                same = prior.body == body
            else:
                same = await asyncio.to_thread(self.store.event_body, live.row.id,
                                               prior.seq) == body
            if same:
                raise Rejected(409, "replayed", "this exact message was already accepted in this "
                               "round")

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
            await asyncio.to_thread(self._finish_failed, round_id, str(exc))
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

    def _finish_failed(self, round_id: int, reason: str) -> None:
        self.store.finish_round(round_id, status=RoundStatus.FAILED, reason=reason, erase=True)

    def _drop_live(self, live: LiveRound) -> None:
        if self.live.get(live.row.id) is live:
            self.live.pop(live.row.id, None)
        live.notify()

    async def wait_inbox(self, round_id: int, client_id: int, after: int,
                         wait: float) -> tuple[str, int, bytes | None]:
        """Long poll: ("message", stage_no, bytes) | ("done"|"failed"|"dropped"|"waiting", n, None)."""
        end = time.monotonic() + wait
        while True:
            live = self.live.get(round_id)
            if live is None:
                row = self.store.round(round_id)
                done = row is not None and row.status is RoundStatus.DONE
                return ("done" if done else "failed"), 0, None
            if live.stage_no > after and client_id in live.outbox:
                return "message", live.stage_no, live.outbox[client_id]
            if client_id not in live.alive:
                return "dropped", live.stage_no, None
            event = live.changed
            left = end - time.monotonic()
            if left <= 0:
                return "waiting", live.stage_no, None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), left)

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
                                     len(live.protocol.expected))
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
