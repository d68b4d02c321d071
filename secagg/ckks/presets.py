"""Named CKKS parameter presets, and the HE-standard 128-bit check every parameter set passes.

A preset fixes everything that decides security, size and precision of a CKKS round: the ring
size ``N``, the coefficient-modulus primes, the encoding scale and the release quantum (the grid
the decrypted aggregate is rounded to before it leaves the decrypting client). Custom parameters
go through exactly the same validation as the presets (argon2 profiles / Tink templates style).

Security: the bound on ``log2(q)`` for a ring of size ``N`` is the classical 128-bit row of the
Homomorphic Encryption Standard (Albrecht et al., "Homomorphic Encryption Standard", 2018,
table 1, ternary secret, error sigma 3.2), the same table SEAL's ``CoeffModulus::MaxBitCount`` uses.

Size: an aggregation round needs no multiplication, so nothing needs a level to spare. Updates are
encoded at the *lowest* level that still holds ``scale * max_abs_sum`` (usually one prime), and
encrypted symmetrically with a seeded second polynomial; with two reals per complex slot that is
``64 * primes_at_level / 32`` bytes on the wire per float32 parameter, i.e. ~2.0x for one prime.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from secagg.errors import InvalidParameter

__all__ = ["HE_STANDARD_128_MAX_LOGQ", "CKKSParams", "Preset"]

#: HE standard, classical 128-bit security, ternary secret: ring size -> max total bits of q.
HE_STANDARD_128_MAX_LOGQ: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}

_MIN_PRIME_BITS = 20
_MAX_PRIME_BITS = 60  # SEAL's limit for one RNS prime


@dataclass(frozen=True, slots=True)
class CKKSParams:
    """One validated CKKS parameter set. Build it directly for custom parameters.

    ``coeff_modulus_bits`` lists every prime of the chain, in SEAL's order. With more than one
    prime the last is SEAL's special (key-switching) prime and carries no data. ``level_primes``
    is how many data primes the update is encoded and sent with (the first ``level_primes``
    primes); fewer primes mean a smaller ciphertext. ``release_quantum_bits`` = b means the
    released aggregate is rounded to multiples of 2^-b; the preset promises a max absolute error
    of 2^-b on every released sum value (rounding <= 2^-(b+1), CKKS noise far below that).
    """

    name: str
    poly_modulus_degree: int
    coeff_modulus_bits: tuple[int, ...]
    scale_bits: int
    level_primes: int
    release_quantum_bits: int

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in HE_STANDARD_128_MAX_LOGQ:
            raise InvalidParameter(
                f"CKKSParams.poly_modulus_degree must be one of {sorted(HE_STANDARD_128_MAX_LOGQ)}, "
                f"found {n}; pick 8192 unless you know why not"
            )
        bits = self.coeff_modulus_bits
        if not bits or any(not _MIN_PRIME_BITS <= b <= _MAX_PRIME_BITS for b in bits):
            raise InvalidParameter(
                f"CKKSParams.coeff_modulus_bits entries must be in [{_MIN_PRIME_BITS}, "
                f"{_MAX_PRIME_BITS}], found {bits}"
            )
        bound = HE_STANDARD_128_MAX_LOGQ[n]
        if sum(bits) > bound:
            raise InvalidParameter(
                f"CKKSParams.coeff_modulus_bits total {sum(bits)} bits exceeds the HE-standard "
                f"128-bit bound of {bound} bits for N={n}; drop primes or raise "
                "poly_modulus_degree"
            )
        data_primes = len(bits) - 1 if len(bits) > 1 else 1
        if not 1 <= self.level_primes <= data_primes:
            raise InvalidParameter(
                f"CKKSParams.level_primes must be in [1, {data_primes}] for a chain of {len(bits)} "
                f"prime(s), found {self.level_primes}"
            )
        if not 20 <= self.scale_bits < self.level_bits - 1:
            raise InvalidParameter(
                f"CKKSParams.scale_bits must be in [20, {self.level_bits - 2}] (below the "
                f"{self.level_bits}-bit modulus at the chosen level), found {self.scale_bits}"
            )
        if self.headroom_bits < 4:
            raise InvalidParameter(
                f"CKKSParams leaves {self.headroom_bits} bits for the sum's magnitude "
                f"(level {self.level_bits} bits - scale {self.scale_bits} bits - 2); "
                "lower scale_bits or raise level_primes"
            )
        if not 8 <= self.release_quantum_bits <= self.scale_bits - 8:
            raise InvalidParameter(
                f"CKKSParams.release_quantum_bits must be in [8, scale_bits - 8 = "
                f"{self.scale_bits - 8}] so the rounding hides the CKKS noise, found "
                f"{self.release_quantum_bits}"
            )

    @property
    def slots(self) -> int:
        """Complex slots per ciphertext (N/2); each carries two reals."""
        return self.poly_modulus_degree // 2

    @property
    def reals_per_ciphertext(self) -> int:
        return self.poly_modulus_degree

    @property
    def level_bits(self) -> int:
        return sum(self.coeff_modulus_bits[: self.level_primes])

    @property
    def headroom_bits(self) -> int:
        """log2 of the largest |sum| a slot holds safely (one bit sign, one bit margin)."""
        return self.level_bits - self.scale_bits - 2

    @property
    def max_abs_sum(self) -> float:
        """The largest absolute value any slot of the aggregate may reach."""
        return float(2**self.headroom_bits)

    @property
    def release_quantum(self) -> float:
        """The grid released values are rounded to; also the promised max absolute error."""
        return math.ldexp(1.0, -self.release_quantum_bits)

    @property
    def security_bound_bits(self) -> int:
        return HE_STANDARD_128_MAX_LOGQ[self.poly_modulus_degree]

    def describe(self) -> str:
        return (
            f"{self.name}: N={self.poly_modulus_degree}, q={list(self.coeff_modulus_bits)} bits "
            f"(total {sum(self.coeff_modulus_bits)} <= {self.security_bound_bits}, HE standard "
            f"128-bit), sent at {self.level_primes} prime(s) = {self.level_bits} bits, scale "
            f"2^{self.scale_bits}, |sum| < 2^{self.headroom_bits}, released on a 2^-"
            f"{self.release_quantum_bits} grid"
        )


class Preset(enum.Enum):
    """The named parameter sets. ``COMPACT`` is for size, ``PRECISE`` for precision."""

    #: ~2.0x float32 on the wire; sums up to 2^18 in magnitude; error <= 2^-20 (~9.5e-7).
    COMPACT = CKKSParams(
        name="compact-n8192-q60",
        poly_modulus_degree=8192,
        coeff_modulus_bits=(60,),
        scale_bits=40,
        level_primes=1,
        release_quantum_bits=20,
    )
    #: ~4.0x float32; sums up to 2^56 in magnitude; error <= 2^-32 (~2.3e-10).
    PRECISE = CKKSParams(
        name="precise-n8192-q60x3",
        poly_modulus_degree=8192,
        coeff_modulus_bits=(60, 60, 60),
        scale_bits=60,
        level_primes=2,
        release_quantum_bits=32,
    )

    @property
    def params(self) -> CKKSParams:
        value: CKKSParams = self.value
        return value

    @classmethod
    def from_name(cls, name: str) -> Preset:
        try:
            return cls[name.upper()]
        except KeyError:
            raise InvalidParameter(
                f"unknown CKKS preset '{name}'; choose one of {[p.name.lower() for p in cls]}"
            ) from None
