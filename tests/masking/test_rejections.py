"""Bad messages are refused with a clear error, change nothing, and the round still completes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg.errors import AlreadyUsed, ProtocolAbort, RejectedMessage
from secagg.masking import Stage, wire
from secagg.masking import messages as m
from tests.masking.conftest import make_config, random_updates
from tests.masking.harness import Round, decode


def _expected_sum(r: Round, survivors: list[int]) -> np.ndarray:
    total = sum(r.values[i].astype(np.uint64) for i in survivors) % (1 << r.config.mod_bits)
    return total[:-1].astype(np.uint32)


def _assert_exact(r: Round, survivors: list[int]) -> None:
    assert r.server is not None
    agg = r.server.result
    assert agg.survivors == tuple(survivors)
    assert np.array_equal(agg.total, _expected_sum(r, survivors))


def test_garbage_replay_wrong_round_wrong_config_oversized_are_rejected() -> None:
    config = make_config(5, 40, full_graph=True)
    r, outbox = Round.start(config, random_updates(5, 40))
    server = r.server
    assert server is not None
    server.receive(outbox[0])
    with pytest.raises(RejectedMessage, match="replayed"):
        server.receive(outbox[0])
    advert = decode(outbox[1])
    with pytest.raises(RejectedMessage, match="round"):
        server.receive(wire.encode(dataclasses.replace(advert, round=8)))  # type: ignore[arg-type]
    with pytest.raises(RejectedMessage, match="config digest"):
        server.receive(wire.encode(dataclasses.replace(advert, digest=b"\x01" * 32)))  # type: ignore[arg-type]
    with pytest.raises(RejectedMessage, match="bad magic|too short"):
        server.receive(b"\x00garbage")
    with pytest.raises(RejectedMessage, match="truncated"):
        server.receive(outbox[1][:-5])
    with pytest.raises(RejectedMessage, match="limit"):
        server.receive(outbox[1] + b"\x00" * 10_000)
    with pytest.raises(RejectedMessage, match="not a participant"):
        server.receive(wire.encode(dataclasses.replace(advert, party=99)))  # type: ignore[arg-type]
    # nothing above changed the state: the honest messages complete the round exactly
    for i in range(1, 5):
        server.receive(outbox[i])
    r.run_to_end({})
    _assert_exact(r, [0, 1, 2, 3, 4])


def test_wrong_size_masked_input_rejected_and_round_completes_without_it() -> None:
    config = make_config(6, 100, full_graph=True)
    r, outbox = Round.start(config, random_updates(6, 100))
    outbox = r.reply(r.deliver(outbox))          # shares
    inbox = r.deliver(outbox)                    # share deliveries
    outbox = r.reply(inbox)                      # masked inputs
    bad = decode(outbox[2])
    assert isinstance(bad, m.MaskedInput)
    short = dataclasses.replace(bad, payload=bad.payload[:-8])
    assert r.server is not None
    with pytest.raises(RejectedMessage, match="masked vector is"):
        r.server.receive(wire.encode(short))
    del outbox[2]  # client 2's only upload was refused: it counts as dropped after sharing
    r.run_to_end(outbox)
    _assert_exact(r, [0, 1, 3, 4, 5])


def test_tampered_share_is_caught_by_its_recipient_and_others_finish() -> None:
    config = make_config(6, 100, full_graph=True)
    r, outbox = Round.start(config, random_updates(6, 100))
    inbox = r.deliver(r.reply(r.deliver(outbox)))  # share deliveries
    delivery = decode(inbox[3])
    assert isinstance(delivery, m.ShareDelivery)
    sealed = dict(delivery.sealed_shares)
    first = min(sealed)
    sealed[first] = sealed[first][:-1] + bytes([sealed[first][-1] ^ 1])
    inbox[3] = wire.encode(dataclasses.replace(delivery, sealed_shares=sealed))
    outbox = r.reply(inbox)
    reply = decode(outbox[3])
    assert isinstance(reply, m.MaskedInput) and reply.excluded == (first,)
    # The sender of the bad box is a dropout for everyone: its vector leaves the sum, and it is
    # told at once that it was left out; everyone else finishes with the exact sum.
    inbox = r.deliver(outbox)
    assert first not in decode(inbox[1]).survivors  # type: ignore[union-attr]
    with pytest.raises(ProtocolAbort, match="reports this client as dropped"):
        r.clients[first].handle_bytes(inbox[first])
    r.run_to_end(r.reply(inbox, skip={first}))
    others = [i for i in range(6) if i != first]
    _assert_exact(r, others)
    assert r.server is not None and r.server.result.excluded == (first,)


def test_client_refuses_a_second_unmask_request() -> None:
    config = make_config(4, 10, full_graph=True)
    r, outbox = Round.start(config, random_updates(4, 10))
    inbox = r.deliver(r.reply(r.deliver(r.reply(r.deliver(outbox)))))  # unmask requests
    r.clients[0].handle_bytes(inbox[0])
    with pytest.raises(AlreadyUsed):
        r.clients[0].handle_bytes(inbox[0])


def test_client_rejects_messages_for_other_rounds_configs_and_recipients() -> None:
    config = make_config(4, 10, full_graph=True)
    r, outbox = Round.start(config, random_updates(4, 10))
    inbox = r.deliver(outbox)
    msg = decode(inbox[0])
    for bad, pattern in [
        (dataclasses.replace(msg, round=1), "round"),  # type: ignore[arg-type]
        (dataclasses.replace(msg, digest=b"\x02" * 32), "config digest"),  # type: ignore[arg-type]
        (dataclasses.replace(msg, party=1), "addressed to client 1"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(ProtocolAbort, match=pattern):
            r.clients[0].handle_bytes(wire.encode(bad))
    assert r.clients[0].stage is Stage.ADVERTISE  # still waiting: nothing was consumed


def test_server_directory_with_a_replayed_key_is_refused() -> None:
    config = make_config(4, 10, full_graph=True)
    r, outbox = Round.start(config, random_updates(4, 10))
    inbox = r.deliver(outbox)
    directory = decode(inbox[0])
    assert isinstance(directory, m.KeyDirectory)
    adverts = dict(directory.adverts)
    forged = decode(adverts[0])
    adverts[1] = wire.encode(dataclasses.replace(forged, party=1))  # type: ignore[arg-type]
    with pytest.raises(ProtocolAbort, match="replayed key"):
        r.clients[0].handle_bytes(wire.encode(dataclasses.replace(directory, adverts=adverts)))


def test_a_message_from_an_earlier_stage_is_named_a_replay() -> None:
    config = make_config(4, 10, full_graph=True)
    r, outbox = Round.start(config, random_updates(4, 10))
    r.deliver(outbox)  # adverts accepted, stage closed
    assert r.server is not None
    with pytest.raises(RejectedMessage, match="replayed"):
        r.server.receive(outbox[2])
