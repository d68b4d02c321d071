"""Secret handles (SecretBytes, X25519KeyPair, SigningKey): redacted, unpicklable, uncopyable,
compared by value, unhashable; and failing operations never put secret bytes in their messages."""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg.errors import AuthenticationFailed, InvalidParameter, SecAggError
from secagg.hazmat.aead import open_sealed, seal
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import KeyContext, Purpose, derive_key
from secagg.hazmat.prg import MaskExpander
from secagg.hazmat.shamir import SHARE_BYTES, combine, split
from secagg.hazmat.signing import SigningKey

from .secret_checks import assert_no_leak, exception_text


def _secret_bytes() -> tuple[Any, bytes]:
    raw = os.urandom(32)
    return SecretBytes(raw, label="test-seed"), raw


def _x25519() -> tuple[Any, bytes]:
    raw = os.urandom(32)
    pair = X25519KeyPair.from_private_bytes(SecretBytes(raw))
    return pair, pair.export_private_bytes_for_sharing().expose_secret_bytes()


def _signing() -> tuple[Any, bytes]:
    raw = os.urandom(32)
    return SigningKey(Ed25519PrivateKey.from_private_bytes(raw)), raw


HANDLES: dict[str, Callable[[], tuple[Any, bytes]]] = {
    "SecretBytes": _secret_bytes,
    "X25519KeyPair": _x25519,
    "SigningKey": _signing,
}


@pytest.fixture(params=sorted(HANDLES))
def handle(request: pytest.FixtureRequest) -> tuple[Any, bytes]:
    return HANDLES[request.param]()


def test_repr_and_str_are_redacted(handle: tuple[Any, bytes]) -> None:
    obj, raw = handle
    for text in (repr(obj), str(obj), f"{obj}", "%s" % (obj,), "%r" % (obj,), repr([obj])):  # noqa: UP031
        assert "redacted" in text
        assert_no_leak(text, raw)


def test_no_instance_dict_to_leak_through(handle: tuple[Any, bytes]) -> None:
    obj, _ = handle
    assert not hasattr(obj, "__dict__")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_refused(handle: tuple[Any, bytes], protocol: int) -> None:
    obj, _ = handle
    with pytest.raises(TypeError, match="holds secret material and cannot be pickled or copied"):
        pickle.dumps(obj, protocol=protocol)


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy], ids=["copy", "deepcopy"])
def test_copy_refused(handle: tuple[Any, bytes], copier: Callable[[Any], Any]) -> None:
    obj, _ = handle
    with pytest.raises(TypeError, match="cannot be pickled or copied"):
        copier(obj)
    with pytest.raises(TypeError, match="cannot be pickled or copied"):
        copy.deepcopy({"nested": [obj]})


def test_hash_refused(handle: tuple[Any, bytes]) -> None:
    obj, _ = handle
    with pytest.raises(TypeError, match="unhashable"):
        hash(obj)
    with pytest.raises(TypeError, match="unhashable"):
        {obj: 1}  # noqa: B018


def test_secret_bytes_equality_by_value() -> None:
    raw = os.urandom(32)
    a, b = SecretBytes(raw, label="a"), SecretBytes(bytearray(raw), label="b")
    assert a == b
    assert (a != b) is False
    assert a != SecretBytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    assert a != SecretBytes(raw[:16])
    # Never equal to the raw bytes: comparing must not be a way to test a guess casually.
    assert a != raw
    assert (a == raw) is False


def test_x25519_keypair_equality_by_value() -> None:
    raw = os.urandom(32)
    a = X25519KeyPair.from_private_bytes(SecretBytes(raw))
    b = X25519KeyPair(X25519PrivateKey.from_private_bytes(raw))
    assert a == b
    assert a != X25519KeyPair.generate()
    assert a != raw
    assert a != a.public_bytes


def test_signing_key_equality_by_value() -> None:
    raw = os.urandom(32)
    a = SigningKey(Ed25519PrivateKey.from_private_bytes(raw))
    b = SigningKey(Ed25519PrivateKey.from_private_bytes(raw))
    assert a == b
    assert a != SigningKey.generate()
    assert a != raw


def test_secret_bytes_needs_explicit_export() -> None:
    s, raw = _secret_bytes()
    assert s.expose_secret_bytes() == raw
    assert len(s) == 32
    with pytest.raises(TypeError):
        bytes(s)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        memoryview(s)  # type: ignore[arg-type]


