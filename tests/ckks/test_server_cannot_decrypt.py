"""The server holds public material only: it cannot decrypt, and the key never reaches it."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest

from secagg.ckks.keys import box_aad, box_context
from secagg.ckks.messages import Aggregate, KeyDistribution
from secagg.errors import AuthenticationFailed
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.sealed_box import open_box
from tests.ckks.conftest import Parts, keyed_round, make_config


def _round() -> tuple[Parts, bytes]:
    parts = keyed_round(make_config(size=3000, n=3), seed=11)
    aggregates = parts.aggregate(parts.uploads())
    return parts, aggregates[1]


def _secret_key_words(parts: Parts, i: int) -> list[bytes]:
    """A few raw 64-bit words of the SEAL secret key polynomial (test-only introspection)."""
    import tenseal.sealapi as seal

    from secagg.hazmat.seal_codec import _context, _encryption_parameters

    seed = parts.clients[i]._require_key().expose_secret_seed_for_export().expose_secret_bytes()
    parms = _encryption_parameters(8192, (60,))
    parms.set_random_generator(seal.Blake2xbPRNGFactory(list(struct.unpack("<8Q", seed))))
    keygen = seal.KeyGenerator(_context(parms))
    secret = keygen.secret_key()  # keep it alive while its data is read
    data = secret.data()
    return [struct.pack("<Q", data[i]) + struct.pack("<Q", data[i + 1]) for i in range(0, 64, 2)]


def test_server_state_holds_no_secret_objects() -> None:
    parts, _ = _round()
    held = " ".join(f"{k}={type(v).__name__}" for k, v in vars(parts.server).items())
    assert "CKKSKey" not in held and "SealKeys" not in held and "SecretKey" not in held
    assert "Identity" not in held and "SigningKey" not in held
    assert not hasattr(parts.server._seal, "_decryptor")


def test_secret_key_never_in_any_stored_message() -> None:
    parts, aggregate = _round()
    stored = b"".join(parts.server.stored_messages()) + aggregate
    seed = parts.clients[2]._require_key().expose_secret_seed_for_export().expose_secret_bytes()
    for probe in (seed, seed[:16], seed[16:32], seed[48:]):
        assert probe not in stored
    words = _secret_key_words(parts, 2)
    assert not any(w in stored for w in words if w != bytes(16))


def test_server_cannot_decrypt_the_aggregate_with_any_key_it_can_make() -> None:
    parts, aggregate = _round()
    expected = sum(u.astype(np.float64) for u in parts.updates.values())
    session = parts.server._seal
    guess = session.keys_from_seed(SecretBytes(os.urandom(64)))  # the server's best: its own key
    ct = session.load(Aggregate.from_bytes(aggregate).chunks[0], what="aggregate")
    decoded = guess.decrypt_exact(ct).view(np.float64)[:100]
    assert np.max(np.abs(decoded - expected[:100])) > 1.0  # garbage, not the sum
    parts.clients[3].handle_bytes(parts.server.result.aggregate)  # a client with the key can
    release = parts.clients[3].result
    assert np.max(np.abs(release.weighted_sum - expected)) <= parts.config.params.release_quantum


def test_server_cannot_open_the_sealed_key_boxes() -> None:
    parts, _ = _round()
    config = parts.config
    dist = KeyDistribution.from_bytes(parts.server.stored_messages()[len(config.client_ids)])
    own = X25519KeyPair.generate()
    assert len(dist.boxes) == 2
    for box in dist.boxes:
        with pytest.raises(AuthenticationFailed):
            open_box(own, box.sealed, box_context(config, box.recipient),
                     aad=box_aad(config, box.recipient, box.box_public))


def test_key_handles_do_not_pickle() -> None:
    parts, _ = _round()
    with pytest.raises(TypeError):
        pickle.dumps(parts.clients[1]._require_key())
    with pytest.raises(TypeError):
        pickle.dumps(parts.clients[1])
