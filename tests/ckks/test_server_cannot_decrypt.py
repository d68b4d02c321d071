"""The server holds public material only: it cannot decrypt, and the key never reaches it."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest

from secagg.ckks.messages import Aggregate, KeyDistribution
from secagg.errors import AuthenticationFailed
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import KeyContext, Purpose
from secagg.hazmat.sealed_box import open_box
from tests.ckks.conftest import ceremony, make_config, updates_for


def _round():  # type: ignore[no-untyped-def]
    config = make_config(size=3000, n=3)
    server, clients = ceremony(config)
    updates = updates_for(config, 11)
    for i in config.client_ids:
        server.receive_upload(clients[i].encrypt_update(updates[i]), sender=i)
    aggregate = server.aggregate()
    return config, server, clients, updates, aggregate


def _secret_key_words(client) -> list[bytes]:  # type: ignore[no-untyped-def]
    """A few raw 64-bit words of the SEAL secret key polynomial (test-only introspection)."""
    import tenseal.sealapi as seal

    from secagg.hazmat.seal_codec import _context, _encryption_parameters

    seed = client._keyed().expose_secret_seed_for_export().expose_secret_bytes()
    parms = _encryption_parameters(8192, (60,))
    parms.set_random_generator(seal.Blake2xbPRNGFactory(list(struct.unpack("<8Q", seed))))
    keygen = seal.KeyGenerator(_context(parms))
    secret = keygen.secret_key()
    data = secret.data()
    return [struct.pack("<Q", data[i]) + struct.pack("<Q", data[i + 1]) for i in range(0, 64, 2)]


def test_server_state_holds_no_secret_objects() -> None:
    _, server, _, _, _ = _round()
    held = " ".join(f"{k}={type(v).__name__}" for k, v in vars(server).items())
    assert "CKKSKey" not in held and "SealKeys" not in held and "SecretKey" not in held
    assert not hasattr(server._session, "_decryptor")


def test_secret_key_never_in_any_stored_message() -> None:
    _, server, clients, _, aggregate = _round()
    stored = b"".join(server.stored_messages()) + aggregate
    seed = clients[2]._keyed().expose_secret_seed_for_export().expose_secret_bytes()
    for probe in (seed, seed[:16], seed[16:32], seed[48:]):
        assert probe not in stored
    words = _secret_key_words(clients[2])
    assert not any(w in stored for w in words if w != bytes(16))


def test_server_cannot_decrypt_the_aggregate_with_any_key_it_can_make() -> None:
    config, server, clients, updates, aggregate = _round()
    expected = sum(u.astype(np.float64) for u in updates.values())
    session = server._session
    # The server's best: a key of its own (it knows every public parameter).
    guess = session.keys_from_seed(SecretBytes(os.urandom(64)))
    ct = session.load(Aggregate.from_bytes(aggregate).chunks[0], what="aggregate")
    decoded = guess.decrypt_exact(ct).view(np.float64)[:100]
    assert np.max(np.abs(decoded - expected[:100])) > 1.0  # garbage, not the sum
    # While a client with the real key recovers it.
    release = clients[3].decrypt_aggregate(aggregate)
    assert np.max(np.abs(release.weighted_sum - expected)) <= config.params.release_quantum


def test_server_cannot_open_the_sealed_key_boxes() -> None:
    config, server, _, _, _ = _round()
    dist = KeyDistribution.from_bytes(server.stored_messages()[len(config.client_ids)])
    own = X25519KeyPair.generate()
    for recipient, blob in dist.boxes:
        ctx = KeyContext(
            protocol="secagg-ckks",
            version=1,
            session=config.digest(),
            round=config.round,
            purpose=Purpose.SEALED_BOX,
            pair=(config.dealer, recipient),
        )
        with pytest.raises(AuthenticationFailed):
            open_box(own, blob, ctx, aad=dist.roster)


def test_server_objects_do_not_pickle_secrets() -> None:
    _, _, clients, _, _ = _round()
    with pytest.raises(TypeError):
        pickle.dumps(clients[1]._keyed())
