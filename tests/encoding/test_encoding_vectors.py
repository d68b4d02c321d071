"""Frozen known-answer vectors for the wire encoding (tests/vectors/pack_bits.json).

Made by tests/vectors/make_vectors.py (its header says how); a failure means the packed wire
format changed, which breaks every deployed client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secagg.encoding.packing import pack_bits, packed_size, unpack_bits

DATA = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "pack_bits.json").read_text())
CASES: list[dict[str, Any]] = DATA["cases"]


def test_header_says_how_it_was_made() -> None:
    assert "make_vectors.py" in DATA["header"]["how_made"]


@pytest.mark.parametrize("case", CASES, ids=[f"b{c['bits']}-n{len(c['values'])}" for c in CASES])
def test_pack_bits_frozen(case: dict[str, Any]) -> None:
    values = np.array(case["values"], dtype=np.uint32)
    packed = pack_bits(values, case["bits"])
    assert packed.hex() == case["packed"]
    assert len(packed) == packed_size(len(values), case["bits"])
    np.testing.assert_array_equal(
        unpack_bits(bytes.fromhex(case["packed"]), case["bits"], len(values)), values
    )


def test_pack_bits_layout_by_hand() -> None:
    """The documented planar layout on a case small enough to write out: 64 values of 1 bit.

    Row i fills bit i of the single lane (G = 1), so the 64 bits form one little-endian uint64.
    """
    values = np.zeros(64, dtype=np.uint32)
    values[[0, 3, 63]] = 1
    expected = ((1 << 0) | (1 << 3) | (1 << 63)).to_bytes(8, "little")
    assert pack_bits(values, 1) == expected
    # Two bits per value: value i occupies bits [2i, 2i + 2) of a 128-bit lane (2 words).
    values2 = np.arange(64, dtype=np.uint32) % 4
    lane = sum(int(v) << (2 * i) for i, v in enumerate(values2))
    assert pack_bits(values2, 2) == lane.to_bytes(16, "little")
