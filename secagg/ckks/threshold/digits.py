"""The digit embedding: ``K`` quantised reals per coefficient, above the smudging noise.

Why (the argument is in :mod:`.params`): the smudging of threshold decryption must be wide
(``2^tau``, tau ~ 66), and a real-valued CKKS encoding must put every real's scale above it, so
each real pays the whole width of the noise. Here a coefficient carries the signed integers
``q_k = round(x_k * 2^f)`` as base-``2^w`` digits above a floor of ``b`` bits,

    coefficient = sum_k q_k * 2^(b + k*w)   (mod each prime),

so the noise floor is paid once per coefficient. Decoding is exact: the combined coefficient is
lifted to the integers (CRT over the data primes), the noise (bounded by ``2^(b-1)``) is rounded
away, and each digit's sum is read back as a signed ``w``-bit integer.

Layout: real ``i`` of a round sits in chunk ``i // (N*K)``, digit ``(i % (N*K)) // N``,
coefficient ``i % N``; each digit of a chunk is ``N`` consecutive reals.

Everything here is integer arithmetic: numpy ``uint64`` residues (products split into bytes so
they never overflow) on the way in, Python integers for the CRT lift on the way out. SEAL does
the NTTs (:meth:`.rings.RingContext.to_ntt`, :meth:`~.rings.RingContext.from_ntt`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from secagg.ckks.threshold.rings import Residues, RingContext, add_mod, neg_mod
from secagg.errors import InvalidParameter

__all__ = ["DigitCodec"]


class DigitCodec:
    """Encode and decode the digit embedding of one :class:`RingContext` (holds no secret)."""

    def __init__(self, ring: RingContext) -> None:
        params = ring.params
        if params.embedding != "digits":
            raise InvalidParameter(f"the ring's embedding is {params.embedding!r}, not 'digits'")
        self.ring = ring
        self.n = ring.n
        self.k = params.digits
        self.f = params.scale_bits
        self.w = params.digit_bits
        self.b = params.base_bits
        self.clip = params.clip
        moduli = [int(q) for q in ring.moduli]
        self.modulus = 1
        for q in moduli:
            self.modulus *= q
        if self.modulus <= 1 << params.message_bits:
            raise InvalidParameter(
                f"the data primes' product (2^{self.modulus.bit_length() - 1}...) does not exceed "
                f"2^{params.message_bits}: {self.k} digits of {self.w} bits above a "
                f"{self.b}-bit floor would wrap")
        # |round(x * 2^f)| for |x| <= clip, in bytes
        self._bytes = max(1, (int(np.ceil(self.clip * 2.0 ** self.f)).bit_length() + 7) // 8)
        # tables[p][k][byte][v] = v * 2^(8*byte) * 2^(b + k*w) mod q_p
        self._tables = np.empty((len(moduli), self.k, self._bytes, 256), dtype=np.uint64)
        values = np.arange(256, dtype=object)
        for j, q in enumerate(moduli):
            for d in range(self.k):
                weight = pow(2, self.b + d * self.w, q)
                for byte in range(self._bytes):
                    step = weight * pow(2, 8 * byte, q) % q
                    self._tables[j, d, byte] = (values * step % q).astype(np.uint64)
        # CRT: x = sum_j (r_j * inv_j mod q_j) * (Q / q_j) mod Q
        self._cofactors = [self.modulus // q for q in moduli]
        self._inverses = [pow(c % q, -1, q) for c, q in zip(self._cofactors, moduli, strict=True)]
        self._moduli = moduli

    @property
    def reals_per_chunk(self) -> int:
        return self.n * self.k

    def chunks(self, length: int) -> int:
        return max(1, -(-length // self.reals_per_chunk))

    # -- in ---------------------------------------------------------------------------------

    def quantise(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """``round(x * 2^f)`` laid out as (chunks, K, N), zero-padded."""
        vec = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.isfinite(vec).all() or (np.abs(vec) > self.clip).any():
            raise InvalidParameter(f"values must be finite and within the clip range "
                                   f"[-{self.clip}, {self.clip}]; clip them first")
        out = np.zeros(self.chunks(vec.size) * self.reals_per_chunk, dtype=np.int64)
        out[: vec.size] = np.rint(np.ldexp(vec, self.f)).astype(np.int64)
        return out.reshape(-1, self.k, self.n)

    def encode(self, values: npt.NDArray[np.float64]) -> Residues:
        """The NTT-form plaintext residues (chunks, primes, N) of ``values``."""
        q = self.quantise(values)
        chunks = q.shape[0]
        mag = np.abs(q).astype(np.uint64)
        negative = q < 0
        moduli = self.ring.moduli
        coeffs = np.zeros((chunks, len(self._moduli), self.n), dtype=np.uint64)
        for j in range(len(self._moduli)):
            qj = moduli[j: j + 1]
            acc = np.zeros((chunks, self.n), dtype=np.uint64)
            for d in range(self.k):
                part = np.zeros((chunks, self.n), dtype=np.uint64)
                for byte in range(self._bytes):
                    idx = (mag[:, d, :] >> np.uint64(8 * byte)) & np.uint64(255)
                    part = add_mod(part, self._tables[j, d, byte][idx], qj)
                part = np.where(negative[:, d, :], neg_mod(part, qj), part)
                acc = add_mod(acc, part, qj)
            coeffs[:, j, :] = acc
        return self._ntt(coeffs)

    def _ntt(self, coeffs: Residues) -> Residues:
        """SEAL's NTT, two polynomials a call (a zero partner is replaced: SEAL refuses a
        ciphertext whose second polynomial is zero)."""
        return _pairwise(self.ring.to_ntt, coeffs)

    # -- out --------------------------------------------------------------------------------

    def decode(self, ntt: Residues, length: int, *, strict: bool = True) \
            -> npt.NDArray[np.float64]:
        """The first ``length`` reals of the combined NTT-form residues (chunks, primes, N): the
        exact sums of the quantised values, divided by ``2^f``.

        ``strict``: refuse a coefficient that holds more than its ``K`` digits (it cannot come
        from an honest round). ``strict=False`` reads the digits of whatever it is given (what an
        attacker's own decoder would do; the attack tests use it)."""
        ntt = np.asarray(ntt, dtype=np.uint64)
        chunks = ntt.shape[0]
        coeffs = _pairwise(self.ring.from_ntt, ntt)
        lifted = np.zeros(chunks * self.n, dtype=object)
        for j, q in enumerate(self._moduli):
            r = coeffs[:, j, :].reshape(-1).astype(object)
            lifted += (r * self._inverses[j] % q) * self._cofactors[j]
        lifted %= self.modulus
        half = self.modulus >> 1
        lifted = np.where(lifted > half, lifted - self.modulus, lifted)
        # remove the noise (|noise| < 2^(b-1)) by rounding to a multiple of 2^b
        rest = (lifted + (1 << (self.b - 1))) >> self.b
        top = 1 << (self.w - 1)
        mask = (1 << self.w) - 1
        digits = np.empty((self.k, chunks * self.n), dtype=np.int64)
        for d in range(self.k):
            digit = ((rest + top) & mask) - top
            digits[d] = digit.astype(np.int64)
            rest = (rest - digit) >> self.w
        if strict and np.any(rest != 0):
            raise InvalidParameter("a combined coefficient holds more than its digits: the "
                                   "aggregate or a partial decryption is not what the round "
                                   "produced (or exceeded the parameters' bounds)")
        reals = digits.reshape(self.k, chunks, self.n).transpose(1, 0, 2).reshape(-1)
        return np.ldexp(reals[:length].astype(np.float64), -self.f)


def _pairwise(transform: Callable[[Residues], Residues], polys: Residues) -> Residues:
    """``transform`` (SEAL's NTT or its inverse, two polynomials a call) of every polynomial of
    ``polys`` (chunks, primes, N). SEAL refuses a ciphertext whose second polynomial is zero, so
    a missing or all-zero partner is sent as the constant 1 and its result dropped (the
    transform of zero is zero)."""
    out = np.zeros_like(polys)
    count = polys.shape[0]
    for first in range(0, count, 2):
        pair = np.ones((2, *polys.shape[1:]), dtype=np.uint64)
        pair[0] = polys[first]
        partner = first + 1 < count and bool(polys[first + 1].any())
        if partner:
            pair[1] = polys[first + 1]
        done = transform(pair)
        out[first] = done[0]
        if partner:
            out[first + 1] = done[1]
    return out
