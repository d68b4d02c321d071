"""Safe release: rounded, deterministic, only the round's aggregate, only once per round."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg.ckks.messages import Aggregate, Receipt, Upload
from secagg.errors import AlreadyUsed, ProtocolAbort, RejectedMessage
from tests.ckks.conftest import ceremony, make_config, updates_for


def _round(n: int = 3):  # type: ignore[no-untyped-def]
    config = make_config(size=3000, n=n)
    server, clients = ceremony(config)
    updates = updates_for(config, 2)
    uploads = {i: clients[i].encrypt_update(updates[i]) for i in config.client_ids}
    return config, server, clients, updates, uploads


def test_two_decryptions_release_identical_bytes_on_the_grid() -> None:
    config, server, clients, _, uploads = _round()
    for i, blob in uploads.items():
        server.receive_upload(blob, sender=i)
    aggregate = server.aggregate()
    a = clients[1].decrypt_aggregate(aggregate)
    b = clients[2].decrypt_aggregate(aggregate)
    again = clients[1].decrypt_aggregate(aggregate)
    assert a.to_bytes() == b.to_bytes() == again.to_bytes()
    q = config.params.release_quantum
    assert np.all(np.mod(a.weighted_sum, q) == 0)


def test_release_hides_the_exact_decryption() -> None:
    config, server, clients, _, uploads = _round()
    for i, blob in uploads.items():
        server.receive_upload(blob, sender=i)
    aggregate = server.aggregate()
    client = clients[1]
    ct = client._session.load(Aggregate.from_bytes(aggregate).chunks[0], what="x")
    exact = client._keyed().seal.decrypt_exact(ct).view(np.float64)[:3000]
    released = client.decrypt_aggregate(aggregate).weighted_sum
    assert not np.array_equal(exact, released)  # the noise bits are gone
    assert np.max(np.abs(exact - released)) <= config.params.release_quantum / 2 + 1e-7


def test_refuses_an_individual_upload() -> None:
    _, _, clients, _, uploads = _round()
    with pytest.raises(RejectedMessage, match="kind 'aggregate', found 'upload'"):
        clients[1].decrypt_aggregate(uploads[2])


def test_refuses_an_aggregate_with_too_few_contributors() -> None:
    config, _, clients, _, uploads = _round()
    up = Upload.from_bytes(uploads[2])
    fake = Aggregate(config.digest(), config.round, (Receipt(2, up.digest(), up.signature),), up.chunks)
    with pytest.raises(RejectedMessage, match="1 contributor.*min_clients is 2; refusing"):
        clients[1].decrypt_aggregate(fake.to_bytes())


def test_refuses_one_update_dressed_up_as_a_sum() -> None:
    """A server passing client 2's ciphertext off with two receipts is caught by the count."""
    config, _, clients, _, uploads = _round()
    up2, up3 = Upload.from_bytes(uploads[2]), Upload.from_bytes(uploads[3])
    fake = Aggregate(
        config.digest(),
        config.round,
        (Receipt(2, up2.digest(), up2.signature), Receipt(3, up3.digest(), up3.signature)),
        up2.chunks,
    )
    with pytest.raises(ProtocolAbort, match="decrypts to 1.000 contributions but claims 2"):
        clients[1].decrypt_aggregate(fake.to_bytes())


def test_refuses_forged_receipts_and_other_rounds() -> None:
    _config, server, clients, _, uploads = _round()
    for i, blob in uploads.items():
        server.receive_upload(blob, sender=i)
    agg = Aggregate.from_bytes(server.aggregate())
    forged = dataclasses.replace(
        agg, receipts=(dataclasses.replace(agg.receipts[0], signature=bytes(64)), *agg.receipts[1:])
    )
    with pytest.raises(RejectedMessage, match="authentication failed for receipt of 1"):
        clients[2].decrypt_aggregate(forged.to_bytes())
    with pytest.raises(RejectedMessage, match="another round config or round"):
        clients[2].decrypt_aggregate(dataclasses.replace(agg, round=5).to_bytes())


def test_decrypts_only_one_aggregate_per_round() -> None:
    _config, server, clients, _, uploads = _round()
    for i, blob in uploads.items():
        server.receive_upload(blob, sender=i)
    agg = Aggregate.from_bytes(server.aggregate())
    clients[1].decrypt_aggregate(agg.to_bytes())
    subset = dataclasses.replace(agg, receipts=agg.receipts[:2])
    with pytest.raises(AlreadyUsed, match="exactly one aggregate per round"):
        clients[1].decrypt_aggregate(subset.to_bytes())
