"""Bad uploads are refused with a clear error naming the rule; the sender is a dropout and everyone
else is still summed (and the honest clients' aggregate check passes)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg.ckks import Check, ClientSession, MessageRefused, Preset
from secagg.ckks.client import session_for
from secagg.ckks.messages import KeyAdvert, Upload
from secagg.ckks.simulate import federation_for
from secagg.errors import InvalidParameter, RejectedMessage
from secagg.hazmat.seal_codec import SealSession
from tests.ckks.conftest import Parts, keyed_round, make_config


def _resign(parts: Parts, upload: Upload, **changes: object) -> bytes:
    """What a buggy or malicious client could send: its own valid signature over bad content."""
    forged = dataclasses.replace(upload, signature=b"", **changes)  # type: ignore[arg-type]
    signature = parts.federation.identities[upload.client_id].signing_key.sign(forged.signed_bytes())
    return dataclasses.replace(forged, signature=signature).to_bytes()


def _foreign_chunk(
    parts: Parts, i: int, *, scale_bits: int, coeff_modulus_bits: tuple[int, ...] | None = None
) -> bytes:
    """A well-formed one-prime ciphertext of zeros under the client's real key, other settings."""
    p = parts.config.params
    other = SealSession(
        poly_modulus_degree=p.poly_modulus_degree,
        coeff_modulus_bits=coeff_modulus_bits or p.coeff_modulus_bits,
        level_primes=1,
        scale_bits=scale_bits,
    )
    key = other.keys_from_seed(parts.clients[i]._require_key().expose_secret_seed_for_export())
    return key.encrypt(np.zeros(other.slots, dtype=np.complex128))


def _finish(parts: Parts, good: dict[int, bytes], earlier: tuple[int, ...] = ()) -> None:
    """The remaining good uploads are accepted and the verified aggregate is exactly their sum."""
    aggregates = parts.aggregate(good)
    for i, agg in aggregates.items():
        assert parts.clients[i].handle_bytes(agg) is None
    release = parts.clients[next(iter(aggregates))].result
    contributors = tuple(sorted((*earlier, *good)))
    expected = sum(parts.updates[i].astype(np.float64) for i in contributors)
    assert release.contributors == contributors
    assert np.max(np.abs(release.weighted_sum - expected)) <= parts.config.params.release_quantum


def _round(params=Preset.COMPACT.params, n: int = 3):  # type: ignore[no-untyped-def]
    parts = keyed_round(make_config(params, size=9000, n=n), seed=5)
    return parts, parts.uploads()


def _refused(parts: Parts, blob: bytes, match: str, check: Check | None = None) -> None:
    before = parts.server.accepted
    with pytest.raises(RejectedMessage, match=match) as info:
        parts.server.receive(blob)
    if check is not None:
        assert isinstance(info.value, MessageRefused) and info.value.check == check
    assert parts.server.accepted == before  # a refusal changes nothing


def test_tampered_ciphertext_is_refused_and_others_summed() -> None:
    parts, uploads = _round()
    bad = bytearray(uploads[3])
    bad[-1000] ^= 0x01  # one bit inside the last ciphertext's data
    _refused(parts, bytes(bad), r"client 3.*not signed by its roster identity", Check.UPLOAD_SIGNATURE)
    _finish(parts, {1: uploads[1], 2: uploads[2]})


def test_truncated_upload_is_refused_and_others_summed() -> None:
    parts, uploads = _round()
    _refused(parts, uploads[2][:-1000], "truncated")
    _finish(parts, {1: uploads[1], 3: uploads[3]})


def test_truncated_ciphertext_inside_a_signed_upload_is_refused() -> None:
    parts, uploads = _round()
    up = Upload.from_bytes(uploads[3])
    chunks = (up.chunks[0][:-100], *up.chunks[1:])
    blob = _resign(parts, up, chunks=chunks)
    _refused(parts, blob, r"ciphertext 0: .*(truncated|outside)", Check.CIPHERTEXT)
    _finish(parts, {1: uploads[1], 2: uploads[2]})


