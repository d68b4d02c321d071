"""The coordinator's group commit, in process: batching, a failed write, retries of large
messages, and a post that waits for the next stage. (The real-process tests cover crashes.)"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from secagg.identity import Identity, Roster
from secagg.masking import ClientSession, MaskingConfig, encode_update, wire
from secagg_server.app import create_app
from secagg_server.coordinator import Coordinator
from secagg_server.journal import StoreWriteFailed
from secagg_server.modes import default_modes
from secagg_server.store import Store

N = 4
#: The federation's enrolment, in memory (the store keeps only the public roster).
IDENTITIES = [Identity.generate(f"enterprise-{i}") for i in range(N)]
ROSTER = Roster.of("t", IDENTITIES)


def _sessions(cfg: MaskingConfig, ups: list[np.ndarray]) -> list[ClientSession]:
    return [ClientSession(cfg, i, encode_update(cfg, ups[i]), identity=IDENTITIES[i],
                          roster=ROSTER) for i in range(N)]


def _plain_body(values: np.ndarray) -> bytes:
    return struct.pack("<4sI", b"SAGP", 1) + values.astype("<f4").tobytes()


def _run(tmp: Path, body: Callable[[Coordinator, Store], Awaitable[None]]) -> None:
    async def main() -> None:
        store = Store(tmp / "data")
        fid = store.federation_id("t")
        if fid is None:
            store.create_federation("t", N, ROSTER.to_dict())
        coord = Coordinator(store, default_modes(allow_plain=True))
        await coord.start()
        try:
            await body(coord, store)
        finally:
            await coord.stop()
            store.close()

    asyncio.run(main())


def test_a_stage_of_concurrent_messages_is_committed_in_one_or_two_batches(tmp_path: Path) -> None:
    ups = [np.full(10, i, dtype=np.float32) for i in range(N)]

    async def body(coord: Coordinator, store: Store) -> None:
        commits: list[int] = []
        append_rows = store.append_rows

        def counting(rows: list[tuple[Any, ...]]) -> None:
            commits.append(len(rows))
            append_rows(rows)

        store.append_rows = counting  # type: ignore[method-assign]
        row = (await coord.open_round(1, N, "plain", {"vector_length": 10}, 10.0)).row
        live = coord.live[row.id]
        await asyncio.gather(*(coord.submit(live, i, _plain_body(ups[i])) for i in range(N)))
        assert sum(commits) == N + 1 and len(commits) <= 2  # N messages and the close
        done = store.round(row.id)
        assert done is not None and done.status == "done"
        assert np.array_equal(np.frombuffer(store.result(row.id), "<f4"), sum(ups))

    _run(tmp_path, body)


def test_a_failed_write_is_refused_and_the_round_rebuilt_from_disk(tmp_path: Path) -> None:
    length = 20_000  # 80 kB: large bodies, written to their own files
    ups = [np.full(length, i + 1, dtype=np.float32) for i in range(N)]

    async def body(coord: Coordinator, store: Store) -> None:
        row = (await coord.open_round(1, N, "plain", {"vector_length": length}, 30.0)).row
        old = coord.live[row.id]
        await coord.submit(old, 0, _plain_body(ups[0]))
        append_rows = store.append_rows
        failures = [OSError("disk full")]

        def failing(rows: list[tuple[Any, ...]]) -> None:
            if failures:
                raise failures.pop()
            append_rows(rows)

        store.append_rows = failing  # type: ignore[method-assign]
        with pytest.raises(StoreWriteFailed):
            await coord.submit(old, 1, _plain_body(ups[1]))
        for _ in range(100):  # the rebuild runs in the background
            if coord.live.get(row.id) is not old:
                break
            await asyncio.sleep(0.01)
        live = coord.live[row.id]
        assert old.stale and live is not old
        assert live.protocol.expected == frozenset({1, 2, 3})  # client 1's message is gone
        # a retry of client 0's accepted (large) message is still recognised, from disk
        with pytest.raises(Exception, match="already accepted"):
            await coord.submit(old, 0, _plain_body(ups[0]))  # through the stale object, too
        await asyncio.gather(*(coord.submit(live, i, _plain_body(ups[i])) for i in (1, 2, 3)))
        done = store.round(row.id)
        assert done is not None and done.status == "done"
        assert np.array_equal(np.frombuffer(store.result(row.id), "<f4"), sum(ups))
        assert not (store.blobs / f"r{row.id}").exists()  # bodies erased at the release

    _run(tmp_path, body)


def test_post_with_wait_returns_the_next_stage_and_a_late_retry_is_a_replay(tmp_path: Path) -> None:
    """Masking over the HTTP app in process: every post waits for the next stage's message;
    after the masked-input stage closed, a retry of the (large) masked input gets 409 replayed,
    not 413 (the unmask stage's limit is far smaller)."""
    data = tmp_path / "data"
    store = Store(data)
    op, toks = store.create_federation("t", N, ROSTER.to_dict())
    store.close()
    length = 60_000
    rng = np.random.default_rng(1)
    ups = [rng.uniform(-0.5, 0.5, length).astype(np.float32) for _ in range(N)]

    async def main() -> None:
        app = create_app(data)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            clients = [httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30.0,
                                         headers={"Authorization": f"Bearer {t}"}) for t in toks]
            async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                         headers={"Authorization": f"Bearer {op}"}) as opc:
                resp = await opc.post("/v1/rounds", json={"mode": "masking", "options": {
                    "vector_length": length}, "stage_timeout_s": 30})
                assert resp.status_code == 201, resp.text
                info = resp.json()
            rid = info["round_id"]
            cfg = MaskingConfig.from_dict(info["config"])
            sessions = _sessions(cfg, ups)
            sent: list[list[bytes]] = [[] for _ in range(N)]

            async def post(i: int, msg: bytes) -> httpx.Response:
                sent[i].append(msg)
                return await clients[i].post(f"/v1/rounds/{rid}/messages", content=msg,
                                             params={"wait": 10},
                                             headers={"Content-Type": "application/octet-stream"})

            replies = await asyncio.gather(*(post(i, wire.encode(s.start()))
                                             for i, s in enumerate(sessions)))
            for _stage in range(4):  # share, masked input, consistency, unmask
                for r in replies:
                    assert r.status_code == 200, r.text
                    assert r.headers["X-Secagg-State"] == "message"
                replies = await asyncio.gather(*(post(i, sessions[i].handle_bytes(r.content))
                                                 for i, r in enumerate(replies)))
            for r in replies:  # the unmask replies: the round is done
                assert r.status_code == 202 and r.headers["X-Secagg-State"] == "done", r.text
            masked = sent[0][2]
            assert len(masked) > 64 * 1024
            retry = await clients[0].post(f"/v1/rounds/{rid}/messages", content=masked,
                                          headers={"Content-Type": "application/octet-stream"})
            assert retry.status_code == 409 and retry.json()["error"] == "round_done", retry.text
            result = await clients[0].get(f"/v1/rounds/{rid}/result")
            assert result.status_code == 200
            for c in clients:
                await c.aclose()

    asyncio.run(main())