def test_secret_bytes_is_immutable_copy_of_input() -> None:
    buf = bytearray(os.urandom(32))
    s = SecretBytes(buf)
    before = s.expose_secret_bytes()
    buf[0] ^= 0xFF
    assert s.expose_secret_bytes() == before
    assert isinstance(s.expose_secret_bytes(), bytes)


@pytest.mark.parametrize("bad", ["a string", 12, None, [1, 2], memoryview(b"ab")])
def test_secret_bytes_rejects_non_bytes(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"seed must be bytes, found "):
        SecretBytes(bad, label="seed")


def test_secret_bytes_repr_shows_label_and_length_only() -> None:
    s = SecretBytes(b"\x00" * 5, label="mask-seed")
    assert repr(s) == "<SecretBytes mask-seed: 5 bytes, redacted>"


# --- failing operations do not leak -----------------------------------------------------------


def _failures() -> list[tuple[str, bytes, Callable[[], object], type[BaseException]]]:
    secret = os.urandom(32)
    sk = SecretBytes(secret)
    shares = split(sk, threshold=3, xs=[1, 2, 3, 4])
    corrupted = dict(shares)
    # A replaced share (a random field element) makes the reconstruction a random element of
    # GF(2^521 - 1), which fits 32 bytes with probability 2^-265: combine detects it.
    corrupted[2] = SecretBytes(bytes([os.urandom(1)[0] & 1]) + os.urandom(SHARE_BYTES - 1))
    share_secret = shares[1].expose_secret_bytes()
    too_long_share = {1: SecretBytes(share_secret + b"\x00"), 2: shares[2], 3: shares[3]}
    blob = seal(sk, b"payload", b"ad")
    pair = X25519KeyPair.from_private_bytes(sk)
    pair_secret = pair.export_private_bytes_for_sharing().expose_secret_bytes()
    ctx = KeyContext("secagg-test", 1, b"s", 0, Purpose.PAIRWISE_MASK, (1, 2))
    return [
        (
            "combine-corrupted",
            secret,
            lambda: combine(corrupted, threshold=3, secret_bytes=32),
            InvalidParameter,
        ),
        (
            "combine-too-long-share",
            share_secret,
            lambda: combine(too_long_share, threshold=3, secret_bytes=32),
            InvalidParameter,
        ),
        (
            "split-too-long",
            secret,
            lambda: split(SecretBytes(secret * 3), threshold=2, xs=[1, 2]),
            InvalidParameter,
        ),
        (
            "from-private-bytes-short",
            secret,
            lambda: X25519KeyPair.from_private_bytes(SecretBytes(secret[:31])),
            InvalidParameter,
        ),
        ("exchange-low-order", pair_secret, lambda: pair.exchange(bytes(32)), InvalidParameter),
        (
            "open-wrong-key",
            secret,
            lambda: open_sealed(SecretBytes(os.urandom(32)), blob, b"ad", what="m"),
            AuthenticationFailed,
        ),
        (
            "open-tampered",
            secret,
            lambda: open_sealed(sk, blob[:-1] + bytes([blob[-1] ^ 1]), b"ad", what="m"),
            AuthenticationFailed,
        ),
        (
            "seal-short-key",
            secret,
            lambda: seal(SecretBytes(secret[:16]), b"x", b""),
            InvalidParameter,
        ),
        ("derive-bad-length", secret, lambda: derive_key(sk, ctx, length=8), InvalidParameter),
        (
            "mask-short-key",
            secret,
            lambda: MaskExpander().apply(np.zeros(4, np.uint32), SecretBytes(secret[:31])),
            InvalidParameter,
        ),
        ("pickle", secret, lambda: pickle.dumps(sk), TypeError),
    ]


@pytest.mark.parametrize("index", range(len(_failures())), ids=[f[0] for f in _failures()])
def test_failing_operation_messages_do_not_contain_secrets(index: int) -> None:
    _, secret, call, exc_type = _failures()[index]
    with pytest.raises(exc_type) as info:
        call()
    assert_no_leak(exception_text(info.value), secret)
    if exc_type is not TypeError:
        assert isinstance(info.value, SecAggError)
