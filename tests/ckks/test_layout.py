"""Chunking and complex packing: two reals per slot, the weight/count trailer, any size."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.ckks.layout import TRAILER, Layout


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 5000), slots=st.sampled_from([4, 16, 1024]), weight=st.floats(0.25, 8.0))
def test_pack_unpack_roundtrip(size: int, slots: int, weight: float) -> None:
    layout = Layout(size, slots)
    x = np.random.default_rng(size).uniform(-1, 1, size).astype(np.float32)
    chunks = layout.pack(x, weight)
    assert len(chunks) == layout.chunks == -(-(size + TRAILER) // (2 * slots))
    assert all(c.shape == (slots,) and c.dtype == np.complex128 for c in chunks)
    values, w, count = layout.unpack(chunks)
    np.testing.assert_array_equal(values, x.astype(np.float64) * weight)
    assert (w, count) == (weight, 1.0)


def test_two_reals_per_slot_halves_the_ciphertexts() -> None:
    layout = Layout(8192 * 10 - TRAILER, 4096)
    assert layout.chunks == 10  # one real per slot would need 20


def test_sum_of_packings_is_packing_of_sums() -> None:
    layout = Layout(7, 2)
    a, b = np.arange(7.0), np.arange(7.0) * 10
    summed = [x + y for x, y in zip(layout.pack(a, 1.0), layout.pack(b, 2.0), strict=True)]
    values, w, count = layout.unpack(summed)
    np.testing.assert_array_equal(values, a + 2 * b)
    assert (w, count) == (3.0, 2.0)
