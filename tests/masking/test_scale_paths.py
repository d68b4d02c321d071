"""The shortcuts that keep a large round cheap give the same answers as the plain paths: one
shared read-only roster graph, two-hop sets read off the ring, shared holder sets for rebuilds,
signed bytes cut from the received message, masked vectors borrowed rather than copied, and a
replayed masked vector still refused as a replay."""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Callable

import pytest

from secagg.errors import ErrorCode, RejectedMessage
from secagg.hazmat import shamir
from secagg.hazmat.handles import SecretBytes
from secagg.masking import MaskingConfig, Stage, keys, wire
from secagg.masking import messages as m
from secagg.masking.graph import FrozenGraph, holders_of, neighbours, roster_neighbours, two_hop
from secagg.masking.recovery import SecretRecovery, shared_subsets
from tests.masking.conftest import make_config, random_updates
from tests.masking.harness import Round


def _two_hop_by_union(graph: dict[int, frozenset[int]], me: int) -> frozenset[int]:
    out: set[int] = set()
    for u in holders_of(graph, me):
        out |= holders_of(graph, u)
    return frozenset(out)


def test_the_roster_graph_is_computed_once_shared_and_read_only() -> None:
    ids, digest = tuple(range(0, 80, 2)), os.urandom(32)
    graph = roster_neighbours(ids, degree=8, roster_digest=digest)
    assert roster_neighbours(list(ids), degree=8, roster_digest=digest) is graph
    assert roster_neighbours(ids, degree=10, roster_digest=digest) is not graph
    mutators: list[Callable[[], object]] = [
        lambda: graph.__setitem__(0, frozenset()), lambda: graph.pop(0), lambda: graph.update({}),
        lambda: graph.clear(), lambda: graph.setdefault(1, frozenset())]
    for mutate in mutators:
        with pytest.raises(TypeError, match="read-only"):
            mutate()
    copy = pickle.loads(pickle.dumps(graph))
    assert isinstance(copy, FrozenGraph) and copy == graph and copy.ring == graph.ring
    assert sorted(graph.ring) == sorted(ids)


@pytest.mark.parametrize(("n", "k"), [(2, 1), (3, 2), (4, 3), (5, 2), (9, 3), (20, 6), (40, 19),
                                     (101, 30), (30, 29)])
def test_two_hop_off_the_ring_equals_the_union_of_neighbourhoods(n: int, k: int) -> None:
    ids = list(range(3, 3 + 2 * n, 2))
    for graph in (roster_neighbours(ids, degree=k, roster_digest=os.urandom(8)),
                  neighbours({i: os.urandom(8) for i in ids}, degree=k, config_digest=b"x")):
        plain = dict(graph)  # no ring: the generic union
        for me in ids:
            assert two_hop(graph, me) == _two_hop_by_union(plain, me) == two_hop(plain, me)


def test_shared_subsets_are_eligible_and_few() -> None:
    n, k, t = 400, 40, 27
    graph = roster_neighbours(range(n), degree=k, roster_digest=b"subsets")
    silent = set(range(0, n, 10))  # 10 % of holders never answered
    eligible = {o: frozenset(holders_of(graph, o) - silent) for o in range(n)}
    chosen = shared_subsets(graph, eligible, t)
    assert chosen.keys() == eligible.keys()
    assert all(len(s) == t and s <= eligible[o] for o, s in chosen.items())
    # a set serves the owners after it on the ring while their holders contain it
    assert len(set(chosen.values())) <= n // 8
    assert shared_subsets(dict(graph), eligible, t) == {}  # no ring, no preference


def _round_config() -> MaskingConfig:
    return make_config(5, 10, full_graph=True, active=False)


