"""Known-answer vectors for secagg.hazmat: RFC 7748, RFC 5869 and our own frozen vectors.

The vector files live in tests/vectors/; each has a ``header`` saying how it was made. RFC vectors
are transcribed; the rest come from tests/vectors/make_vectors.py and are frozen: a failure here
means a key or wire format changed, which breaks every deployed client.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import KeyContext, Purpose, derive_key, hkdf_sha256
from secagg.hazmat.prg import MaskExpander, expand_mask
from secagg.hazmat.shamir import combine

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    assert data["header"]["how_made"], f"{name} must say how it was made"
    return data


def x25519(scalar: bytes, u: bytes) -> bytes:
    """X25519(scalar, u) through our handle, as a recipe would call it."""
    shared = X25519KeyPair.from_private_bytes(SecretBytes(scalar)).exchange(u)
    return shared.expose_secret_bytes()


# --- RFC 7748 ---------------------------------------------------------------------------------

RFC7748 = load("rfc7748_x25519.json")


@pytest.mark.parametrize("case", RFC7748["scalar_mult"], ids=["5.2-vector-1", "5.2-vector-2"])
def test_rfc7748_scalar_mult(case: dict[str, str]) -> None:
    out = x25519(bytes.fromhex(case["scalar"]), bytes.fromhex(case["u"]))
    assert out.hex() == case["output"]


def test_rfc7748_iterated_1_and_1000() -> None:
    k = u = bytes.fromhex(RFC7748["iterated"]["start"])
    after = RFC7748["iterated"]["after"]
    for i in range(1, 1001):
        k, u = x25519(k, u), k
        if str(i) in after:
            assert k.hex() == after[str(i)], f"after {i} iteration(s)"


def test_rfc7748_section_6_1_alice_bob() -> None:
    dh = RFC7748["diffie_hellman"]
    alice = X25519KeyPair.from_private_bytes(SecretBytes(bytes.fromhex(dh["alice_private"])))
    bob = X25519KeyPair.from_private_bytes(SecretBytes(bytes.fromhex(dh["bob_private"])))
    assert alice.public_bytes.hex() == dh["alice_public"]
    assert bob.public_bytes.hex() == dh["bob_public"]
    assert alice.exchange(bob.public_bytes).expose_secret_bytes().hex() == dh["shared"]
    assert bob.exchange(alice.public_bytes).expose_secret_bytes().hex() == dh["shared"]
    # The private key exported for Shamir sharing is the one we loaded.
    exported = alice.export_private_bytes_for_sharing().expose_secret_bytes()
    assert exported.hex() == dh["alice_private"]


# --- RFC 5869 ---------------------------------------------------------------------------------

RFC5869 = load("rfc5869_hkdf_sha256.json")["cases"]


@pytest.mark.parametrize("case", RFC5869, ids=[c["name"][:3] for c in RFC5869])
def test_rfc5869_hkdf_sha256(case: dict[str, Any]) -> None:
    okm = hkdf_sha256(
        SecretBytes(bytes.fromhex(case["ikm"])),
        salt=bytes.fromhex(case["salt"]),
        info=bytes.fromhex(case["info"]),
        length=case["length"],
    )
    assert okm.expose_secret_bytes().hex() == case["okm"]


# --- derive_key (frozen) ----------------------------------------------------------------------

DERIVE = load("derive_key.json")["cases"]


def _context(case: dict[str, Any]) -> KeyContext:
    return KeyContext(
        case["protocol"],
        case["version"],
        bytes.fromhex(case["session"]),
        case["round"],
        Purpose[case["purpose"]],
        tuple(case["pair"]),
    )


def _info_by_spec(case: dict[str, Any]) -> bytes:
    """KeyContext.info() re-derived from its documented layout, independently of the code."""
    proto = case["protocol"].encode()
    label = Purpose[case["purpose"]].value.encode()
    return (
        b"secagg"
        + len(proto).to_bytes(1, "big")
        + proto
        + case["version"].to_bytes(2, "big")
        + case["round"].to_bytes(8, "big")
        + len(label).to_bytes(1, "big")
        + label
        + case["pair"][0].to_bytes(4, "big")
        + case["pair"][1].to_bytes(4, "big")
        + hashlib.sha256(bytes.fromhex(case["session"])).digest()
    )


@pytest.mark.parametrize("case", DERIVE, ids=[f"{c['purpose']}-{c['pair']}" for c in DERIVE])
def test_derive_key_frozen(case: dict[str, Any]) -> None:
    ctx = _context(case)
    assert ctx.info().hex() == case["info"]
    assert _info_by_spec(case).hex() == case["info"]
    key = derive_key(SecretBytes(bytes.fromhex(case["ikm"])), ctx, length=case["length"])
    assert key.expose_secret_bytes().hex() == case["okm"]
    # derive_key is exactly HKDF-SHA256 with salt = SHA256("secagg-salt" || session).
    salt = hashlib.sha256(b"secagg-salt" + bytes.fromhex(case["session"])).digest()
    bare = hkdf_sha256(
        SecretBytes(bytes.fromhex(case["ikm"])), salt=salt, info=ctx.info(), length=case["length"]
    )
    assert bare == key


def test_derive_key_frozen_vectors_are_pairwise_distinct() -> None:
    okms = [c["okm"] for c in DERIVE]
    infos = [c["info"] for c in DERIVE]
    assert len(set(okms)) == len(okms)
    assert len(set(infos)) == len(infos)


# --- expand_mask (frozen + cross-check) -------------------------------------------------------

MASKS = load("expand_mask.json")["cases"]


def _raw_aes_ctr_words(key: bytes, length: int) -> np.ndarray:
    """AES-256-CTR keystream (zero IV, 128-bit big-endian counter) read as little-endian uint32."""
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    stream = enc.update(bytes(4 * length)) + enc.finalize()
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32)


@pytest.mark.parametrize("case", MASKS, ids=[f"{c['key'][:6]}-{c['length']}" for c in MASKS])
def test_expand_mask_frozen(case: dict[str, Any]) -> None:
    words = expand_mask(SecretBytes(bytes.fromhex(case["key"])), case["length"])
    assert words.dtype == np.uint32
    assert words.shape == (case["length"],)
    assert [int(w) for w in words[:8]] == case["first_words"]
    if case["length"]:
        assert [int(w) for w in words[-8:]] == case["last_words"]
    assert hashlib.sha256(words.astype("<u4").tobytes()).hexdigest() == case["sha256_le_bytes"]


@pytest.mark.parametrize("length", [0, 1, 3, 65535, 65536, 65537, 70001, 2 * 65536 + 17])
def test_expand_mask_equals_raw_aes_ctr_keystream(length: int) -> None:
    key = hashlib.sha256(f"cross-check {length}".encode()).digest()
    np.testing.assert_array_equal(
        expand_mask(SecretBytes(key), length), _raw_aes_ctr_words(key, length)
    )


def test_mask_expander_reuse_across_keys_matches_fresh_expansion() -> None:
    """One expander, scratch buffers reused across keys and lengths, gives the same masks."""
    expander = MaskExpander()
    for i, length in enumerate([70001, 5, 65536, 0, 131073]):
        key = bytes([i]) * 32
        acc = np.zeros(length, dtype=np.uint32)
        expander.apply(acc, SecretBytes(key))
        np.testing.assert_array_equal(acc, _raw_aes_ctr_words(key, length))


# --- Shamir combine (frozen shares) -----------------------------------------------------------

SHAMIR = load("shamir_combine.json")["cases"]


@pytest.mark.parametrize(
    "case",
    SHAMIR,
    ids=[f"t{c['threshold']}-n{len(c['shares'])}-{c['secret_bytes']}B" for c in SHAMIR],
)
def test_shamir_combine_frozen(case: dict[str, Any]) -> None:
    shares = {int(x): SecretBytes(bytes.fromhex(y)) for x, y in case["shares"].items()}
    t = case["threshold"]
    for subset in itertools.combinations(sorted(shares), t):
        got = combine(
            {x: shares[x] for x in subset}, threshold=t, secret_bytes=case["secret_bytes"]
        )
        assert got.expose_secret_bytes().hex() == case["secret"], f"subset {subset}"
    # All shares at once (more than the threshold) also give the secret.
    got = combine(shares, threshold=t, secret_bytes=case["secret_bytes"])
    assert got.expose_secret_bytes().hex() == case["secret"]
