"""KeyContext / derive_key / hkdf_sha256 and mask expansion: validation and domain separation."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import InvalidParameter
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import KeyContext, Purpose, derive_key, hkdf_sha256
from secagg.hazmat.prg import Keystream, MaskExpander, expand_mask

BASE = KeyContext("secagg-masking", 1, b"digest", 3, Purpose.PAIRWISE_MASK, (1, 2))
IKM = SecretBytes(os.urandom(32))


# --- KeyContext validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"protocol": ""}, r"KeyContext\.protocol must be 1-64 bytes of UTF-8, found 0 bytes"),
        (
            {"protocol": "p" * 65},
            r"KeyContext\.protocol must be 1-64 bytes of UTF-8, found 65 bytes",
        ),
        # 17 four-byte characters: 17 characters but 68 bytes, once a struct.error at info().
        ({"protocol": "\U0001f512" * 17}, r"protocol must be 1-64 bytes of UTF-8, found 68 bytes"),
        ({"protocol": b"secagg"}, r"KeyContext\.protocol must be 1-64 bytes of UTF-8, found bytes"),
        ({"session": "digest"}, r"KeyContext\.session must be bytes, found str"),
        ({"version": -1}, r"KeyContext\.version must be in \[0, 2\^16\), found -1"),
        ({"version": 2**16}, r"KeyContext\.version must be in \[0, 2\^16\), found 65536"),
        ({"round": -1}, r"KeyContext\.round must be in \[0, 2\^63\), found -1"),
        ({"round": 2**63}, r"KeyContext\.round must be in \[0, 2\^63\), found 9223372036854775808"),
        ({"pair": (-1, 0)}, r"KeyContext\.pair must be two ints in \[0, 2\^32\), found \(-1, 0\)"),
        ({"pair": (0, 2**32)}, r"KeyContext\.pair must be two ints in \[0, 2\^32\)"),
        ({"pair": (1, 2, 3)}, r"KeyContext\.pair must be two ints .* found \(1, 2, 3\)"),
        ({"pair": (1,)}, r"KeyContext\.pair must be two ints"),
        ({"pair": [1, 2]}, r"KeyContext\.pair must be two ints .* found \[1, 2\]"),
        ({"pair": (1.0, 2)}, r"KeyContext\.pair must be two ints"),
        ({"purpose": "pairwise-mask"}, r"KeyContext\.purpose must be a Purpose member"),
    ],
    ids=lambda v: v if isinstance(v, str) else next(iter(v)),
)
def test_key_context_rejects(change: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidParameter, match=match):
        replace(BASE, **change)


def test_key_context_boundaries_accepted() -> None:
    for change in [
        {"protocol": "p"},
        {"protocol": "p" * 64},
        {"protocol": "\U0001f512" * 16},
        {"version": 2**16 - 1},
        {"round": 2**63 - 1},
        {"pair": (2**32 - 1, 0)},
        {"session": b""},
    ]:
        replace(BASE, **change).info()  # type: ignore[arg-type]


def test_key_context_is_frozen() -> None:
    with pytest.raises(AttributeError):
        BASE.round = 4  # type: ignore[misc]


# --- derive_key / hkdf_sha256 -----------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 15, 65, 255 * 32])
def test_derive_key_length_checked(length: int) -> None:
    with pytest.raises(
        InvalidParameter, match=rf"derived key length must be 16-64 bytes, found {length}"
    ):
        derive_key(IKM, BASE, length=length)


@pytest.mark.parametrize("length", [16, 32, 64])
def test_derive_key_lengths(length: int) -> None:
    key = derive_key(IKM, BASE, length=length)
    assert len(key) == length
    assert "pairwise-mask" in repr(key)
    assert derive_key(IKM, BASE, length=length) == key


@pytest.mark.parametrize("length", [0, -1, 255 * 32 + 1])
def test_hkdf_length_checked(length: int) -> None:
    with pytest.raises(
        InvalidParameter, match=rf"HKDF-SHA256 length must be 1-8160 bytes, found {length}"
    ):
        hkdf_sha256(IKM, salt=b"", info=b"", length=length)


def test_hkdf_max_length_accepted() -> None:
    assert len(hkdf_sha256(IKM, salt=b"s", info=b"i", length=255 * 32)) == 255 * 32


VARIANTS = {
    "base": {},
    "protocol": {"protocol": "secagg-masking2"},
    "version": {"version": 2},
    "session": {"session": b"digest2"},
    "round": {"round": 4},
    "purpose": {"purpose": Purpose.SELF_MASK},
    "pair-reversed": {"pair": (2, 1)},
    "pair-src": {"pair": (0, 2)},
    "pair-dst": {"pair": (1, 3)},
}


def test_every_context_field_separates_keys() -> None:
    keys = {
        name: derive_key(IKM, replace(BASE, **change)).expose_secret_bytes()  # type: ignore[arg-type]
        for name, change in VARIANTS.items()
    }
    assert len(set(keys.values())) == len(keys), "two contexts derived the same key"
    assert derive_key(SecretBytes(os.urandom(32)), BASE).expose_secret_bytes() != keys["base"]


contexts = st.builds(
    KeyContext,
    protocol=st.text(min_size=1, max_size=16),
    version=st.integers(0, 2**16 - 1),
    session=st.binary(max_size=40),
    round=st.integers(0, 2**63 - 1),
    purpose=st.sampled_from(Purpose),
    pair=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(contexts, contexts)
def test_info_encoding_is_injective(a: KeyContext, b: KeyContext) -> None:
    assert (a.info() == b.info()) == (a == b)


# --- mask expansion ---------------------------------------------------------------------------


def test_expand_mask_negative_length() -> None:
    with pytest.raises(InvalidParameter, match=r"mask length must be >= 0, found -1"):
        expand_mask(SecretBytes(bytes(32)), -1)


@pytest.mark.parametrize("size", [0, 15, 24, 31, 33, 64])
def test_mask_key_size_checked(size: int) -> None:
    with pytest.raises(InvalidParameter, match=rf"mask key must be 16 or 32 bytes, found {size}"):
        expand_mask(SecretBytes(bytes(size)), 4)


def test_masking_keys_are_aes128_and_differ_from_the_aes256_reading() -> None:
    """Masking derives 16-byte keys (AES-128-CTR); the first 16 bytes of a 32-byte key give a
    different stream under AES-256, so the two key sizes never alias."""
    from secagg.masking.keys import MASK_KEY_BYTES

    assert MASK_KEY_BYTES == 16
    key = bytes(range(32))
    assert not np.array_equal(expand_mask(SecretBytes(key[:16]), 64), expand_mask(SecretBytes(key), 64))


@pytest.mark.parametrize(
    "acc",
    [
        np.zeros(8, dtype=np.int64),
        np.zeros(8, dtype=np.uint64),
        np.zeros(8, dtype=np.int32),
        np.zeros((2, 4), dtype=np.uint32),
        np.zeros(16, dtype=np.uint32)[::2],
    ],
    ids=["int64", "uint64", "int32", "2-D", "strided"],
)
def test_mask_accumulator_checked(acc: np.ndarray) -> None:
    with pytest.raises(
        InvalidParameter, match="mask accumulator must be a contiguous 1-D uint32 array"
    ):
        MaskExpander().apply(acc, SecretBytes(bytes(32)))


@settings(max_examples=40, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    start=st.lists(st.integers(0, 2**32 - 1), max_size=300),
)
def test_add_then_subtract_cancels(key: bytes, start: list[int]) -> None:
    acc = np.array(start, dtype=np.uint32)
    original = acc.copy()
    expander = MaskExpander()
    expander.apply(acc, SecretBytes(key))
    if len(start) > 4:
        assert not np.array_equal(acc, original)
    expander.apply(acc, SecretBytes(key), subtract=True)
    np.testing.assert_array_equal(acc, original)
    # Adding the mask is the mod-2^32 sum with expand_mask.
    expander.apply(acc, SecretBytes(key))
    expected = (original.astype(np.uint64) + expand_mask(SecretBytes(key), len(start))) % 2**32
    np.testing.assert_array_equal(acc, expected.astype(np.uint32))


@settings(max_examples=30, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), n=st.integers(0, 70_100), m=st.integers(0, 70_100))
def test_mask_prefix_consistent(key: bytes, n: int, m: int) -> None:
    """The mask for length m is the prefix of the mask for length n >= m (one keystream)."""
    lo, hi = sorted((n, m))
    long = expand_mask(SecretBytes(key), hi)
    np.testing.assert_array_equal(expand_mask(SecretBytes(key), lo), long[:lo])


def test_different_keys_give_different_masks() -> None:
    a = expand_mask(SecretBytes(bytes(32)), 1000)
    b = expand_mask(SecretBytes(bytes(31) + b"\x01"), 1000)
    assert np.count_nonzero(a == b) < 5


@settings(max_examples=30, deadline=None)
@given(key=st.binary(min_size=32, max_size=32),
       counts=st.lists(st.integers(0, Keystream.CHUNK_WORDS), min_size=1, max_size=4))
def test_keystream_chunks_continue_one_stream(key: bytes, counts: list[int]) -> None:
    """Words handed out chunk by chunk are the mask keystream read in order."""
    stream = Keystream(SecretBytes(key))
    got = np.concatenate([stream.next_words(c).copy() for c in counts])
    np.testing.assert_array_equal(got, expand_mask(SecretBytes(key), sum(counts)))


def test_keystream_checks_and_redacts() -> None:
    with pytest.raises(InvalidParameter, match="keystream key must be 32 bytes, found 31"):
        Keystream(SecretBytes(bytes(31)))
    stream = Keystream(SecretBytes(b"k" * 32))
    with pytest.raises(InvalidParameter, match=r"count must be in \[0, 65536\], found 65537"):
        stream.next_words(Keystream.CHUNK_WORDS + 1)
    assert "6b6b" not in repr(stream) and "kkkk" not in repr(stream)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(stream)


def test_after_chunk_sees_every_prefix_in_order() -> None:
    acc = np.zeros(3 * 65536 + 5, dtype=np.uint32)
    stops: list[int] = []
    MaskExpander().apply_many(acc, [(SecretBytes(bytes(32)), False)], after_chunk=stops.append)
    assert stops == [65536, 2 * 65536, 3 * 65536, 3 * 65536 + 5]
