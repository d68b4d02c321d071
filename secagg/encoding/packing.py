"""Bit-packing of values mod 2^b at exactly b bits each, for the wire.

Layout (ours, planar so that every step is one contiguous numpy operation): the vector is
zero-padded to 64*G values and read as 64 rows of G values. Column g is a 64*b-bit little-endian
lane made of b uint64 words; row i fills bits [i*b, (i+1)*b) of every lane. The words are stored
word-major (b rows of G little-endian uint64). Size: b * G * 8 bytes, i.e. b/8 bytes per value
plus at most 63 values of padding.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter

__all__ = ["PackedSum", "pack_bits", "packed_size", "unpack_bits"]


def _groups(count: int) -> int:
    return max(1, -(-count // 64))


def packed_size(count: int, bits: int) -> int:
    """Bytes :func:`pack_bits` produces for ``count`` values of ``bits`` bits."""
    return bits * _groups(count) * 8


def pack_bits(values: npt.NDArray[np.uint32], bits: int) -> bytes:
    """Pack the low ``bits`` bits of each value (an integer vector; negatives wrap mod 2^bits)."""
    if not 1 <= bits <= 32:
        raise InvalidParameter(f"bits must be in [1, 32], found {bits}")
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise InvalidParameter(
            f"values must be a 1-D integer array, found {values.ndim}-D {values.dtype}"
        )
    g = _groups(values.shape[0])
    padded = np.zeros(64 * g, dtype=np.uint64)
    padded[: values.shape[0]] = values
    if bits < 32:
        padded &= np.uint64((1 << bits) - 1)
    rows = padded.reshape(64, g)
    out = np.zeros((bits, g), dtype=np.uint64)
    for i in range(64):
        pos = i * bits
        w, s = divmod(pos, 64)
        out[w] |= rows[i] << np.uint64(s)
        if s + bits > 64:
            out[w + 1] |= rows[i] >> np.uint64(64 - s)
    return out.astype("<u8", copy=False).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> npt.NDArray[np.uint32]:
    """Inverse of :func:`pack_bits` (a :class:`PackedSum` of one vector); raises if ``data`` has
    the wrong length."""
    one = PackedSum(count, bits)
    one.add(data)
    return one.result()


class PackedSum:
    """Sums many packed vectors mod 2^32 without materialising each one.

    Each lane row is shifted out of the packed words and added straight into a uint32
    accumulator; bits above ``bits`` carry garbage from neighbouring fields, which only ever
    carries upwards and is cleared by the final mask, so no per-value masking is needed.
    """

    def __init__(self, count: int, bits: int) -> None:
        if not 1 <= bits <= 32:
            raise InvalidParameter(f"bits must be in [1, 32], found {bits}")
        if count < 0:
            raise InvalidParameter(f"count must be >= 0, found {count}")
        self.count, self.bits = count, bits
        self._groups = _groups(count)
        self._flat = np.zeros(64 * self._groups, dtype=np.uint32)
        self._rows = self._flat.reshape(64, self._groups)
        self._tmp = np.empty(self._groups, dtype=np.uint64)

    @property
    def accumulator(self) -> npt.NDArray[np.uint32]:
        """The running sum of the first ``count`` values (a contiguous view; add masks here)."""
        return self._flat[: self.count]

    def add(self, data: bytes) -> None:
        expected = packed_size(self.count, self.bits)
        if len(data) != expected:
            raise InvalidParameter(
                f"packed vector is {len(data)} bytes; {self.count} values at {self.bits} bits "
                f"need {expected}"
            )
        words = np.frombuffer(data, dtype="<u8").reshape(self.bits, self._groups)
        tmp = self._tmp
        for i in range(64):
            w, s = divmod(i * self.bits, 64)
            np.right_shift(words[w], np.uint64(s), out=tmp)
            if s + self.bits > 64:
                tmp |= words[w + 1] << np.uint64(64 - s)
            np.add(self._rows[i], tmp, out=self._rows[i], casting="unsafe")

    def result(self) -> npt.NDArray[np.uint32]:
        """The sum of everything added (and any masks applied), reduced mod 2^bits."""
        out = self._flat[: self.count].copy()
        if self.bits < 32:
            out &= np.uint32((1 << self.bits) - 1)
        return out