def test_a_preferred_set_with_a_lying_holder_still_rebuilds_and_names_the_liar() -> None:
    config = _round_config()
    recovery = SecretRecovery(config)
    digest, owner, t = config.digest(), 7, config.threshold
    holders = list(range(t + 2))
    seed = SecretBytes(os.urandom(32))
    shares = shamir.split(seed, threshold=t, xs=[h + 1 for h in holders])
    salts = {h: os.urandom(keys.SALT_BYTES) for h in holders}
    revealed = {h: shares[h + 1].expose_secret_bytes() + salts[h] for h in holders}
    commitments = {h: keys.share_commitments(SecretBytes(os.urandom(32)), shares[h + 1],
                                             os.urandom(keys.SALT_BYTES), salts[h], owner, h,
                                             digest, config.round) for h in holders}
    liar = holders[-1]
    bad = bytearray(revealed[liar])
    bad[5] ^= 1
    revealed[liar] = bytes(bad)
    want = seed.expose_secret_bytes()

    def valid(s: SecretBytes) -> bool:
        return s.expose_secret_bytes() == want

    prefer = frozenset(holders[-t:])  # includes the liar: tried first, then checked share by share
    got = recovery.rebuild(owner, "seed", revealed, commitments, valid, prefer=prefer)
    assert got.expose_secret_bytes() == want and recovery.liars == {liar}
    # a known liar in the preferred set: the preference is ignored
    again = recovery.rebuild(owner, "seed", revealed, commitments, valid, prefer=prefer)
    assert again.expose_secret_bytes() == want


def test_signed_bytes_cut_from_the_message_equal_the_re_encoded_ones() -> None:
    shares = m.ShareKeys(digest=os.urandom(32), round=3, party=9,
                         sealed_shares={i: os.urandom(90) for i in range(0, 40, 3)},
                         commitments={i: os.urandom(32) for i in range(0, 40, 3)},
                         signature=os.urandom(64))
    raw = wire.encode(shares)
    label = b"secagg-share-keys"
    assert label + wire.without_signature(raw, shares.signature) == keys.share_keys_bytes(shares)
    unsigned = dataclasses.replace(shares, signature=b"")
    assert wire.without_signature(wire.encode(unsigned), b"") == wire.encode(unsigned)
    with pytest.raises(Exception, match="signature"):
        wire.without_signature(raw, os.urandom(64))
    with pytest.raises(Exception, match="signature field"):
        wire.without_signature(wire.encode(m.ConsistencyRequest(
            digest=bytes(32), round=1, party=1, survivors=(1, 2))), b"")


def test_large_fields_are_borrowed_only_when_asked_and_only_from_bytes() -> None:
    msg = m.MaskedInput(digest=bytes(32), round=1, party=2, payload=os.urandom(wire.BORROW_BYTES),
                        excluded=(1,))
    raw = wire.encode(msg)
    borrowed = wire.decode(raw, borrow=True)
    assert isinstance(borrowed.payload, memoryview) and borrowed == msg
    assert type(wire.decode(raw).payload) is bytes
    mutable = bytearray(raw)  # copied out, never borrowed
    assert type(wire.decode(mutable, borrow=True).payload) is bytes  # type: ignore[arg-type]


def test_a_replayed_masked_vector_is_refused_as_a_replay_and_changes_nothing() -> None:
    config = make_config(6, 40_000, full_graph=True)  # vectors big enough to hash in the background
    r, outbox = Round.start(config, random_updates(6, 40_000))
    outbox = r.reply(r.deliver(outbox))  # shares
    outbox = r.reply(r.deliver(outbox))  # masked inputs
    assert len(outbox[0]) >= 1 << 16
    server = r.server
    assert server is not None and server.stage is Stage.MASKED_INPUT
    server.receive(outbox[0])
    with pytest.raises(RejectedMessage, match="replayed") as caught:
        server.receive(outbox[0])
    assert caught.value.code is ErrorCode.REPLAYED
    for i in range(1, 6):
        server.receive(outbox[i])
    r.run_to_end(r.reply(server.advance_bytes()))
    assert server.result.survivors == tuple(range(6))
