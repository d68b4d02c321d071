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
  it) or when its deadline passes; closes, deadlines and rebuilding rounds from the store (on
  start-up, after a failed write) are :mod:`secagg_server.stages`'s, which this class extends.
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
import logging
import time
from collections.abc import Mapping
from typing import Any

from secagg.errors import InvalidParameter

from .journal import Journal
from .live import LiveRound
from .modes import ModeSpec, Rejected
from .stages import LiveRounds, not_live, released_meta
from .store import INLINE_LIMIT, EventKind, RoundRow, RoundStatus, StaleRound, Store

__all__ = ["CANCELLED", "Coordinator", "not_live", "released_meta"]

#: The reason a round cancelled by its operator ends with (clients see it in the inbox's 409).
CANCELLED = "cancelled by the federation's operator"

log = logging.getLogger("secagg.server")


class Coordinator(LiveRounds):
    """Owns every live round of one server process: opens, cancels and long-polls rounds and
    takes clients' messages in (how rounds then move on: :class:`~secagg_server.stages.LiveRounds`).

    A client named as the culprit of a failed round (its own signed or committed messages prove
    it broke the protocol) is left out of every round the federation opens afterwards: it is not
    a participant, so it never hears of the round, and the round runs as if it had dropped out.
    The exclusion is stored with each round, so it outlives restarts.
    """

    #: leave culprits of earlier rounds out of new rounds (positive-control tests switch it off)
    exclude_culprits = True
    #: how often :meth:`open_round` builds a round again when the federation changed (a
    #: readmission, a failed round naming a culprit) between its reads and the insert
    open_attempts = 5

    def __init__(self, store: Store, modes: Mapping[str, ModeSpec] | None = None) -> None:
        super().__init__(store, modes)
        self._new_round: dict[int, asyncio.Event] = {}
        self._open_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None

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
            for attempt in range(1, self.open_attempts + 1):
                index, culprits, config, notes, protocol = await self._plan_round(
                    federation_id, num_clients, mode, spec, options)
                excluded = tuple(sorted(culprits))
                try:
                    # the store checks, in the insert's transaction, that the index and the
                    # left-out set are still what the round was built for: a readmission (or a
                    # failed round naming a culprit) committed meanwhile makes it stale
                    row = await asyncio.to_thread(
                        self.store.create_round, federation_id, index, mode, config,
                        stage_timeout, excluded,
                        left_out=frozenset(culprits) if self.exclude_culprits else None)
                    break
                except StaleRound as exc:
                    log.info("round of federation %d rebuilt (attempt %d): %s", federation_id,
                             attempt, exc)
            else:
                raise Rejected(503, "federation_changed", f"federation {federation_id} changed "
                               f"(readmissions or failed rounds) while each of "
                               f"{self.open_attempts} attempts to open its round was being "
                               "built; nothing was opened", "the same request again")
            live = self._build(row, protocol)
            notes = (*notes, *(f"client {c} is left out: named as the culprit of round {i}"
                               for c, i in sorted(culprits.items())))
            live.notes = notes
            self.live[row.id] = live
        self._new_round_event(federation_id).set()
        self._new_round[federation_id] = asyncio.Event()
        log.info("round %d opened (federation %d, index %d, mode %s)", row.id, federation_id,
                 index, mode)
        for note in notes:
            log.warning("round %d: %s", row.id, note)
        return live

    async def _plan_round(self, federation_id: int, num_clients: int, mode: str,
                          spec: ModeSpec, options: dict[str, Any]
                          ) -> tuple[int, dict[int, int], dict[str, Any], tuple[str, ...], Any]:
        """The federation's next index and culprits as stored now, and the round's config,
        notes and protocol built for them (index, culprits, config, notes, protocol)."""
        index = self.store.next_round_index(federation_id)
        roster = self.roster(federation_id)
        culprits = await asyncio.to_thread(self.store.culprits, federation_id) \
            if self.exclude_culprits else {}
        excluded = tuple(sorted(culprits))
        try:
            options = spec.leave_out(options, frozenset(excluded), index, num_clients)
            config, notes = spec.configure(num_clients, index, options, roster)
            # the round's protocol is built (and so checked) before the round is stored: a
            # config its session refuses is the operator's to fix, never a stored round
            protocol = spec.build(config, frozenset(range(int(config["num_clients"]))), roster)
        except (TypeError, ValueError) as exc:  # InvalidParameter, or a string for a number
            detail = str(exc) if isinstance(exc, InvalidParameter) else \
                f"an option has the wrong type ({exc})"
            raise Rejected(400, "invalid_options", detail, "options of the documented types "
                           f"(see {spec.options_doc})") from None
        remaining = int(config["num_clients"]) - len(excluded)
        if excluded and remaining < spec.quorum(config):
            raise Rejected(409, "too_few_members", f"clients {list(excluded)} are left out "
                           f"as culprits of earlier rounds; the {remaining} remaining "
                           f"member(s) cannot complete a {mode} round that needs "
                           f"{spec.quorum(config)}", "a federation with enough members "
                           "outside the excluded culprits (lower the round's threshold, or "
                           "create a federation without them)")
        return index, culprits, config, tuple(notes), protocol

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
                if client_id not in live.participants:
                    raise Rejected(403, "left_out", f"client {client_id} is left out of round "
                                   f"{live.row.id}: it was named as the culprit of an earlier "
                                   "round of this federation", "a round it takes part in")
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
                if not live.awaiting:
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
