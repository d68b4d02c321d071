"""The two sans-IO sessions, driven one way: stages, who is awaited, limits, dropouts, retries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.ckks import ClientSession, ClientStage, ServerSession, ServerStage
from secagg.ckks.messages import KeyAdvert, Upload
from secagg.ckks.simulate import PhaseTimer, federation_for
from secagg.errors import AlreadyUsed, NotEnoughParticipants, ProtocolAbort, RejectedMessage
from tests.ckks.conftest import make_config, updates_for


def _sessions(n: int = 4, size: int = 3000, min_clients: int = 2,  # type: ignore[no-untyped-def]
              timers: dict[int, PhaseTimer] | None = None):
    config = make_config(size=size, n=n, min_clients=min_clients)
    fed = federation_for(config)
    updates = updates_for(config, 1)
    server = ServerSession(config, roster=fed.roster)
    clients = {i: ClientSession(config, i, updates[i], identity=fed.identities[i], roster=fed.roster,
                                on_phase=None if timers is None else timers.setdefault(i, PhaseTimer()))
               for i in config.client_ids}
    return config, server, clients, updates


def _close(server: ServerSession, clients: dict[int, ClientSession], out: dict[int, bytes],
           skip: tuple[int, ...] = ()) -> None:
    for i, msg in out.items():
        if i in skip:
            continue
        reply = clients[i].handle_bytes(msg)
        if reply is not None:
            assert len(reply) <= server.max_message_bytes()
            server.receive(reply)


def test_a_round_driven_one_way() -> None:
    timers: dict[int, PhaseTimer] = {}
    config, server, clients, updates = _sessions(timers=timers)
    assert server.stage is ServerStage.ADVERT and server.expected == frozenset(config.client_ids)
    for i, c in clients.items():
        assert c.stage is ClientStage.NEW
        advert = c.start()
        assert len(advert) <= server.max_message_bytes()
        server.receive(advert)
        assert i not in server.expected
    assert not server.expected
    requests = server.advance()
    assert set(requests) == set(config.client_ids) and server.stage is ServerStage.KEYS
    assert server.expected == {config.dealer}
    _close(server, clients, requests)  # only the dealer answers
    assert not server.expected
    deliveries = server.advance()
    assert set(deliveries) == set(config.client_ids) == server.keyed
    assert server.stage is ServerStage.UPLOAD and server.expected == server.keyed
    _close(server, clients, deliveries)
    assert not server.expected and server.accepted == config.client_ids
    aggregates = server.advance()
    assert server.stage is ServerStage.DONE and not server.expected
    assert set(aggregates) == set(config.client_ids)
    assert server.result.contributors == config.client_ids and server.result.dropped == ()
    _close(server, clients, aggregates)
    expected = sum(u.astype(np.float64) for u in updates.values())
    for c in clients.values():
        assert c.stage is ClientStage.DONE
        assert np.max(np.abs(c.result.weighted_sum - expected)) <= config.params.release_quantum
        assert np.allclose(c.result.mean(), expected / 4, atol=config.params.release_quantum)
    # the driver timed each session's named phases (the sessions read no clock)
    for i, timer in timers.items():
        assert {"advertise", "check adverts", "open key", "encrypt", "sketch", "sign",
                "verify aggregate", "decrypt"} <= set(timer.seconds), i
        assert ("deal" in timer.seconds) == (i == config.dealer)
        assert all(s >= 0 for s in timer.seconds.values())
    with pytest.raises(RejectedMessage, match="already complete"):
        server.receive(b"anything")
    with pytest.raises(ProtocolAbort, match="already complete"):
        server.advance()


def test_malformed_messages_make_their_sender_a_dropout_and_the_round_completes() -> None:
    config, server, clients, updates = _sessions(n=4)
    for i, c in clients.items():
        advert = c.start()
        if i == 3:
            with pytest.raises(RejectedMessage):
                server.receive(advert[:-7])  # truncated
            with pytest.raises(RejectedMessage):
                server.receive(b"\x00garbage" * 5)
            continue  # client 3 never sends a valid advert: a dropout
        server.receive(advert)
    requests = server.advance()
    assert 3 not in requests
    _close(server, clients, requests)
    deliveries = server.advance()
    assert set(deliveries) == {1, 2, 4}
    uploads = {i: clients[i].handle_bytes(d) for i, d in deliveries.items()}
    with pytest.raises(RejectedMessage):
        server.receive(uploads[4][: len(uploads[4]) // 2])  # client 4's upload, mangled
    server.receive(uploads[1])
    server.receive(uploads[2])
    aggregates = server.advance()  # client 4 never sent a valid upload: a dropout
    assert set(aggregates) == {1, 2} and server.result.dropped == (3, 4)
    _close(server, clients, aggregates)
    expected = updates[1].astype(np.float64) + updates[2]
    assert np.max(np.abs(clients[1].result.weighted_sum - expected)) <= config.params.release_quantum


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.binary(max_size=400), stage=st.sampled_from(["advert", "keys", "upload"]))
def test_garbage_never_changes_the_server_state(junk: bytes, stage: str) -> None:
    _, server, clients, _ = _sessions(n=3, size=100)
    for c in clients.values():
        server.receive(c.start())
    if stage != "advert":
        _close(server, clients, server.advance())
    if stage == "upload":
        server.advance()
    before = (server.stage, server.expected, server.accepted)
    with pytest.raises(RejectedMessage):
        server.receive(junk)
    assert (server.stage, server.expected, server.accepted) == before


def test_a_refused_advert_may_be_followed_by_a_valid_one() -> None:
    _, server, clients, _ = _sessions(n=3)
    advert = KeyAdvert.from_bytes(clients[2].start())
    with pytest.raises(RejectedMessage, match="not signed by the sender's roster identity"):
        server.receive(KeyAdvert(advert.config_digest, 2, advert.box_public, bytes(64)).to_bytes())
    assert 2 in server.expected
    server.receive(advert.to_bytes())
    assert 2 not in server.expected
    with pytest.raises(RejectedMessage, match="replayed"):
        server.receive(advert.to_bytes())


def test_too_few_participants_and_a_silent_dealer_end_the_round() -> None:
    _, server, clients, _ = _sessions(n=3, min_clients=3)
    server.receive(clients[1].start())
    server.receive(clients[2].start())
    with pytest.raises(NotEnoughParticipants, match="2 participant"):
        server.advance()
    assert server.stage is ServerStage.DONE

    _, server, clients, _ = _sessions(n=3)
    server.receive(clients[2].start())
    server.receive(clients[3].start())
    with pytest.raises(NotEnoughParticipants, match=r"dealer \(client 1\) sent no valid key advert"):
        server.advance()

    _, server, clients, _ = _sessions(n=3)
    for c in clients.values():
        server.receive(c.start())
    server.advance()  # the dealer never answers its key request
    with pytest.raises(NotEnoughParticipants, match="sent no valid key distribution"):
        server.advance()


def test_client_replies_are_idempotent_and_stages_are_one_shot() -> None:
    _, server, clients, _ = _sessions(n=3)
    c = clients[2]
    with pytest.raises(AlreadyUsed, match="call start"):
        c.handle_bytes(b"x")
    for s in clients.values():
        server.receive(s.start())
    with pytest.raises(AlreadyUsed, match="already started"):
        c.start()
    requests = server.advance()
    _close(server, clients, requests)
    deliveries = server.advance()
    first = c.handle_bytes(deliveries[2])
    assert c.handle_bytes(deliveries[2]) == first  # a transport retry: the same upload
    assert Upload.from_bytes(first).client_id == 2
    with pytest.raises(AlreadyUsed, match="already passed the stage"):
        c.handle_bytes(requests[2][:-1] + bytes([requests[2][-1] ^ 1]))  # another key request


def test_server_session_checks_its_own_arguments() -> None:
    config, _, _, _ = _sessions(n=3)
    fed = federation_for(config)
    with pytest.raises(Exception, match="subset of the config's client_ids that includes the dealer"):
        ServerSession(config, participants=[2, 3], roster=fed.roster)
    partial = ServerSession(config, participants=[1, 2], roster=fed.roster)
    assert partial.expected == {1, 2}
