"""A threshold-CKKS session made before its update exists (``update=None``) and given it with
``provide_update`` before the share delivery, as Flower's mod does: the released sum is the
same, and every misuse is refused by name."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

from secagg.ckks.threshold.session import (
    ClientSession,
    ClientStage,
    ServerSession,
    ServerStage,
    ThresholdRoundConfig,
    peek_server,
)
from secagg.errors import AlreadyUsed, InvalidParameter, ProtocolAbort
from secagg.identity import Identity, Roster

N, LENGTH = 5, 8
IDENTITIES = [Identity.generate(f"enterprise-{i}") for i in range(N)]
ROSTER = Roster.of("provide-update", IDENTITIES)
CONFIG = ThresholdRoundConfig.for_roster(ROSTER, round=2, vector_length=LENGTH,
                                         session=secrets.token_bytes(32), weight_bound=4.0)
RNG = np.random.default_rng(9)
UPDATES = {i: RNG.uniform(-1, 1, LENGTH) for i in range(N)}
WEIGHTS = {i: float(i % 3 + 1) for i in range(N)}


def _round(late: set[int], missing: frozenset[int] = frozenset()) -> tuple[ServerSession,
                                                                             list[int]]:
    clients = {i: ClientSession(CONFIG, i, None if i in late | missing else UPDATES[i],
                                weight=WEIGHTS[i], identity=IDENTITIES[i], roster=ROSTER)
               for i in range(N)}
    server = ServerSession(CONFIG, roster=ROSTER)
    for c in clients.values():
        server.receive(c.start())
    refused = []
    while server.stage is not ServerStage.DONE:
        for i, data in server.advance().items():
            if i in late and peek_server(data) == "delivery":
                clients[i].provide_update(UPDATES[i], weight=WEIGHTS[i])
            try:
                reply = clients[i].handle_bytes(data)
            except ProtocolAbort as exc:
                assert "before this client's update was given" in exc.reason
                refused.append(i)
                continue
            assert reply is not None
            server.receive(reply)
    return server, refused


def test_an_update_given_late_releases_the_same_sum() -> None:
    early, _ = _round(set())
    late, _ = _round({1, 3})
    assert np.array_equal(early.result.weighted_sum, late.result.weighted_sum)
    want = sum(WEIGHTS[i] * UPDATES[i] for i in range(N))
    assert np.max(np.abs(late.result.weighted_sum - want)) <= CONFIG.max_error


def test_a_delivery_without_the_update_aborts_and_the_others_finish() -> None:
    server, refused = _round(set(), missing=frozenset({4}))
    assert refused == [4]
    assert server.result.uploaders == (0, 1, 2, 3)


def test_misuse_is_refused() -> None:
    session = ClientSession(CONFIG, 0, None, identity=IDENTITIES[0], roster=ROSTER)
    with pytest.raises(InvalidParameter, match="the round expects"):
        session.provide_update(np.zeros(3))
    with pytest.raises(InvalidParameter, match="value_bound"):
        session.provide_update(np.full(LENGTH, 5.0))
    with pytest.raises(InvalidParameter, match="weight must be in"):
        session.provide_update(np.zeros(LENGTH), weight=9.0)
    assert session.awaiting_update
    session.provide_update(np.zeros(LENGTH))
    assert not session.awaiting_update
    with pytest.raises(AlreadyUsed, match="already holds its update"):
        session.provide_update(np.zeros(LENGTH))
    assert session.stage is ClientStage.NEW
