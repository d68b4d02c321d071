"""Malicious peers and a splitting server, on a sparse SecAgg+ graph in active mode."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import ProtocolAbort
from secagg.masking import messages as m
from secagg.masking import wire
from tests.masking.conftest import make_config, random_updates
from tests.masking.harness import Round, decode

N, K, T = 24, 8, 6


def _to_consistency_requests(r: Round, outbox: dict[int, bytes]) -> dict[int, bytes]:
    return r.deliver(r.reply(r.deliver(r.reply(r.deliver(outbox)))))


def _exact(r: Round, survivors: list[int]) -> None:
    assert r.server is not None
    agg = r.server.result
    want = sum(r.values[i].astype(np.uint64) for i in survivors) % (1 << agg.config.mod_bits)
    assert np.array_equal(agg.total, want[:-1].astype(np.uint32))
    assert agg.total_weight == int(want[-1])


@settings(max_examples=8, deadline=None)
@given(liars=st.sets(st.integers(0, N - 1), min_size=1, max_size=2), seed=st.integers(0, 99))
def test_corrupted_unmask_shares_are_outvoted_and_named(liars: set[int], seed: int) -> None:
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40, seed))
    inbox = r.deliver(r.reply(r.deliver(r.reply(r.deliver(r.reply(r.deliver(outbox)))))))
    replies = r.reply(inbox)
    rng = np.random.default_rng(seed)
    for liar in liars:  # well-formed, wrong shares: only the owners' commitments can tell
        msg = decode(replies[liar])
        assert isinstance(msg, m.UnmaskShares)
        junk = {o: rng.bytes(len(s)) for o, s in msg.seed_shares.items()}
        replies[liar] = wire.encode(dataclasses.replace(msg, seed_shares=junk))
    r.run_to_end(replies)
    _exact(r, list(range(N)))
    assert r.server is not None
    assert set(r.server.result.corrupt_shares) <= liars


def test_a_server_splitting_one_clients_holders_is_stopped_by_the_quorum() -> None:
    """Holders of u are told u dropped, everyone else that it survived; each camp gets every
    signature on its own set. Every holder of u must refuse: neither kind of u's shares leaks."""
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40))
    inbox = _to_consistency_requests(r, outbox)
    assert r.server is not None
    graph = r.server._graph
    u = 5
    camp_b = set(graph[u])
    views = {}
    for i, data in inbox.items():
        req = decode(data)
        assert isinstance(req, m.ConsistencyRequest)
        view = tuple(s for s in req.survivors if s != u) if i in camp_b else req.survivors
        views[i] = view
        inbox[i] = wire.encode(dataclasses.replace(req, survivors=view))
    sigs = {i: decode(r.clients[i].handle_bytes(d)).signature for i, d in inbox.items()}  # type: ignore[union-attr]
    revealed_about_u = 0
    refused = 0
    for i in graph[u] | {u}:
        same = {p: s for p, s in sigs.items() if views[p] == views[i]}
        req = m.UnmaskRequest(digest=config.digest(), round=config.round, party=i,
                              survivors=views[i], signatures=same)
        try:
            reply = decode(r.clients[i].handle_bytes(wire.encode(req)))
        except ProtocolAbort as exc:
            assert "confirmed the survivor set" in exc.reason
            refused += 1
            continue
        assert isinstance(reply, m.UnmaskShares)
        revealed_about_u += (u in reply.seed_shares) + (u in reply.mask_key_shares)
    assert revealed_about_u < T  # not even one kind of u's secret can be rebuilt
    assert refused >= K + 1 - (T - 1)


def test_split_positive_control_global_quorum_lets_both_camps_reveal() -> None:
    """The same split with the old global checks: both camps reveal shares of u."""
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40))
    for c in r.clients.values():
        c._insecure_global = True
    inbox = _to_consistency_requests(r, outbox)
    assert r.server is not None
    graph = r.server._graph
    u = 5
    camp_b = set(graph[u])
    views = {}
    for i, data in inbox.items():
        req = decode(data)
        view = tuple(s for s in req.survivors if s != u) if i in camp_b else req.survivors  # type: ignore[union-attr]
        views[i] = view
        inbox[i] = wire.encode(dataclasses.replace(req, survivors=view))  # type: ignore[arg-type]
    sigs = {i: decode(r.clients[i].handle_bytes(d)).signature for i, d in inbox.items()}  # type: ignore[union-attr]
    key_shares = seed_shares = 0
    for i in graph[u] | {u}:
        same = {p: s for p, s in sigs.items() if views[p] == views[i]}
        req = m.UnmaskRequest(digest=config.digest(), round=config.round, party=i,
                              survivors=views[i], signatures=same)
        reply = decode(r.clients[i].handle_bytes(wire.encode(req)))
        assert isinstance(reply, m.UnmaskShares)
        key_shares += u in reply.mask_key_shares
        seed_shares += u in reply.seed_shares
    assert key_shares >= T  # u's mask key leaks ...
    assert seed_shares >= 1  # ... while u's own holder reveals its seed share as a survivor


def test_too_many_corrupted_shares_end_the_round_cleanly() -> None:
    config = make_config(10, 20, active=True, full_graph=True)
    r, outbox = Round.start(config, random_updates(10, 20))
    inbox = r.deliver(r.reply(r.deliver(r.reply(r.deliver(r.reply(r.deliver(outbox)))))))
    replies = r.reply(inbox)
    for liar in range(10 - config.threshold + 1):
        msg = decode(replies[liar])
        junk = {o: bytes(len(s)) for o, s in msg.seed_shares.items()}  # type: ignore[union-attr]
        replies[liar] = wire.encode(dataclasses.replace(msg, seed_shares=junk))  # type: ignore[arg-type]
    with pytest.raises(ProtocolAbort, match="could not rebuild"):
        r.run_to_end(replies)