def test_a_retry_of_a_large_message_after_its_stage_closed_is_a_replay(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store(data)
    _, toks = store.create_federation("t", N, ROSTER.to_dict())
    store.close()
    length = 60_000
    rng = np.random.default_rng(2)
    ups = [rng.uniform(-0.5, 0.5, length).astype(np.float32) for _ in range(N)]

    async def main() -> None:
        app = create_app(data)
        async with app.router.lifespan_context(app):
            coord: Coordinator = app.state.coordinator
            row = (await coord.open_round(1, N, "masking", {"vector_length": length}, 30.0)).row
            transport = httpx.ASGITransport(app=app)
            cfg = MaskingConfig.from_dict(row.config)
            sessions = _sessions(cfg, ups)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30.0,
                                         headers={"Authorization": f"Bearer {toks[0]}"}) as c0:
                live = coord.live[row.id]
                msgs = [wire.encode(s.start()) for s in sessions]
                for i in range(N):
                    await coord.submit(live, i, msgs[i])
                for _stage in range(2):  # share, then masked input
                    msgs = [s.handle_bytes(live.outbox[i]) for i, s in enumerate(sessions)]
                    for i in range(N):
                        await coord.submit(live, i, msgs[i])
                assert live.protocol.stage == "consistency" and len(msgs[0]) > 64 * 1024
                retry = await c0.post(f"/v1/rounds/{row.id}/messages", content=msgs[0],
                                      headers={"Content-Type": "application/octet-stream"})
                assert retry.status_code == 409 and retry.json()["error"] == "replayed", retry.text
                bigger = await c0.post(f"/v1/rounds/{row.id}/messages", content=msgs[0] + b"x",
                                       headers={"Content-Type": "application/octet-stream"})
                assert bigger.status_code == 413, bigger.text

    asyncio.run(main())
