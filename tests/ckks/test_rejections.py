"""Bad uploads are rejected with a clear error naming the rule; everyone else is still summed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg.ckks import CKKSClient, CKKSRoundConfig, CKKSServer, Preset
from secagg.ckks.client import session_for
from secagg.ckks.messages import Upload
from secagg.errors import AlreadyUsed, RejectedMessage
from secagg.hazmat.seal_codec import SealSession
from tests.ckks.conftest import ceremony, make_config, updates_for


def _resign(client: CKKSClient, upload: Upload, chunks: tuple[bytes, ...]) -> bytes:
    """What a buggy or malicious client could send: its own valid signature over bad chunks."""
    forged = dataclasses.replace(upload, chunks=chunks, signature=b"")
    signed = dataclasses.replace(forged, signature=client._signer.sign(forged.digest()))
    return signed.to_bytes()


def _foreign_chunk(
    client: CKKSClient, *, scale_bits: int, coeff_modulus_bits: tuple[int, ...] | None = None
) -> bytes:
    """A well-formed one-prime ciphertext of zeros under the client's real key, other settings."""
    p = client.config.params
    other = SealSession(
        poly_modulus_degree=p.poly_modulus_degree,
        coeff_modulus_bits=coeff_modulus_bits or p.coeff_modulus_bits,
        level_primes=1,
        scale_bits=scale_bits,
    )
    key = other.keys_from_seed(client._keyed().expose_secret_seed_for_export())
    return key.encrypt(np.zeros(other.slots, dtype=np.complex128))


def _finish(
    config: CKKSRoundConfig,
    server: CKKSServer,
    clients: dict[int, CKKSClient],
    good: dict[int, bytes],
    updates: dict[int, np.ndarray],
    earlier: tuple[int, ...] = (),
) -> None:
    """The remaining good uploads are accepted and the aggregate is exactly their sum."""
    for i, blob in good.items():
        server.receive_upload(blob, sender=i)
    release = clients[1].decrypt_aggregate(server.aggregate())
    expected = sum(updates[i].astype(np.float64) for i in (*earlier, *good))
    assert release.contributors == (*earlier, *good)
    assert np.max(np.abs(release.weighted_sum - expected)) <= config.params.release_quantum


def _round(params=Preset.COMPACT.params, n: int = 3):  # type: ignore[no-untyped-def]
    config = make_config(params, size=9000, n=n)
    server, clients = ceremony(config)
    updates = updates_for(config, 5)
    uploads = {i: clients[i].encrypt_update(updates[i]) for i in config.client_ids}
    return config, server, clients, updates, uploads


def test_tampered_ciphertext_is_rejected_and_others_summed() -> None:
    config, server, clients, updates, uploads = _round()
    bad = bytearray(uploads[3])
    bad[-1000] ^= 0x01  # one bit inside the last ciphertext's data
    with pytest.raises(RejectedMessage, match=r"client 3.*authentication failed.*tampered"):
        server.receive_upload(bytes(bad), sender=3)
    assert server.rejections[3]
    _finish(config, server, clients, {1: uploads[1], 2: uploads[2]}, updates)


def test_truncated_upload_is_rejected_and_others_summed() -> None:
    config, server, clients, updates, uploads = _round()
    with pytest.raises(RejectedMessage, match="truncated"):
        server.receive_upload(uploads[2][:-1000], sender=2)
    _finish(config, server, clients, {1: uploads[1], 3: uploads[3]}, updates)


def test_truncated_ciphertext_inside_a_signed_upload_is_rejected() -> None:
    config, server, clients, updates, uploads = _round()
    up = Upload.from_bytes(uploads[3])
    chunks = (up.chunks[0][:-100], *up.chunks[1:])
    with pytest.raises(RejectedMessage, match=r"ciphertext 0: .*(truncated|outside)"):
        server.receive_upload(_resign(clients[3], up, chunks), sender=3)
    _finish(config, server, clients, {1: uploads[1], 2: uploads[2]}, updates)


