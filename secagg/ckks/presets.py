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

**Packed parameters** (``encoding="coefficients"``, built by :meth:`CKKSParams.for_round`, the one
way to get them) put each real in one polynomial *coefficient* instead of half a slot
(:class:`secagg.hazmat.seal_codec.CoefficientEmbedding`) and send the residues bit-packed at the
prime's width (:mod:`secagg.ckks.packing`): ``b`` bits per real for one ``b``-bit prime, chosen
from the round's precision by this formula, for ``n`` clients, value bound ``C``, weight bound
``B`` and target error ``eps``:

* range: ``M = n * max(B * max(C, 1), 1)`` bounds every value of the weighted sum, the total
  weight and the count (the config checks ``n * B * max(C, 1)``, and the count in
  :meth:`CKKSParams.check_round`);
* grid: ``delta = 2^-r``, ``r = -floor(log2(eps * M))``, the largest power of two <= ``eps * M``:
  released sums are rounded to it, so the rounding error is <= ``delta / 2``;
* noise: per coefficient the sum carries the ``n`` clients' encryption noise (SEAL's centred
  binomial, variance 10.5, |e| <= 21; measured: variance 10.47 over 491,520 coefficients) plus
  their encoding rounding (<= 1/2): sigma_n = ``sqrt(n (10.5 + 1/12))``; ``E = 7.4 sigma_n`` is
  exceeded with probability < 2^-42 per value (Gaussian tail), ``n * 21.5`` never;
