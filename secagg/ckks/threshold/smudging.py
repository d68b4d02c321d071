"""Smudging noise for partial decryptions: uniform integers on [-2^tau, 2^tau), NTT'd by SEAL.

Every bit comes from :func:`secagg.dp.csprng.secure_words64` (AES-256-CTR keyed by fresh OS
bytes). A coefficient is ``U - 2^tau`` with ``U`` the top ``tau + 1`` bits of one or two words:
exactly uniform, no rejection and no floating point (floats would leave the low bits of a
2^67-sized value empty, and those low bits are what must hide the decryption noise). The
statistical argument and the choice of ``tau`` are in :mod:`.params`.
"""

from __future__ import annotations

import numpy as np

from secagg.ckks.threshold.rings import Residues, RingContext
from secagg.dp.csprng import secure_words64
from secagg.errors import InvalidParameter

__all__ = ["smudging_coefficients", "smudging_ntt"]

_MAX_TAU = 126


def _mod_pow2_64(hi: np.ndarray, q: int, hi_bits: int) -> np.ndarray:
    """(hi * 2^64) mod q for hi < 2^hi_bits and q < 2^62: one product when it fits in 64 bits,
    else 64 modular doublings (no overflow either way)."""
    if hi_bits + q.bit_length() <= 64:
        return (hi * np.uint64((1 << 64) % q)) % np.uint64(q)
    r = hi % np.uint64(q)
    qq = np.uint64(q)
    for _ in range(64):
        r = r << np.uint64(1)
        r = np.where(r >= qq, r - qq, r)
    return r


def smudging_coefficients(ring: RingContext, tau: int, count: int) -> Residues:
    """``count`` smudging polynomials in coefficient form, residues (count, primes, N)."""
    if not 1 <= tau <= _MAX_TAU:
        raise InvalidParameter(f"smudging bits must be in [1, {_MAX_TAU}], found {tau}")
    size = count * ring.n
    width = tau + 1
    out = np.empty((count, ring.primes, ring.n), dtype=np.uint64)
    offsets = [(1 << tau) % int(q) for q in ring.moduli]
    if width <= 64:
        u = secure_words64(size) >> np.uint64(64 - width)
        for j, q in enumerate(ring.moduli):
            qv = np.uint64(q)
            r = u % qv
            off = np.uint64(offsets[j])
            out[:, j, :] = np.where(r >= off, r - off, r + (qv - off)).reshape(count, ring.n)
        return out
    words = secure_words64(2 * size)
    hi = words[0::2] >> np.uint64(128 - width)
    lo = words[1::2]
    for j, q in enumerate(ring.moduli):
        qv = np.uint64(q)
        r = _mod_pow2_64(hi, int(q), width - 64) + lo % qv
        r = np.where(r >= qv, r - qv, r)
        off = np.uint64(offsets[j])
        out[:, j, :] = np.where(r >= off, r - off, r + (qv - off)).reshape(count, ring.n)
    return out


def smudging_ntt(ring: RingContext, tau: int, count: int) -> Residues:
    """``count`` smudging polynomials in NTT form (SEAL's transform), (count, primes, N)."""
    pairs = (count + 1) // 2
    coeffs = smudging_coefficients(ring, tau, 2 * pairs)
    out = np.empty_like(coeffs)
    for p in range(pairs):
        out[2 * p: 2 * p + 2] = ring.to_ntt(coeffs[2 * p: 2 * p + 2])
    return out[:count]
