"""Group commit of round events: the coordinator's path to the disk.

Every accepted message and every stage close of a round is an event with a per-round sequence
number (:mod:`secagg_server.store`). The coordinator hands each to :meth:`Journal.append`, which
returns a future that resolves once the event is on disk; the client is acknowledged only then.
Events queue in order and whatever is ready when the disk is free is committed in one
transaction, one fsync, while the round lock is already released: the ten small messages of a
key-advert stage cost a couple of fsyncs, not ten in a row, and large bodies are written to
their own files in parallel. A failed write fails every not-yet-durable event of the rounds it
touched (:class:`StoreWriteFailed`); the coordinator rebuilds those rounds from the store, so
what clients were told never runs ahead of disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .store import INLINE_LIMIT, EventKind, Store, event_row

__all__ = ["Journal", "StoreWriteFailed"]

log = logging.getLogger("secagg.server")


class StoreWriteFailed(Exception):
    """An event could not be made durable; its round is being rebuilt from the store (the
    client sees a 500 and retries)."""


@dataclass(eq=False)
class _Pending:
    round_id: int
    seq: int
    kind: EventKind
    stage: str
    client_id: int | None
    body: bytes | None
    blob: asyncio.Future[str] | None  # the body's own file, being written
    durable: asyncio.Future[None]


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (the awaiting request logs or answers it)."""
    if not fut.cancelled():
        fut.exception()


class Journal:
    """Group commit of round events: appended in order, committed in batches (one fsync each).

    :meth:`append` returns a future that resolves once the event is on disk. Events are written
    in the order they were appended (the order of their per-round sequence numbers); a large
    body's file is written in a worker thread as soon as it is appended, several at once, and its
    row joins the first batch after the file is durable. If a batch fails, every event of the
    affected rounds still queued fails with it (they were validated against state that included
    the lost ones), those rounds refuse new events, and ``on_failure`` is told, to rebuild them
    from disk (and then :meth:`release` them).
    """

    def __init__(self, store: Store, on_failure: Callable[[set[int]], None]) -> None:
        self.store = store
        self.on_failure = on_failure
        # own threads: file writes wait on the disk, and must not queue behind protocol work
        # (or starve it) in the loop's default executor; rows are committed from one thread
        self._files = ThreadPoolExecutor(max_workers=8, thread_name_prefix="secagg-blob")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="secagg-journal")
        self._queue: deque[_Pending] = deque()
        self._kick = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._poisoned: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Finish what was appended (so acknowledged work is not cut off), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 10.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._files.shutdown(wait=True)
        self._writer.shutdown(wait=True)

    def check(self, round_id: int) -> None:
        if round_id in self._poisoned:
            raise StoreWriteFailed(f"round {round_id} is being rebuilt after a failed store write")

    def release(self, round_id: int) -> None:
        """The round was rebuilt from disk: it may append again."""
        self._poisoned.discard(round_id)

    def append(self, round_id: int, seq: int, kind: EventKind, stage: str,
               client_id: int | None = None, body: bytes | None = None) -> asyncio.Future[None]:
        """Queue one event; the future resolves once it is on disk (or fails with
        :class:`StoreWriteFailed`)."""
        self.check(round_id)
        loop = asyncio.get_running_loop()
        blob = None
        if body is not None and len(body) > INLINE_LIMIT:
            blob = loop.run_in_executor(self._files, self.store.write_blob, round_id, seq, body)
            blob.add_done_callback(_retrieve)
        entry = _Pending(round_id, seq, kind, stage, client_id, body, blob, loop.create_future())
        entry.durable.add_done_callback(_retrieve)
        self._queue.append(entry)
        self._idle.clear()
        self._kick.set()
        return entry.durable

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._kick.clear()
                await self._kick.wait()
                continue
            head = self._queue[0]
            if head.blob is not None and not head.blob.done():
                await asyncio.wait([head.blob])
            batch: list[_Pending] = []
            while self._queue and (self._queue[0].blob is None or self._queue[0].blob.done()):
                batch.append(self._queue.popleft())
            try:
                rows = [event_row(e.round_id, e.seq, e.kind, e.stage, e.client_id, e.body,
                                  None if e.blob is None else e.blob.result()) for e in batch]
                await asyncio.get_running_loop().run_in_executor(self._writer,
                                                                 self.store.append_rows, rows)
            except Exception as exc:  # any write error fails the batch, not the server
                self._fail(batch, exc)
                continue
            for e in batch:
                if not e.durable.done():
                    e.durable.set_result(None)

    def _fail(self, batch: list[_Pending], exc: Exception) -> None:
        rounds = {e.round_id for e in batch}
        log.error("store write failed (%s: %s) for round(s) %s; rebuilding them from disk",
                  type(exc).__name__, exc, sorted(rounds))
        doomed = batch + [e for e in self._queue if e.round_id in rounds]
        self._queue = deque(e for e in self._queue if e.round_id not in rounds)
        self._poisoned |= rounds
        for e in doomed:
            if not e.durable.done():
                e.durable.set_exception(StoreWriteFailed(
                    f"round {e.round_id}: the store could not record this event ({type(exc).__name__})"))
        if rounds:
            self.on_failure(rounds)