* scale: ``Delta = 2^s`` with ``s >= ceil(log2(3 E / delta))``: noise <= ``delta / 3``, so every
  released sum value is within ``delta / 2 + delta / 3 < delta <= eps * M`` of the exact sum, and
  the grid is at least 3x the noise bound it hides (22x the noise's standard deviation);
* prime: the smallest ``b`` whose SEAL prime ``q`` (largest prime < 2^b, 1 mod 2N) holds the sum
  at that scale without wrapping: ``Delta * M <= (q / 2) (1 - 2^-8)`` and ``n * 20 <= q / 2^9``
  (the 2^-8 slack covers the noise); the prime's leftover room then goes to precision: ``s`` is
  raised to the largest scale that still holds ``M``, and ``r`` to ``floor(s - log2(3 E))``
  (never below the target's);
* security: ``b`` within the HE-standard bound for ``N`` (N=8192 allows 218 bits).

``eps`` is relative to the sum's range ``M``: the released weighted *mean* is then within
``eps * C * (n * B / W)`` of the exact one, ``W`` the total weight (``eps * C`` when every client
contributes with weight ``B``). For 10 clients, ``C = 1``, ``B = 8``: ``M = 80``, ``E = 75.2``;
``eps = 1e-6`` gives ``r = 14``, ``s >= 22``, ``b = 30``, then ``s = 22``, ``r = 14``: 30 bits per
real (~0.95x float32 with the seeds and framing), released sums within ``2^-15 + 75.2 / 2^22 =
4.8e-5 <= eps * M = 8e-5``; ``eps = 5e-7`` (what ``secagg bench ckks --preset packed`` asks)
gives ``b = 31`` (q = 2147352577), ``s = 23``, ``r = 15``: ~0.98x float32, released sums within
``2^-16 + 75.2 / 2^23 = 2.4e-5``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from secagg.errors import InvalidParameter

__all__ = ["ENCODINGS", "HE_STANDARD_128_MAX_LOGQ", "CKKSParams", "Preset", "noise_bound"]

#: ``slots``: two reals per complex slot, SEAL's serialisation (the named presets).
#: ``coefficients``: one real per coefficient, residues bit-packed (:meth:`CKKSParams.for_round`).
ENCODINGS = ("slots", "coefficients")

_VARIANCE = 10.5  # SEAL's error: centred binomial over 21 coin pairs (variance 21/2)
_TAIL = 7.4  # P(|N(0,1)| > 7.4) < 2^-42
NOISE_PER_CLIENT = 21.5  # SEAL's error is at most 21 in absolute value; plus 1/2 of rounding
_WRAP_SLACK_BITS = 8  # Delta * M <= (q/2)(1 - 2^-8): the rest is left for the noise
_MIN_PACKED_BITS = 21  # q > 2^20, as the upload sketch needs (secagg.ckks.sketch)
_GRID_OVER_NOISE = 3  # the release grid is at least 3x the noise bound: error <= delta/2 + delta/3


def noise_bound(clients: int) -> float:
    """The coefficient noise of a sum of ``clients`` coefficient-encoded uploads (in units of the
    scale) exceeded with probability < 2^-42 per value: ``7.4 sqrt(n (10.5 + 1/12))``."""
    return _TAIL * math.sqrt(clients * (_VARIANCE + 1 / 12))

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
    encoding: str = "slots"
    #: for :meth:`for_round` parameters, the ``eps`` they were derived for (0: not derived)
    target_error: float = 0.0

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise InvalidParameter(f"CKKSParams.encoding must be one of {ENCODINGS}, found "
                                   f"{self.encoding!r}")
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
        if self.packed:
            self._check_packed()
            return
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

    def _check_packed(self) -> None:
        if self.level_primes != 1 or len(self.coeff_modulus_bits) != 1:
            raise InvalidParameter("CKKSParams with encoding='coefficients' use one prime "
                                   f"(level_primes=1), found {self.coeff_modulus_bits}")
        if not _MIN_PACKED_BITS <= self.coeff_modulus_bits[0] <= 57:
            raise InvalidParameter(f"CKKSParams.coeff_modulus_bits: packed primes are {_MIN_PACKED_BITS}"
                                   f" to 57 bits, found {self.coeff_modulus_bits[0]}")
        if not 1 <= self.scale_bits <= self.level_bits - 2:
            raise InvalidParameter(f"CKKSParams.scale_bits must be in [1, {self.level_bits - 2}] "
                                   f"for a {self.level_bits}-bit prime, found {self.scale_bits}")
        if not -self.level_bits <= self.release_quantum_bits <= self.scale_bits - 4:
            raise InvalidParameter(f"CKKSParams.release_quantum_bits must be in [-{self.level_bits},"
                                   f" scale_bits - 4 = {self.scale_bits - 4}], found "
                                   f"{self.release_quantum_bits}")
        if self.max_abs_sum < 1:
            raise InvalidParameter(f"CKKSParams: a {self.level_bits}-bit prime at scale "
                                   f"2^{self.scale_bits} holds no sum; lower scale_bits")
        if not (math.isfinite(self.target_error) and 0 <= self.target_error < 1):
            raise InvalidParameter(f"CKKSParams.target_error must be in [0, 1), found "
                                   f"{self.target_error}")

    @classmethod
    def for_round(
        cls,
        *,
        clients: int,
        value_bound: float = 1.0,
        weight_bound: float = 1.0,
        target_error: float = 1e-6,
        poly_modulus_degree: int = 8192,
    ) -> CKKSParams:
        """Packed parameters for a round of ``clients`` with these bounds, released within
        ``target_error`` of the sum's range (the formula in the module docstring)."""
        if clients < 2:
            raise InvalidParameter(f"CKKSParams.for_round: clients must be >= 2, found {clients}")
        for name, value in (("value_bound", value_bound), ("weight_bound", weight_bound)):
            if not (math.isfinite(value) and value > 0):
                raise InvalidParameter(f"CKKSParams.for_round: {name} must be finite and > 0, "
                                       f"found {value}")
        if not (math.isfinite(target_error) and 0 < target_error < 1):
            raise InvalidParameter(f"CKKSParams.for_round: target_error must be in (0, 1), found "
                                   f"{target_error}")
        if poly_modulus_degree not in HE_STANDARD_128_MAX_LOGQ:
            raise InvalidParameter(f"CKKSParams.for_round: poly_modulus_degree must be one of "
                                   f"{sorted(HE_STANDARD_128_MAX_LOGQ)}, found {poly_modulus_degree}")
        from secagg.hazmat.seal_codec import seal_primes

        # every coefficient of the sum: weighted values, the total weight, the count (n x 1)
        span = clients * max(weight_bound * max(value_bound, 1.0), 1.0)
        noise_bits = math.log2(_GRID_OVER_NOISE * noise_bound(clients))
        target_bits = -math.floor(math.log2(target_error * span))
        min_scale = max(1, math.ceil(noise_bits + target_bits))
        limit = min(57, HE_STANDARD_128_MAX_LOGQ[poly_modulus_degree])
        for bits in range(_MIN_PACKED_BITS, limit + 1):
            (q,) = seal_primes(poly_modulus_degree, (bits,))
            room = q / 2 * (1 - 2.0**-_WRAP_SLACK_BITS) / span
            if math.ldexp(1.0, min_scale) <= room and \
                    clients * NOISE_PER_CLIENT <= q / 2 ** (_WRAP_SLACK_BITS + 1):
                # spend the prime's slack on precision: the largest scale that holds the sum,
                # then the finest grid that still hides the noise (never coarser than the target)
                scale_bits = math.floor(math.log2(room))
                quantum_bits = math.floor(scale_bits - noise_bits)
                break
        else:
            raise InvalidParameter(
                f"CKKSParams.for_round: {clients} clients x weight {weight_bound} x value "
                f"{value_bound} at target error {target_error} needs more than a {limit}-bit "
                f"prime at N={poly_modulus_degree}; relax target_error"
            )
        return cls(
            name=f"packed-n{poly_modulus_degree}-q{bits}-s{scale_bits}-r{quantum_bits}",
            poly_modulus_degree=poly_modulus_degree,
            coeff_modulus_bits=(bits,),
            scale_bits=scale_bits,
            level_primes=1,
            release_quantum_bits=quantum_bits,
            encoding="coefficients",
            target_error=target_error,
        )

    @property
    def packed(self) -> bool:
        """Coefficient encoding with bit-packed residues on the wire (:meth:`for_round`)."""
        return self.encoding == "coefficients"

    @property
    def level_moduli(self) -> tuple[int, ...]:
        """The primes of the level updates are sent at (SEAL's, for these bit sizes)."""
        from secagg.hazmat.seal_codec import seal_primes

        return seal_primes(self.poly_modulus_degree, self.coeff_modulus_bits)[: self.level_primes]

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
        if self.packed:
            return math.floor(math.log2(self.max_abs_sum))
        return self.level_bits - self.scale_bits - 2

    @property
    def max_abs_sum(self) -> float:
        """The largest absolute value any slot (coefficient) of the aggregate may reach."""
        if self.packed:
            (q,) = self.level_moduli
            return math.ldexp(q / 2 * (1 - 2.0**-_WRAP_SLACK_BITS), -self.scale_bits)
        return float(2**self.headroom_bits)

    def check_round(self, clients: int) -> None:
        """Packed parameters: refuse a round of ``clients`` whose noise the grid does not hide
        (noise bound > quantum / 3) or that could wrap (``clients * 20`` > the 2^-8 slack)."""
        if not self.packed:
            return
        grid = math.ldexp(1.0, self.scale_bits - self.release_quantum_bits)
        (q,) = self.level_moduli
        if clients > self.max_abs_sum:
            raise InvalidParameter(f"CKKSParams {self.name!r}: the contributor count of {clients} "
                                   f"clients exceeds the max |sum| {self.max_abs_sum:.4g}")
        wraps = clients * NOISE_PER_CLIENT > q / 2 ** (_WRAP_SLACK_BITS + 1)
        if _GRID_OVER_NOISE * noise_bound(clients) > grid or wraps:
            raise InvalidParameter(
                f"CKKSParams {self.name!r}: {clients} clients add more noise than the release grid "
                f"2^-{self.release_quantum_bits} hides at scale 2^{self.scale_bits}; build the "
                "parameters for the round with CKKSParams.for_round(clients=...)"
            )

    @property
    def release_quantum(self) -> float:
        """The grid released values are rounded to; also the promised max absolute error."""
        return math.ldexp(1.0, -self.release_quantum_bits)

    @property
    def security_bound_bits(self) -> int:
        return HE_STANDARD_128_MAX_LOGQ[self.poly_modulus_degree]

    def describe(self) -> str:
        if self.packed:
            return (
                f"{self.name}: N={self.poly_modulus_degree}, one {self.level_bits}-bit prime "
                f"(<= {self.security_bound_bits}, HE standard 128-bit), one real per coefficient, "
                f"residues packed at {self.level_bits} bits, scale 2^{self.scale_bits}, |sum| <= "
                f"{self.max_abs_sum:.4g}, released on a 2^{-self.release_quantum_bits} grid"
                + (f" (target error {self.target_error:g} of the range)" if self.target_error else "")
            )
        return (
            f"{self.name}: N={self.poly_modulus_degree}, q={list(self.coeff_modulus_bits)} bits "
            f"(total {sum(self.coeff_modulus_bits)} <= {self.security_bound_bits}, HE standard "
            f"128-bit), sent at {self.level_primes} prime(s) = {self.level_bits} bits, scale "
            f"2^{self.scale_bits}, |sum| < 2^{self.headroom_bits}, released on a 2^-"
            f"{self.release_quantum_bits} grid"
        )


class Preset(enum.Enum):
    """The named parameter sets. ``COMPACT`` is for size, ``PRECISE`` for precision. Parameters
    below float32 on the wire depend on the round and come from :meth:`CKKSParams.for_round`."""

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