def test_wrong_parameter_ciphertext_is_refused() -> None:
    parts, uploads = _round()
    foreign = _foreign_chunk(parts, 2, coeff_modulus_bits=(50,), scale_bits=30)
    up = Upload.from_bytes(uploads[2])
    blob = _resign(parts, up, chunks=(up.chunks[0], foreign, *up.chunks[2:]))
    _refused(parts, blob, r"client 2.*ciphertext 1: .*(parameters|load)", Check.CIPHERTEXT)
    _finish(parts, {1: uploads[1], 3: uploads[3]})


def test_wrong_level_ciphertext_is_refused() -> None:
    parts, uploads = _round(Preset.PRECISE.params)
    wrong = _foreign_chunk(parts, 3, scale_bits=parts.config.params.scale_bits - 20)
    up = Upload.from_bytes(uploads[3])
    blob = _resign(parts, up, chunks=(wrong, *up.chunks[1:]))
    _refused(parts, blob, r"ciphertext 0: wrong level: encoded with 1 prime")
    _finish(parts, {1: uploads[1], 2: uploads[2]})


def test_wrong_number_of_ciphertexts_is_refused() -> None:
    parts, uploads = _round()
    up = Upload.from_bytes(uploads[1])
    _refused(parts, _resign(parts, up, chunks=up.chunks[:1]), "has 1 ciphertexts, the round expects 2")
    _finish(parts, {2: uploads[2], 3: uploads[3]})


def test_wrong_scale_is_refused() -> None:
    parts, uploads = _round()
    odd = _foreign_chunk(parts, 2, scale_bits=30)
    up = Upload.from_bytes(uploads[2])
    _refused(parts, _resign(parts, up, chunks=(odd, *up.chunks[1:])), r"scale 2\^30.00, expected 2\^40")
    _finish(parts, {1: uploads[1], 3: uploads[3]})


def test_bad_sealed_sketch_size_is_refused() -> None:
    parts, uploads = _round()
    up = Upload.from_bytes(uploads[2])
    _refused(parts, _resign(parts, up, sealed_sketch=up.sealed_sketch[:-1]), "sealed sketch is")
    _finish(parts, {1: uploads[1], 3: uploads[3]})


def test_replayed_duplicate_or_foreign_uploads_are_refused() -> None:
    parts, uploads = _round()
    parts.server.receive(uploads[1])
    _refused(parts, uploads[1], "replayed message")
    up2 = Upload.from_bytes(uploads[2])
    impostor = dataclasses.replace(up2, client_id=3)  # claims to be client 3: its signature fails
    _refused(parts, impostor.to_bytes(), "client 3", Check.UPLOAD_SIGNATURE)
    other = keyed_round(make_config(size=9000, n=3), seed=5)
    foreign = other.uploads((2,))[2]
    _refused(parts, foreign, "another round config")
    advert = KeyAdvert(parts.config.digest(), 2, bytes(32), bytes(64)).to_bytes()
    _refused(parts, advert, "expected a message of kind 'upload', found 'advert'")
    _finish(parts, {2: uploads[2], 3: uploads[3]}, earlier=(1,))


def test_client_refuses_bad_update_before_anything_runs() -> None:
    config = make_config(size=10, n=2)
    fed = federation_for(config)

    def session(update: object, weight: float = 1.0) -> ClientSession:
        return ClientSession(config, 1, update, weight=weight, identity=fed.identities[1], roster=fed.roster)

    with pytest.raises(InvalidParameter, match=r"value_bound=1.0; clip it"):
        session(np.full(10, 1.5))
    with pytest.raises(InvalidParameter, match=r"weight must be in \(0, weight_bound=4.0\]"):
        session(np.zeros(10), weight=5.0)
    with pytest.raises(InvalidParameter, match="expects \\(10,\\)"):
        session(np.zeros(11))
    with pytest.raises(InvalidParameter, match="non-finite"):
        session(np.full(10, np.nan))
    with pytest.raises(InvalidParameter, match="not in the config's client_ids"):
        ClientSession(config, 9, np.zeros(10), identity=fed.identities[1], roster=fed.roster)


def test_session_for_is_public_only() -> None:
    session = session_for(make_config())
    assert not any("key" in name.lower() for name in vars(session))