def test_wrong_parameter_ciphertext_is_rejected() -> None:
    config, server, clients, updates, uploads = _round()
    foreign = _foreign_chunk(clients[2], coeff_modulus_bits=(50,), scale_bits=30)
    up = Upload.from_bytes(uploads[2])
    with pytest.raises(RejectedMessage, match=r"client 2.*ciphertext 1: .*(parameters|load)"):
        server.receive_upload(_resign(clients[2], up, (up.chunks[0], foreign, *up.chunks[2:])), sender=2)
    _finish(config, server, clients, {1: uploads[1], 3: uploads[3]}, updates)


def test_wrong_level_ciphertext_is_rejected() -> None:
    config, server, clients, updates, uploads = _round(Preset.PRECISE.params)
    wrong = _foreign_chunk(clients[3], scale_bits=config.params.scale_bits - 20)
    up = Upload.from_bytes(uploads[3])
    with pytest.raises(RejectedMessage, match=r"ciphertext 0: wrong level: encoded with 1 prime"):
        server.receive_upload(_resign(clients[3], up, (wrong, *up.chunks[1:])), sender=3)
    _finish(config, server, clients, {1: uploads[1], 2: uploads[2]}, updates)


def test_wrong_number_of_ciphertexts_is_rejected() -> None:
    config, server, clients, updates, uploads = _round()
    up = Upload.from_bytes(uploads[1])
    with pytest.raises(RejectedMessage, match="has 1 ciphertexts, the round expects 2"):
        server.receive_upload(_resign(clients[1], up, up.chunks[:1]), sender=1)
    _finish(config, server, clients, {2: uploads[2], 3: uploads[3]}, updates)


def test_wrong_scale_is_rejected() -> None:
    config, server, clients, updates, uploads = _round()
    odd = _foreign_chunk(clients[2], scale_bits=30)
    up = Upload.from_bytes(uploads[2])
    with pytest.raises(RejectedMessage, match=r"scale 2\^30.00, expected 2\^40"):
        server.receive_upload(_resign(clients[2], up, (odd, *up.chunks[1:])), sender=2)
    _finish(config, server, clients, {1: uploads[1], 3: uploads[3]}, updates)


def test_replayed_or_foreign_uploads_are_rejected() -> None:
    config, server, clients, updates, uploads = _round()
    server.receive_upload(uploads[1], sender=1)
    with pytest.raises(RejectedMessage, match="duplicate upload"):
        server.receive_upload(uploads[1], sender=1)
    with pytest.raises(RejectedMessage, match="claims to come from client 2"):
        server.receive_upload(uploads[2], sender=3)
    assert 3 in server.rejections and 2 not in server.rejections  # impersonation drops no one
    other_config = make_config(size=9000, n=3)
    _, other_clients = ceremony(other_config)
    foreign = other_clients[2].encrypt_update(updates[2])
    with pytest.raises(RejectedMessage, match="another round config"):
        server.receive_upload(foreign)
    with pytest.raises(RejectedMessage, match="expected a message of kind 'upload', found 'advert'"):
        server.receive_upload(_advert_bytes(server))
    _finish(config, server, clients, {2: uploads[2]}, updates, earlier=(1,))


def _advert_bytes(server: CKKSServer) -> bytes:
    return server.stored_messages()[0]


def test_client_refuses_bad_update_before_encrypting() -> None:
    config = make_config(size=10, n=2)
    _, clients = ceremony(config)
    with pytest.raises(Exception, match=r"value_bound=1.0; clip it"):
        clients[1].encrypt_update(np.full(10, 1.5))
    with pytest.raises(Exception, match=r"weight must be in \(0, weight_bound=4.0\]"):
        clients[1].encrypt_update(np.zeros(10), weight=5.0)
    with pytest.raises(Exception, match="expects \\(10,\\)"):
        clients[1].encrypt_update(np.zeros(11))
    clients[1].encrypt_update(np.zeros(10))
    with pytest.raises(AlreadyUsed):
        clients[1].encrypt_update(np.zeros(10))


def test_session_for_is_public_only() -> None:
    session = session_for(make_config())
    assert not any("key" in name.lower() for name in vars(session))
