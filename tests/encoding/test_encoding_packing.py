"""Bit-packing: argument checks and the pack/unpack roundtrip property."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.encoding.packing import BitPacker, PackedSum, pack_bits, packed_size, unpack_bits
from secagg.errors import InvalidParameter


@settings(max_examples=200, deadline=None)
@given(bits=st.integers(1, 32), length=st.integers(0, 5000), seed=st.integers(0, 2**32 - 1))
def test_roundtrip(bits: int, length: int, seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, 2**32, size=length, dtype=np.uint32)
    packed = pack_bits(values, bits)
    assert isinstance(packed, bytes)
    assert len(packed) == packed_size(length, bits)
    mask = np.uint32((1 << bits) - 1) if bits < 32 else np.uint32(0xFFFFFFFF)
    out = unpack_bits(packed, bits, length)
    assert out.dtype == np.uint32
    assert out.shape == (length,)
    np.testing.assert_array_equal(out, values & mask)


@pytest.mark.parametrize("bits", [1, 7, 32])
def test_length_zero_roundtrips(bits: int) -> None:
    """An empty vector packs to one padding group (bits * 8 bytes) and unpacks to empty."""
    packed = pack_bits(np.zeros(0, dtype=np.uint32), bits)
    assert packed == bytes(bits * 8) == bytes(packed_size(0, bits))
    assert unpack_bits(packed, bits, 0).shape == (0,)


@pytest.mark.parametrize("bits", [1, 13, 32])
def test_size_is_bits_per_value_plus_padding(bits: int) -> None:
    for count in [1, 63, 64, 65, 6400]:
        groups = -(-count // 64)
        assert packed_size(count, bits) == bits * groups * 8
    assert packed_size(6400, bits) == 6400 * bits // 8


def test_signed_values_pack_mod_2_to_the_bits() -> None:
    values = np.array([-1, -2, 5, 2**40 + 3], dtype=np.int64)
    out = unpack_bits(pack_bits(values, 5), 5, 4)
    np.testing.assert_array_equal(out, [31, 30, 5, 3])


@pytest.mark.parametrize("bits", [0, -1, 33, 64])
def test_bits_out_of_range(bits: int) -> None:
    with pytest.raises(InvalidParameter, match=rf"bits must be in \[1, 32\], found {bits}"):
        pack_bits(np.zeros(3, dtype=np.uint32), bits)
    with pytest.raises(InvalidParameter, match=rf"bits must be in \[1, 32\], found {bits}"):
        unpack_bits(bytes(8), bits, 3)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (
            np.zeros((2, 3), dtype=np.uint32),
            r"values must be a 1-D integer array, found 2-D uint32",
        ),
        (np.zeros((), dtype=np.uint32), r"values must be a 1-D integer array, found 0-D uint32"),
        (np.array([0.5, 1.5]), r"values must be a 1-D integer array, found 1-D float64"),
        (np.array([True, False]), r"values must be a 1-D integer array, found 1-D bool"),
    ],
)
def test_values_must_be_1d_integers(values: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidParameter, match=match):
        pack_bits(values, 8)


@pytest.mark.parametrize("delta", [-1, 1, -8, 8])
def test_unpack_wrong_length(delta: int) -> None:
    good = pack_bits(np.arange(100, dtype=np.uint32), 9)
    data = good[:delta] if delta < 0 else good + bytes(delta)
    with pytest.raises(
        InvalidParameter,
        match=rf"packed vector is {len(data)} bytes; 100 values at 9 bits need {len(good)}",
    ):
        unpack_bits(data, 9, 100)


def test_unpack_wrong_count_for_data() -> None:
    good = pack_bits(np.arange(100, dtype=np.uint32), 9)
    with pytest.raises(InvalidParameter, match=r"200 values at 9 bits need"):
        unpack_bits(good, 9, 200)


@pytest.mark.parametrize("count", [-1, -64])
def test_unpack_negative_count(count: int) -> None:
    with pytest.raises(InvalidParameter, match=rf"count must be >= 0, found {count}"):
        unpack_bits(bytes(9 * 8), 9, count)


# --- PackedSum: summing packed vectors without unpacking each ---------------------------------


@settings(max_examples=80, deadline=None)
@given(
    bits=st.integers(1, 32),
    length=st.integers(0, 700),
    clients=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_packed_sum_equals_sum_of_unpacked(bits: int, length: int, clients: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = [rng.integers(0, 2**32, size=length, dtype=np.uint32) for _ in range(clients)]
    acc = PackedSum(length, bits)
    for v in vectors:
        acc.add(pack_bits(v, bits))
    expected = sum((v.astype(np.uint64) for v in vectors), start=np.zeros(length, np.uint64))
    expected %= np.uint64(2**bits)
    out = acc.result()
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, expected.astype(np.uint32))


def test_packed_sum_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidParameter, match=r"bits must be in \[1, 32\], found 0"):
        PackedSum(10, 0)
    with pytest.raises(InvalidParameter, match=r"count must be >= 0, found -1"):
        PackedSum(-1, 8)
    acc = PackedSum(100, 9)
    with pytest.raises(InvalidParameter, match=r"packed vector is 3 bytes; 100 values at 9 bits need 144"):
        acc.add(b"abc")


# --- incremental packing and in-cache reduction (the masking client's and server's fused loops) --


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(1, 32),
    length=st.integers(0, 3000),
    cuts=st.lists(st.integers(0, 3100), max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_bit_packer_in_steps_equals_pack_bits(bits: int, length: int, cuts: list[int], seed: int) -> None:
    """Packing prefixes as they become final, in any order of stops, gives pack_bits' bytes."""
    values = np.random.default_rng(seed).integers(0, 2**32, size=length, dtype=np.uint32)
    packer = BitPacker(length, bits)
    packer.buffer[:length] = values
    for stop in cuts:
        packer.pack_through(stop)
    assert packer.to_bytes() == pack_bits(values, bits)


def test_bit_packer_packs_a_row_once_it_is_final() -> None:
    """A row packed before its values change keeps the old values: the contract is 'final'."""
    values = np.arange(640, dtype=np.uint32)
    packer = BitPacker(640, 16)  # 64 rows of 10 values
    packer.buffer[:] = values
    packer.pack_through(10)  # row 0 packed
    packer.buffer[:10] = 0
    assert unpack_bits(packer.to_bytes(), 16, 640)[:10].tolist() == list(range(10))


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 32), length=st.integers(1, 500), stop=st.integers(0, 600),
       seed=st.integers(0, 2**32 - 1))
def test_packed_sum_partial_reduction_keeps_the_sum(bits: int, length: int, stop: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = [rng.integers(0, 2**32, size=length, dtype=np.uint32) for _ in range(3)]
    acc = PackedSum(length, bits)
    acc.add(pack_bits(vectors[0], bits))
    acc.reduce_through(stop)  # reduce a prefix mid-way, then keep adding
    for v in vectors[1:]:
        acc.add(pack_bits(v, bits))
    expected = sum((v.astype(np.uint64) for v in vectors), start=np.zeros(length, np.uint64)) % 2**bits
    np.testing.assert_array_equal(acc.result(), expected.astype(np.uint32))


def test_packed_sum_is_closed_after_result() -> None:
    acc = PackedSum(10, 8)
    acc.add(pack_bits(np.ones(10, np.uint32), 8))
    out = acc.result()
    assert not out.flags.writeable
    with pytest.raises(InvalidParameter, match="result was already taken"):
        acc.add(pack_bits(np.ones(10, np.uint32), 8))
