"""Safe release: rounded, deterministic, only a verified aggregate, only once per round."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg.ckks import Check, CheckFailed, ClientStage
from secagg.ckks.messages import Aggregate, Upload
from secagg.errors import AlreadyUsed, ProtocolAbort
from tests.ckks.conftest import Parts, keyed_round, make_config


def _round(n: int = 3) -> tuple[Parts, dict[int, bytes], dict[int, bytes]]:
    parts = keyed_round(make_config(size=3000, n=n), seed=2)
    uploads = parts.uploads()
    return parts, uploads, parts.aggregate(uploads)


def test_two_decryptions_release_identical_bytes_on_the_grid() -> None:
    parts, _, aggregates = _round()
    for i, agg in aggregates.items():
        parts.clients[i].handle_bytes(agg)
    a, b = parts.clients[1].result, parts.clients[2].result
    assert parts.clients[1].handle_bytes(aggregates[1]) is None  # the same message again: no-op
    assert a.to_bytes() == b.to_bytes() == parts.clients[1].result.to_bytes()
    q = parts.config.params.release_quantum
    assert np.all(np.mod(a.weighted_sum, q) == 0)


def test_release_hides_the_exact_decryption() -> None:
    parts, _, aggregates = _round()
    client = parts.clients[1]
    key = client._require_key()
    ct = client._session.load(Aggregate.from_bytes(aggregates[1]).chunks[0], what="x")
    exact = key.seal.decrypt_exact(ct).view(np.float64)[:3000]
    client.handle_bytes(aggregates[1])
    released = client.result.weighted_sum
    assert not np.array_equal(exact, released)  # the noise bits are gone
    assert np.max(np.abs(exact - released)) <= parts.config.params.release_quantum / 2 + 1e-7


def _refuses(parts: Parts, i: int, data: bytes, check: Check, match: str | None = None) -> CheckFailed:
    with pytest.raises(CheckFailed, match=match) as info:
        parts.clients[i].handle_bytes(data)
    assert info.value.check == check
    client = parts.clients[i]
    assert client.stage is ClientStage.FAILED and client.failure is info.value
    with pytest.raises(ProtocolAbort, match="no release"):
        client.result  # noqa: B018 - nothing was decrypted
    return info.value


def test_refuses_an_individual_upload() -> None:
    parts, uploads, _ = _round()
    _refuses(parts, 1, uploads[2], Check.MESSAGE_FORMAT, "unexpected server message")


def test_refuses_an_aggregate_with_too_few_contributors() -> None:
    parts, _, aggregates = _round()
    agg = Aggregate.from_bytes(aggregates[1])
    fake = dataclasses.replace(agg, receipts=agg.receipts[:1])
    _refuses(parts, 1, fake.to_bytes(), Check.MIN_CLIENTS, "1 contributor.*min_clients is 2; refusing")


def test_refuses_one_update_dressed_up_as_a_sum() -> None:
    """Client 2's ciphertext with both receipts: the sketch check catches it before decryption."""
    parts, uploads, aggregates = _round(n=2)
    agg = Aggregate.from_bytes(aggregates[1])
    fake = dataclasses.replace(agg, chunks=Upload.from_bytes(uploads[2]).chunks)
    _refuses(parts, 1, fake.to_bytes(), Check.SKETCH, "not the sum of the 2 announced uploads")


def test_refuses_forged_receipts_strangers_and_other_rounds() -> None:
    parts, _, aggregates = _round()
    agg = Aggregate.from_bytes(aggregates[1])
    forged = dataclasses.replace(
        agg, receipts=(dataclasses.replace(agg.receipts[1], signature=bytes(64)), *agg.receipts[2:],
                       agg.receipts[0])
    )
    _refuses(parts, 2, forged.to_bytes(), Check.UPLOAD_SIGNATURE, "receipt of client 2")
    _refuses(parts, 3, dataclasses.replace(agg, round=5).to_bytes(), Check.MESSAGE_FORMAT, "another round")
    stranger = dataclasses.replace(agg, receipts=(*agg.receipts, dataclasses.replace(agg.receipts[0],
                                                                                      client_id=7)))
    _refuses(parts, 1, stranger.to_bytes(), Check.CONTRIBUTORS, r"client\(s\) \[7\], who hold no key")


def test_refuses_an_aggregate_that_leaves_this_client_out() -> None:
    parts, _, aggregates = _round()
    agg = Aggregate.from_bytes(aggregates[3])
    fake = dataclasses.replace(agg, receipts=agg.receipts[:2])
    _refuses(parts, 3, fake.to_bytes(), Check.CONTRIBUTORS, "leaves out this client's own upload")


def test_decrypts_only_one_aggregate_per_round() -> None:
    parts, _, aggregates = _round()
    parts.clients[1].handle_bytes(aggregates[1])
    agg = Aggregate.from_bytes(aggregates[1])
    subset = dataclasses.replace(agg, receipts=agg.receipts[:2])
    with pytest.raises(AlreadyUsed, match="already passed the stage"):
        parts.clients[1].handle_bytes(subset.to_bytes())
    assert parts.clients[1].stage is ClientStage.DONE  # the release stands


def test_a_refused_session_stays_refused() -> None:
    parts, _, aggregates = _round()
    agg = Aggregate.from_bytes(aggregates[1])
    _refuses(parts, 1, dataclasses.replace(agg, round=9).to_bytes(), Check.MESSAGE_FORMAT)
    with pytest.raises(AlreadyUsed, match="refused this round earlier"):
        parts.clients[1].handle_bytes(aggregates[1])  # no second try with the real one
