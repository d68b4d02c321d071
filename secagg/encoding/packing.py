"""Bit-packing of values mod 2^b at exactly b bits each, for the wire.

Layout (ours, planar so that every step is one contiguous numpy operation): the vector is
zero-padded to 64*G values and read as 64 rows of G values. Column g is a 64*b-bit little-endian
lane made of b uint64 words; row i fills bits [i*b, (i+1)*b) of every lane. The words are stored
word-major (b rows of G little-endian uint64). Size: b * G * 8 bytes, i.e. b/8 bytes per value
plus at most 63 values of padding.
"""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter

__all__ = ["BitPacker", "PackedSum", "pack_bits", "packed_size", "unpack_bits"]


def _groups(count: int) -> int:
    return max(1, -(-count // 64))


def packed_size(count: int, bits: int) -> int:
    """Bytes :func:`pack_bits` produces for ``count`` values of ``bits`` bits."""
    return bits * _groups(count) * 8


class _PlanarVector:
    """The planar layout's uint32 buffer (64 rows of G values, zero-padded) and argument checks."""

    def __init__(self, count: int, bits: int) -> None:
        if not 1 <= bits <= 32:
            raise InvalidParameter(f"bits must be in [1, 32], found {bits}")
        if count < 0:
            raise InvalidParameter(f"count must be >= 0, found {count}")
        self.count, self.bits = count, bits
        self._groups = _groups(count)
        self.buffer = np.zeros(64 * self._groups, dtype=np.uint32)
        self._rows = self.buffer.reshape(64, self._groups)


class BitPacker(_PlanarVector):
    """Packs one vector row by row, so packing can follow other chunked work while it is in cache.

    Write the values into :attr:`buffer` (zero-padded to the layout's 64 rows), call
    :meth:`pack_through` as prefixes of it become final, then :meth:`to_bytes`.
    """

    def __init__(self, count: int, bits: int) -> None:
        super().__init__(count, bits)
        self._out = np.zeros((bits, self._groups), dtype=np.uint64)
        self._low = np.empty(self._groups, dtype=np.uint64)
        self._shifted = np.empty(self._groups, dtype=np.uint64)
        self._next_row = 0

    def pack_through(self, stop: int) -> None:
        """Pack every row that lies wholly within ``buffer[:stop]`` and is not packed yet."""
        last = min(64, stop // self._groups)
        bits, out, low, shifted = self.bits, self._out, self._low, self._shifted
        for i in range(self._next_row, last):
            w, s = divmod(i * bits, 64)
            if bits < 32:
                np.bitwise_and(self._rows[i], np.uint64((1 << bits) - 1), out=low)
            else:
                np.copyto(low, self._rows[i])
            np.left_shift(low, np.uint64(s), out=shifted)
            np.bitwise_or(out[w], shifted, out=out[w])
            if s + bits > 64:
                np.right_shift(low, np.uint64(64 - s), out=shifted)
                np.bitwise_or(out[w + 1], shifted, out=out[w + 1])
        self._next_row = max(self._next_row, last)

    def to_bytes(self) -> bytes:
        """The packed vector (packs any rows left)."""
        self.pack_through(self.buffer.shape[0])
        return self._out.astype("<u8", copy=False).tobytes()


def pack_bits(values: npt.NDArray[np.uint32], bits: int) -> bytes:
    """Pack the low ``bits`` bits of each value (an integer vector; negatives wrap mod 2^bits)."""
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise InvalidParameter(
            f"values must be a 1-D integer array, found {values.ndim}-D {values.dtype}"
        )
    packer = BitPacker(values.shape[0], bits)
    packer.buffer[: values.shape[0]] = values  # wraps mod 2^32 like the uint32 it becomes
    return packer.to_bytes()


def unpack_bits(data: bytes, bits: int, count: int) -> npt.NDArray[np.uint32]:
    """Inverse of :func:`pack_bits` (a :class:`PackedSum` of one vector); raises if ``data`` has
    the wrong length."""
    one = PackedSum(count, bits)
    one.add(data)
    return one.result().copy()  # a writable array of its own


class PackedSum(_PlanarVector):
    """Sums many packed vectors mod 2^32 without materialising each one.

    Each lane row is shifted out of the packed words and added straight into a uint32
    accumulator; bits above ``bits`` carry garbage from neighbouring fields, which only ever
    carries upwards and is cleared by the final mask, so no per-value masking is needed.
    """

    def __init__(self, count: int, bits: int) -> None:
        super().__init__(count, bits)
        self._tmp = np.empty(self._groups, dtype=np.uint64)
        self._high = np.empty(self._groups, dtype=np.uint64)
        # tmp mod 2^32 as a strided uint32 view (all a uint32 row keeps of it): the add below
        # stays in uint32, with no uint64 round trip per row
        self._tmp_low = self._tmp.view(np.uint32)[(0 if sys.byteorder == "little" else 1) :: 2]
        # per row: its first word, the shift down, and the shift up of the next word if the
        # field straddles two words
        self._plan = [(w, np.uint64(s), np.uint64(64 - s) if s + bits > 64 else None)
                      for w, s in (divmod(i * bits, 64) for i in range(64))]
        self._reduced = 0  # accumulator[:_reduced] has been reduced mod 2^bits
        self._closed = False

    @property
    def accumulator(self) -> npt.NDArray[np.uint32]:
        """The running sum of the first ``count`` values (a contiguous view; add masks here)."""
        return self.buffer[: self.count]

    def add(self, data: bytes) -> None:
        if self._closed:
            raise InvalidParameter("this sum's result was already taken; start a new PackedSum")
        expected = packed_size(self.count, self.bits)
        if len(data) != expected:
            raise InvalidParameter(
                f"packed vector is {len(data)} bytes; {self.count} values at {self.bits} bits "
                f"need {expected}"
            )
        words = np.frombuffer(data, dtype="<u8").reshape(self.bits, self._groups)
        self._reduced = 0
        tmp, high, low = self._tmp, self._high, self._tmp_low
        for row, (w, down, up) in zip(self._rows, self._plan, strict=True):
            np.right_shift(words[w], down, out=tmp)
            if up is not None:
                np.left_shift(words[w + 1], up, out=high)
                np.bitwise_or(tmp, high, out=tmp)
            np.add(row, low, out=row)

    def subtract(self, data: bytes) -> None:
        """Take back a vector that was added (a client found to have misbehaved after upload)."""
        if self._closed:
            raise InvalidParameter("this sum's result was already taken; start a new PackedSum")
        values = unpack_bits(data, self.bits, self.count)
        acc = self.accumulator
        np.subtract(acc, values, out=acc)  # wraps mod 2^32, a multiple of 2^bits
        self._reduced = 0

    def reduce_through(self, stop: int) -> None:
        """Reduce ``accumulator[:stop]`` mod 2^bits now (while a caller has it in cache).

        Harmless at any time: the sum is only ever read mod 2^bits.
        """
        stop = min(stop, self.count)
        if self.bits < 32 and stop > self._reduced:
            part = self.buffer[self._reduced : stop]
            np.bitwise_and(part, np.uint32((1 << self.bits) - 1), out=part)
        self._reduced = max(self._reduced, stop)

    def result(self) -> npt.NDArray[np.uint32]:
        """The sum of everything added (and any masks applied), reduced mod 2^bits.

        A read-only view of the accumulator, not a copy; the sum is closed afterwards.
        """
        self.reduce_through(self.count)
        self._closed = True
        out = self.buffer[: self.count]
        out.flags.writeable = False
        return out
