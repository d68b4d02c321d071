"""Mask expansion: a 16- or 32-byte key -> a vector of uniform words mod 2^32, by AES-CTR.

.. danger:: Part of :mod:`secagg.hazmat`. The key must be a fresh :func:`derive_key` output bound
   to (round, pair, purpose); the counter starts at zero, so a key used twice gives the same mask
   twice and the two masked vectors leak their difference.

The whole key drives the cipher: AES-128-CTR for a 16-byte key (the masking protocol's mask keys,
HKDF outputs of a 256-bit secret: 128-bit security, 37 % faster here than AES-256), AES-256-CTR
for a 32-byte key (the DP sampler's). Contrast Flower's SecAgg+, which folds the key to 32 bits
and seeds numpy's Mersenne Twister (flwrlabs/flower#7522). Words are the little-endian uint32
reading of the keystream; masks mod 2^b for b <= 32 are their low b bits, which stay uniform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.errors import InvalidParameter
from secagg.hazmat.handles import SecretBytes, Unpicklable

__all__ = ["Keystream", "MaskExpander", "expand_mask"]

_ZERO_IV = bytes(16)
_CHUNK_WORDS = 1 << 16  # 256 KiB of keystream per step: stays in L2 while it is added


class MaskExpander:
    """Adds or subtracts keystream masks into a uint32 accumulator, reusing scratch buffers."""

    def __init__(self) -> None:
        self._zeros = bytes(_CHUNK_WORDS * 4)
        self._buf = bytearray(_CHUNK_WORDS * 4 + 15)
        self._words = np.frombuffer(self._buf, dtype=np.uint32, count=_CHUNK_WORDS)

    def apply(self, acc: npt.NDArray[np.uint32], key: SecretBytes, *, subtract: bool = False) -> None:
        """``acc += mask(key)`` (or ``-=``) modulo 2^32, in place."""
        self.apply_many(acc, [(key, subtract)])

    def apply_many(self, acc: npt.NDArray[np.uint32],
                   masks: Sequence[tuple[SecretBytes, bool]],
                   *, after_chunk: Callable[[int], None] | None = None) -> None:
        """Apply every ``(key, subtract)`` mask, chunk by chunk.

        Same result as calling :meth:`apply` for each, but each accumulator chunk stays in cache
        while all keystreams are added to it, instead of streaming the whole vector from memory
        once per mask. ``after_chunk(stop)`` runs once ``acc[:stop]`` is final, so a caller can
        consume it (bit-pack it) while it is still in cache.
        """
        if acc.dtype != np.uint32 or acc.ndim != 1 or not acc.flags.c_contiguous:
            raise InvalidParameter("mask accumulator must be a contiguous 1-D uint32 array")
        streams = []
        for key, subtract in masks:
            if len(key) not in (16, 32):
                raise InvalidParameter(f"mask key must be 16 or 32 bytes, found {len(key)}")
            enc = Cipher(algorithms.AES(key.expose_secret_bytes()), modes.CTR(_ZERO_IV)).encryptor()
            streams.append((enc, np.subtract if subtract else np.add))
        zeros = memoryview(self._zeros)
        n = acc.shape[0]
        for start in range(0, n, _CHUNK_WORDS):
            stop = min(start + _CHUNK_WORDS, n)
            count = stop - start
            chunk = acc[start:stop]
            words = self._words[:count]
            for enc, op in streams:
                enc.update_into(zeros[: count * 4], self._buf)
                op(chunk, words, out=chunk)
            if after_chunk is not None:
                after_chunk(stop)


class Keystream(Unpicklable):
    """Successive uint32 words of one AES-256-CTR keystream, handed out chunk by chunk.

    For randomness that is consumed once, in order, next to other per-chunk work (stochastic
    rounding): the words land in one reused buffer, so a caller's chunk stays in cache.
    """

    CHUNK_WORDS = _CHUNK_WORDS

    def __init__(self, key: SecretBytes) -> None:
        if len(key) != 32:
            raise InvalidParameter(f"keystream key must be 32 bytes, found {len(key)}")
        self._enc = Cipher(algorithms.AES(key.expose_secret_bytes()), modes.CTR(_ZERO_IV)).encryptor()
        self._zeros = bytes(_CHUNK_WORDS * 4)
        self._buf = bytearray(_CHUNK_WORDS * 4 + 15)
        self._words = np.frombuffer(self._buf, dtype=np.uint32, count=_CHUNK_WORDS)

    def next_words(self, count: int) -> npt.NDArray[np.uint32]:
        """The next ``count`` (<= CHUNK_WORDS) words; the view is overwritten by the next call."""
        if not 0 <= count <= _CHUNK_WORDS:
            raise InvalidParameter(f"count must be in [0, {_CHUNK_WORDS}], found {count}")
        self._enc.update_into(memoryview(self._zeros)[: count * 4], self._buf)
        return self._words[:count]

    def __repr__(self) -> str:
        return "Keystream(<redacted>)"



def expand_mask(key: SecretBytes, length: int) -> npt.NDArray[np.uint32]:
    """The mask of ``length`` words for ``key`` (used by tests and known-answer vectors)."""
    if length < 0:
        raise InvalidParameter(f"mask length must be >= 0, found {length}")
    acc = np.zeros(length, dtype=np.uint32)
    MaskExpander().apply(acc, key)
    return acc
