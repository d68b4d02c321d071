"""A masking session made before its update exists (``values=None``) and given it with
``provide_update`` before the share delivery, as Flower's mod does so that the update is never
part of the state carried between calls: the round's sum is the same, and every misuse is
refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from secagg.errors import AlreadyUsed, InvalidParameter, ProtocolAbort
from secagg.masking import ClientSession, MaskingConfig, ServerSession, Stage, encode_update, wire
from secagg.masking import messages as m
from secagg.masking.simulate import insecure_simulated_federation

N = 5


def _round(late: set[int]) -> tuple[object, MaskingConfig, list[np.ndarray]]:
    """One active round in memory; clients in ``late`` get their update only when the share
    delivery arrives."""
    roster, identities = insecure_simulated_federation(N)
    config = MaskingConfig.create(num_clients=N, vector_length=40, roster=roster, round=3,
                                  session=b"\x02" * 16)
    rng = np.random.default_rng(11)
    values = [encode_update(config, rng.uniform(-1, 1, 40), rng=rng) for _ in range(N)]
    clients = {i: ClientSession(config, i, None if i in late else values[i],
                                identity=identities[i], roster=roster) for i in range(N)}
    server = ServerSession(config, roster=roster)
    for c in clients.values():
        server.receive(wire.encode(c.start()))
    while server.stage is not Stage.DONE:
        for i, data in server.advance_bytes().items():
            if i in late and wire.peek_type(data) is m.ShareDelivery:
                clients[i].provide_update(values[i])
            server.receive(clients[i].handle_bytes(data))
    return server.result, config, values


def test_an_update_given_late_sums_like_one_given_at_the_start() -> None:
    early, _, _ = _round(set())
    late, _, _ = _round({0, 2, 4})
    assert np.array_equal(early.mean(), late.mean())
    assert late.survivors == tuple(range(N))


def test_misuse_is_refused() -> None:
    roster, identities = insecure_simulated_federation(N)
    config = MaskingConfig.create(num_clients=N, vector_length=40, roster=roster, round=3,
                                  session=b"\x02" * 16)
    good = encode_update(config, np.zeros(40))
    session = ClientSession(config, 0, None, identity=identities[0], roster=roster)
    with pytest.raises(InvalidParameter, match="uint32 vector of length"):
        session.provide_update(np.zeros(3, dtype=np.uint32))
    assert session.awaiting_update
    session.provide_update(good)
    assert not session.awaiting_update
    with pytest.raises(AlreadyUsed, match="already holds its update"):
        session.provide_update(good)
    given = ClientSession(config, 1, good, identity=identities[1], roster=roster)
    assert not given.awaiting_update
    with pytest.raises(AlreadyUsed):
        given.provide_update(good)


def test_a_share_delivery_without_the_update_aborts_and_prepare_refuses() -> None:
    """A client whose update never came (its training failed) refuses the delivery: it drops
    out instead of masking nothing; the others finish without it."""
    roster, identities = insecure_simulated_federation(N)
    config = MaskingConfig.create(num_clients=N, vector_length=40, roster=roster, round=3,
                                  session=b"\x02" * 16)
    rng = np.random.default_rng(3)
    values = [encode_update(config, rng.uniform(-1, 1, 40), rng=rng) for _ in range(N)]
    clients = {i: ClientSession(config, i, None if i == 2 else values[i],
                                identity=identities[i], roster=roster) for i in range(N)}
    server = ServerSession(config, roster=roster)
    for c in clients.values():
        server.receive(wire.encode(c.start()))
    refused = []
    while server.stage is not Stage.DONE:
        for i, data in server.advance_bytes().items():
            if i == 2 and clients[2].stage is Stage.SHARE:
                with pytest.raises(ProtocolAbort, match="needs the update"):
                    clients[2].prepare_masked_input()
            try:
                server.receive(clients[i].handle_bytes(data))
            except ProtocolAbort as exc:
                refused.append((i, exc.reason))
    assert [i for i, _ in refused] == [2]
    assert "before this client's update was given" in refused[0][1]
    assert 2 not in server.result.survivors
    assert server.result.survivors == (0, 1, 3, 4)
