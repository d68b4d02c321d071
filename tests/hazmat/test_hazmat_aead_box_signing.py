"""Behaviour of AEAD, sealed box, Ed25519 signing and X25519 agreement: every failure to
authenticate is one opaque AuthenticationFailed, every bad argument an InvalidParameter."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.hazmat.aead import NONCE_BYTES, TAG_BYTES, open_sealed, seal
from secagg.hazmat.agreement import X25519KeyPair, validate_public_key
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import KeyContext, Purpose
from secagg.hazmat.sealed_box import open_box, seal_to
from secagg.hazmat.signing import SigningKey, verify_signature


def assert_opaque(info: pytest.ExceptionInfo[AuthenticationFailed], what: str) -> None:
    """Exactly the fixed message, and no chained cause that could carry detail."""
    assert str(info.value) == f"authentication failed for {what}"
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def flip(blob: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(blob)
    out[index] ^= mask
    return bytes(out)


# --- AEAD -------------------------------------------------------------------------------------

KEY = SecretBytes(os.urandom(32))
AD = b"secagg share (src=3, dst=5, round=7)"
PLAINTEXT = b"a Shamir share, 66 bytes long..................................."


def test_aead_roundtrip_and_layout() -> None:
    blob = seal(KEY, PLAINTEXT, AD)
    assert len(blob) == NONCE_BYTES + len(PLAINTEXT) + TAG_BYTES
    assert open_sealed(KEY, blob, AD, what="share") == PLAINTEXT
    assert open_sealed(KEY, seal(KEY, b"", b""), b"", what="share") == b""


def test_aead_nonces_are_fresh() -> None:
    blobs = {seal(KEY, PLAINTEXT, AD) for _ in range(64)}
    assert len(blobs) == 64
    assert len({b[:NONCE_BYTES] for b in blobs}) == 64


@pytest.mark.parametrize(
    "index",
    [0, NONCE_BYTES - 1, NONCE_BYTES, NONCE_BYTES + 10, -TAG_BYTES - 1, -TAG_BYTES, -1],
    ids=["nonce-first", "nonce-last", "ct-first", "ct-mid", "ct-last", "tag-first", "tag-last"],
)
@pytest.mark.parametrize("mask", [0x01, 0x80])
def test_aead_tampered_byte_fails(index: int, mask: int) -> None:
    blob = seal(KEY, PLAINTEXT, AD)
    with pytest.raises(AuthenticationFailed) as info:
        open_sealed(KEY, flip(blob, index, mask), AD, what="share")
    assert_opaque(info, "share")


@pytest.mark.parametrize("ad", [b"", AD[:-1], AD + b"\x00", flip(AD, 0)])
def test_aead_wrong_associated_data_fails(ad: bytes) -> None:
    blob = seal(KEY, PLAINTEXT, AD)
    with pytest.raises(AuthenticationFailed) as info:
        open_sealed(KEY, blob, ad, what="share")
    assert_opaque(info, "share")


def test_aead_wrong_key_fails() -> None:
    blob = seal(KEY, PLAINTEXT, AD)
    other = SecretBytes(flip(KEY.expose_secret_bytes(), 31))
    with pytest.raises(AuthenticationFailed) as info:
        open_sealed(other, blob, AD, what="share")
    assert_opaque(info, "share")


@pytest.mark.parametrize(
    "keep", [0, 1, NONCE_BYTES, NONCE_BYTES + TAG_BYTES - 1, NONCE_BYTES + TAG_BYTES, -1]
)
def test_aead_truncated_fails(keep: int) -> None:
    blob = seal(KEY, PLAINTEXT, AD)
    with pytest.raises(AuthenticationFailed) as info:
        open_sealed(KEY, blob[:keep], AD, what="share")
    assert_opaque(info, "share")


def test_aead_extended_fails() -> None:
    blob = seal(KEY, PLAINTEXT, AD)
    with pytest.raises(AuthenticationFailed) as info:
        open_sealed(KEY, blob + b"\x00", AD, what="share")
    assert_opaque(info, "share")


def test_aead_swapped_nonce_fails() -> None:
    a, b = seal(KEY, PLAINTEXT, AD), seal(KEY, PLAINTEXT, AD)
    with pytest.raises(AuthenticationFailed):
        open_sealed(KEY, b[:NONCE_BYTES] + a[NONCE_BYTES:], AD, what="share")


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_aead_key_size_checked(size: int) -> None:
    key = SecretBytes(bytes(size))
    with pytest.raises(InvalidParameter, match=rf"AEAD key must be 32 bytes, found {size}"):
        seal(key, b"x", b"")
    with pytest.raises(InvalidParameter, match=rf"AEAD key must be 32 bytes, found {size}"):
        open_sealed(key, bytes(64), b"", what="share")


# --- sealed box -------------------------------------------------------------------------------

CTX = KeyContext("secagg-test", 1, b"config-digest", 4, Purpose.SEALED_BOX, (2, 9))


def test_sealed_box_roundtrip() -> None:
    recipient = X25519KeyPair.generate()
    blob = seal_to(recipient.public_bytes, PLAINTEXT, CTX, aad=b"extra")
    assert blob[:32] != recipient.public_bytes
    assert open_box(recipient, blob, CTX, aad=b"extra") == PLAINTEXT
    # Ephemeral key per box: two boxes of the same plaintext differ from the first byte.
    assert seal_to(recipient.public_bytes, PLAINTEXT, CTX)[:32] != blob[:32]


def test_sealed_box_wrong_recipient_fails() -> None:
    recipient, other = X25519KeyPair.generate(), X25519KeyPair.generate()
    blob = seal_to(recipient.public_bytes, PLAINTEXT, CTX)
    with pytest.raises(AuthenticationFailed) as info:
        open_box(other, blob, CTX)
    assert_opaque(info, "sealed box")


@pytest.mark.parametrize("index", [0, 31, 32, 32 + NONCE_BYTES, 60, -TAG_BYTES, -1])
def test_sealed_box_tampered_fails(index: int) -> None:
    recipient = X25519KeyPair.generate()
    blob = seal_to(recipient.public_bytes, PLAINTEXT, CTX)
    with pytest.raises(AuthenticationFailed) as info:
        open_box(recipient, flip(blob, index), CTX)
    assert_opaque(info, "sealed box")


@pytest.mark.parametrize(
    "change",
    [
        {"protocol": "secagg-other"},
        {"version": 2},
        {"session": b"config-digest2"},
        {"round": 5},
        {"purpose": Purpose.SHARE_ENCRYPTION},
        {"pair": (9, 2)},
        {"pair": (2, 10)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_sealed_box_wrong_context_fails(change: dict[str, object]) -> None:
    recipient = X25519KeyPair.generate()
    blob = seal_to(recipient.public_bytes, PLAINTEXT, CTX)
    with pytest.raises(AuthenticationFailed) as info:
        open_box(recipient, blob, replace(CTX, **change))  # type: ignore[arg-type]
    assert_opaque(info, "sealed box")


def test_sealed_box_wrong_aad_fails() -> None:
    recipient = X25519KeyPair.generate()
    blob = seal_to(recipient.public_bytes, PLAINTEXT, CTX, aad=b"a")
    with pytest.raises(AuthenticationFailed):
        open_box(recipient, blob, CTX, aad=b"b")


@pytest.mark.parametrize("keep", [0, 31, 32, 32 + NONCE_BYTES + TAG_BYTES - 1])
def test_sealed_box_truncated_fails(keep: int) -> None:
    recipient = X25519KeyPair.generate()
    blob = seal_to(recipient.public_bytes, PLAINTEXT, CTX)
    with pytest.raises(AuthenticationFailed) as info:
        open_box(recipient, blob[:keep], CTX)
    assert_opaque(info, "sealed box")


def test_sealed_box_low_order_ephemeral_fails_opaquely() -> None:
    recipient = X25519KeyPair.generate()
    blob = seal_to(recipient.public_bytes, PLAINTEXT, CTX)
    with pytest.raises(AuthenticationFailed) as info:
        open_box(recipient, bytes(32) + blob[32:], CTX)
    assert_opaque(info, "sealed box")


@pytest.mark.parametrize("public", [b"", bytes(31), bytes(33)])
def test_sealed_box_recipient_key_size_checked(public: bytes) -> None:
    with pytest.raises(
        InvalidParameter, match=rf"recipient public key must be 32 bytes, found {len(public)}"
    ):
        seal_to(public, b"x", CTX)


def test_sealed_box_low_order_recipient_rejected() -> None:
    with pytest.raises(InvalidParameter, match="low-order point"):
        seal_to(bytes(32), b"x", CTX)


# --- signing ----------------------------------------------------------------------------------

MESSAGE = b"secagg/v1 round 7 consistency check: survivors=[1,2,4]"


def test_sign_verify_roundtrip() -> None:
    key = SigningKey.generate()
    sig = key.sign(MESSAGE)
    assert len(sig) == 64
    assert verify_signature(key.public_bytes, sig, MESSAGE, what="signature") is None


@pytest.mark.parametrize("message", [b"", MESSAGE[:-1], MESSAGE + b"\x00", flip(MESSAGE, 0)])
def test_verify_wrong_message_fails(message: bytes) -> None:
    key = SigningKey.generate()
    with pytest.raises(AuthenticationFailed) as info:
        verify_signature(key.public_bytes, key.sign(MESSAGE), message, what="signature")
    assert_opaque(info, "signature")


@pytest.mark.parametrize("index", [0, 31, 32, 63])
def test_verify_tampered_signature_fails(index: int) -> None:
    key = SigningKey.generate()
    with pytest.raises(AuthenticationFailed) as info:
        verify_signature(key.public_bytes, flip(key.sign(MESSAGE), index), MESSAGE, what="sig")
    assert_opaque(info, "sig")


@pytest.mark.parametrize("size", [0, 63, 65])
def test_verify_wrong_length_signature_fails(size: int) -> None:
    key = SigningKey.generate()
    sig = (key.sign(MESSAGE) * 2)[:size]
    with pytest.raises(AuthenticationFailed) as info:
        verify_signature(key.public_bytes, sig, MESSAGE, what="sig")
    assert_opaque(info, "sig")


def test_verify_wrong_public_key_fails() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    with pytest.raises(AuthenticationFailed):
        verify_signature(other.public_bytes, key.sign(MESSAGE), MESSAGE, what="sig")
    with pytest.raises(AuthenticationFailed):
        verify_signature(b"\xff" * 32, key.sign(MESSAGE), MESSAGE, what="sig")


@pytest.mark.parametrize("size", [0, 31, 33])
def test_verify_public_key_size_checked(size: int) -> None:
    key = SigningKey.generate()
    with pytest.raises(
        InvalidParameter, match=rf"Ed25519 public key must be 32 bytes, found {size}"
    ):
        verify_signature(bytes(size), key.sign(MESSAGE), MESSAGE, what="sig")


# --- X25519 agreement -------------------------------------------------------------------------

# Points of order 1, 2, 4 and 8 and their non-canonical encodings (libsodium's blocklist).
LOW_ORDER = [
    "00" * 32,
    "01" + "00" * 31,
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ec" + "ff" * 30 + "7f",
    "ed" + "ff" * 30 + "7f",
    "ee" + "ff" * 30 + "7f",
    "00" * 31 + "80",
    "01" + "00" * 30 + "80",
]


@pytest.mark.parametrize("point", LOW_ORDER)
def test_x25519_low_order_point_rejected(point: str) -> None:
    pair = X25519KeyPair.generate()
    with pytest.raises(InvalidParameter, match="low-order point"):
        pair.exchange(bytes.fromhex(point))
    # and refused on sight, before any exchange (the server checks adverts with this)
    with pytest.raises(InvalidParameter, match="advert key is a low-order point"):
        validate_public_key(bytes.fromhex(point), what="advert key")


def test_x25519_agreement_is_symmetric() -> None:
    a, b = X25519KeyPair.generate(), X25519KeyPair.generate()
    assert a.exchange(b.public_bytes) == b.exchange(a.public_bytes)
    assert a.exchange(b.public_bytes) != a.exchange(X25519KeyPair.generate().public_bytes)


@pytest.mark.parametrize("public", [b"", bytes(31), bytes(33), "ab" * 16, bytearray(32), None])
def test_x25519_peer_key_type_and_size_checked(public: object) -> None:
    pair = X25519KeyPair.generate()
    with pytest.raises(InvalidParameter, match=r"X25519 public key must be 32 bytes, found "):
        pair.exchange(public)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameter, match=r"^peer key must be 32 bytes"):
        validate_public_key(public, what="peer key")  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_x25519_private_key_size_checked(size: int) -> None:
    with pytest.raises(
        InvalidParameter, match=rf"X25519 private key must be 32 bytes, found {size}"
    ):
        X25519KeyPair.from_private_bytes(SecretBytes(bytes(size)))


def test_x25519_export_roundtrip() -> None:
    pair = X25519KeyPair.generate()
    again = X25519KeyPair.from_private_bytes(pair.export_private_bytes_for_sharing())
    assert again == pair
    assert again.public_bytes == pair.public_bytes
