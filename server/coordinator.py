"""The round coordinator: live rounds in memory, every change durable before it is visible.

Rules that make crash recovery and fault handling simple:

* A message is applied to the in-memory protocol (which validates it and changes nothing on
  rejection), then appended to the store; only then is the client acknowledged. If the write
  fails, the round is rebuilt from the store, so memory never runs ahead of disk.
* A stage closes when everyone expected has answered or its deadline passes (silent clients
  become dropouts). The close is recorded before the next messages are published to clients.
* On start-up every open round is rebuilt by replaying its events in order; its stage deadline
  restarts from now, giving clients time to reconnect.
* Clients wait with long polls on an :class:`asyncio.Event` that is swapped on every change,
  so a stage costs one round trip, not a polling interval.

Heavy work (protocol checks on megabyte bodies, the unmask, fsyncs) runs in worker threads under
a per-round lock, so the event loop keeps answering health checks and other rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from secagg.errors import InvalidParameter
from server.modes import MODES, ModeSpec, Rejected, RoundFailed, RoundProtocol
from server.store import RoundRow, Store

__all__ = ["Coordinator", "LiveRound"]

log = logging.getLogger("secagg.server")
_OPTIONS_DOC = {"masking": "secagg.masking.MaskingConfig.create",
                "ckks": "server.modes (ckks options) and secagg.ckks.CKKSRoundConfig"}
TICK_S = 0.1


@dataclass
class LiveRound:
    """One open round: the protocol object plus what clients are waiting for."""

    row: RoundRow
    protocol: RoundProtocol
    participants: frozenset[int]
    deadline: float
    seq: int = 0  # events recorded so far
    stage_no: int = 0  # stage closes so far (clients poll with ``after=stage_no``)
    outbox: dict[int, bytes] = field(default_factory=dict)
    alive: frozenset[int] = frozenset()
    accepted: set[bytes] = field(default_factory=set)  # SHA-256 of every accepted body
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Coordinator:
    """Owns every live round of one server process."""

    def __init__(self, store: Store, modes: dict[str, ModeSpec] | None = None) -> None:
        self.store = store
        self.modes = dict(MODES if modes is None else modes)
        self.live: dict[int, LiveRound] = {}
        self._new_round: dict[int, asyncio.Event] = {}
        self._open_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.store.erase_finished)
        for row in self.store.rounds("open"):
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

    def _replay(self, row: RoundRow) -> None:
        live = self._build(row)
        for ev in self.store.events(row.id):
            if ev.kind == "msg":
                assert ev.client_id is not None and ev.body is not None
                live.protocol.receive(ev.client_id, ev.body)
                live.accepted.add(hashlib.sha256(ev.body).digest())
            else:
                self._publish(live, live.protocol.advance())
            live.seq = ev.seq + 1
        if live.protocol.done:  # crashed between the last stage close and the release
            meta, payload = live.protocol.result()
            self._finish_done(row.id, meta, payload)
            return
        if not live.protocol.expected:
            live.deadline = time.monotonic()  # everyone had answered: close at the next tick
        self.live[row.id] = live
        log.info("round %d rebuilt from %d events at stage %s", row.id, live.seq,
                 live.protocol.stage)

    def _build(self, row: RoundRow) -> LiveRound:
        spec = self.modes.get(row.mode)
        if spec is None:
            raise InvalidParameter(f"mode {row.mode!r} is not enabled on this server")
        participants = frozenset(range(int(row.config["num_clients"])))
        return LiveRound(row=row, protocol=spec.build(row.config, participants),
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
                         options: dict[str, Any], stage_timeout: float) -> RoundRow:
        spec = self.modes.get(mode)
        if spec is None:
            raise Rejected(400, "mode_unavailable", f"mode {mode!r} is not available on this "
                           "server" + (" (start it with --allow-plain)" if mode == "plain" else ""),
                           f"one of {sorted(self.modes)}")
        async with self._open_lock:
            index = self.store.next_round_index(federation_id)
            try:
                config = spec.make_config(num_clients, index, options)
            except (TypeError, ValueError) as exc:  # InvalidParameter, or a string for a number
                detail = str(exc) if isinstance(exc, InvalidParameter) else \
                    f"an option has the wrong type ({exc})"
                raise Rejected(400, "invalid_options", detail, "options of the documented types "
                               f"(see {_OPTIONS_DOC.get(mode, 'server.modes')})") from None
            row = await asyncio.to_thread(self.store.create_round, federation_id, index, mode,
                                          config, stage_timeout)
            self.live[row.id] = self._build(row)
        self._new_round_event(federation_id).set()
        self._new_round[federation_id] = asyncio.Event()
        log.info("round %d opened (federation %d, index %d, mode %s)", row.id, federation_id,
                 index, mode)
        return row

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
        digest = (await asyncio.to_thread(hashlib.sha256, body)).digest()
        async with live.lock:
            # A retry whose ack was lost gets the same answer even if the round completed since:
            # checked before completion, or that client would wrongly believe it dropped.
            if digest in live.accepted:
                raise Rejected(409, "replayed", "this exact message was already accepted in this "
                               "round")
            if live.protocol.done:
                raise Rejected(409, "round_complete", "the round is already complete")
            stage = live.protocol.stage
            await asyncio.to_thread(live.protocol.receive, client_id, body)
            try:
                await asyncio.to_thread(self.store.append, live.row.id, live.seq, "msg", stage,
                                        client_id, body)
            except Exception:
                log.exception("store write failed for round %d; rebuilding it from disk", live.row.id)
                await asyncio.to_thread(self._replay, live.row)
                raise
            live.seq += 1
            live.accepted.add(digest)
            if not live.protocol.expected:
                await self._advance(live)
            else:
                live.notify()
            return stage

    async def _advance(self, live: LiveRound) -> None:
        """Close the current stage (caller holds ``live.lock``)."""
        closing = live.protocol.stage
        try:
            out = await asyncio.to_thread(live.protocol.advance)
        except RoundFailed as exc:
            log.warning("round %d failed at stage %s: %s", live.row.id, closing, exc)
            await asyncio.to_thread(self._finish_failed, live.row.id, str(exc))
            self._drop_live(live)
            return
        await asyncio.to_thread(self.store.append, live.row.id, live.seq, "advance", closing)
        live.seq += 1
        if live.protocol.done:
            meta, payload = await asyncio.to_thread(live.protocol.result)
            await asyncio.to_thread(self._finish_done, live.row.id, meta, payload)
            log.info("round %d released its aggregate (%d survivors)", live.row.id,
                     len(meta.get("survivors", ())))
            self._drop_live(live)
            return
        self._publish(live, out)
        live.notify()

    def _finish_done(self, round_id: int, meta: dict[str, Any], payload: bytes) -> None:
        self.store.finish_round(round_id, status="done", result_meta=meta, result=payload)
        self.store.erase_bodies(round_id)

    def _finish_failed(self, round_id: int, reason: str) -> None:
        self.store.finish_round(round_id, status="failed", reason=reason)
        self.store.erase_bodies(round_id)

    def _drop_live(self, live: LiveRound) -> None:
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
                status = "missing" if row is None else row.status
                return ("done" if status == "done" else "failed"), 0, None
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
                        if live.row.id in self.live and time.monotonic() >= live.deadline:
                            log.info("round %d: stage %s deadline passed; %d silent client(s) "
                                     "become dropouts", live.row.id, live.protocol.stage,
                                     len(live.protocol.expected))
                            await self._advance(live)
                except Exception:
                    log.exception("deadline handling failed for round %d", live.row.id)
                    live.deadline = time.monotonic() + live.row.stage_timeout
