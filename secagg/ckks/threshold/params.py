"""Threshold CKKS parameters: the smudging bound, the scale it forces, and the 128-bit check.

The statistical argument (what the smudging noise must hide, and how much it takes)
------------------------------------------------------------------------------------
Notation: ``N`` ring degree, ``q`` the modulus of the data level (the product of the data primes),
``n`` parties, ``t`` threshold, ``R`` the number of ciphertexts decrypted under one set of keys
(every chunk of every decryption attempt counts once), ``lambda`` the statistical security
parameter (default 40).

*What leaks without smudging.* The decryption of a chunk's aggregate is
``c0 + a*s_U = sum_i Encode(m_i) + e`` with ``e = sum_i e_i`` the sum of the uploads' fresh
encryption noises (SEAL's centred binomial error, ``|e_i| <= 21`` per coefficient, see
``sample_poly_cbd`` in SEAL's ``util/rlwe.cpp``). The output of the functionality is
``sum_i Encode(m_i)`` (the sum of the fixed-point encodings, as for any quantised secure sum);
``e`` is the part a partial decryption must not reveal: it depends on every honest party's
secret, and exact decryptions leak keys (Li and Micciancio, EUROCRYPT 2021).

*Simulation.* The key shares are a {0,1} linear secret sharing (replicated sharing, see
:mod:`.sharing`): every term a coalition of at most ``t - 1`` parties misses is held only by
honest parties, and a decrypting set's additive shares are sums of whole terms (coefficients 0 or
1). Given the coalition's terms, every honest partial decryption of a chunk is
``a*z_h + E_h`` where the ``z_h`` are uniformly random modulo ``q`` subject to one linear
constraint: their sum is ``s_U`` minus what the coalition knows. A simulator that knows only the
released sum draws the ``z_h`` it is free to draw and sets the last partial decryption to
``sum Encode(m_i) - c0 - (known) + E_h``: it differs from the real one by exactly the honest
noise ``x = e_honest``, ``|x_j| <= B = 21 * n_honest <= 21 * n`` per coefficient. (With Shamir
shares and Lagrange weights the honest coefficients would be rationals P/Q, and ``Q*p_h`` would
reveal ``e mod Q``: no amount of bounded smudging hides that, which is why this module does not
use Shamir for the key; see :mod:`.sharing`.)

*Bound.* Each partial decryption adds ``E`` with independent coefficients uniform on the
``2^(tau+1)`` integers of ``[-2^tau, 2^tau)`` (CSPRNG words, :func:`secagg.dp.csprng.
secure_words64`). For one coefficient, ``TV(U, U + x_j) = |x_j| / 2^(tau+1)``; over ``N``
coefficients and ``R`` decryptions the hybrid argument gives

    TV(real view, simulated view) <= R * N * B / 2^(tau+1)  <=  2^-lambda
    <=>  tau >= lambda + log2(R * N * B) - 1.

This is a worst-case bound (no tail assumption on ``e``). Repeated requests (a retry with another
decrypting set, or the same one again) are separate hybrid steps and count in ``R``; a party
refuses once its budget is spent. The server, holding every byte, and ``t - 1`` parties therefore
learn nothing beyond the released aggregate except with statistical distance ``2^-lambda``, on
top of RLWE (the uploads) and the AEAD/signatures of the share transport.

*Assumptions and limits.* Only honest uploads' noise needs hiding (a colluder knows its own), so
the bound holds whatever the colluders upload or deal. What it does not give: robustness (a
cheating dealer, uploader or decryptor can spoil the aggregate; nothing proves well-formedness).
Which sums get decrypted at all (enough uploaders, one uploader set per round) is the decryption
policy's job (:mod:`.policy`), not the smudging's.

*The budget is per party.* ``R`` bounds the decryptions of one party's keys, and each party
counts its own. The hybrid argument replaces one honest partial decryption per step; a server
that puts a different honest party into each decrypting set gets up to ``n_honest * R`` honest
partial decryptions out of ``R`` decryptions per party, so the proven distance is
``n_honest * R * N * B / 2^(tau+1)``, i.e. about ``2^-(lambda - log2 n_honest)`` (37 bits instead
of 40 for 10 parties), unless the budget is counted per round rather than per party.

*What it costs: the digit embedding (the default).* The smudging only has to sit *below* the
message, never inside it, so the message need not be a real scaled past the noise: each real is
quantised to an integer ``round(x * 2^f)`` (``f`` fraction bits) and ``K`` of them share one
coefficient as signed base-``2^w`` digits above a floor of ``b`` bits,

    coefficient = sum_k q_k * 2^(b + k*w),      |noise| = |e + sum_S E_j| < 2^(b - 1),

with ``b`` chosen so that ``|S| * 2^tau + B < 2^(b-1)`` for any decrypting set (``|S| <= n``) and
``w`` so that a digit's sum over ``n`` uploads stays within ``(-2^(w-1), 2^(w-1))``. The combine
rounds the noise away (it is bounded, not merely unlikely to be large) and reads every digit's
sum *exactly*: the released aggregate is the exact sum of the quantised values, its only error the
quantisation, at most ``n * 2^-(f+1)`` per real, and the smudging costs the floor ``b`` once per
coefficient instead of once per real. The functionality the simulator above needs is unchanged
(``sum_i Encode(m_i)`` is a function of the exact digit sums). The data level must hold
``2^(b + K*w)`` below ``q / 2`` (checked against the actual primes when the ring is built).

Numbers for 10 parties, t = 6, 1M parameters, clip 8 (the bench's weighted values), the released
mean within ``1e-6`` of the clip range (``f = 19``), lambda = 40, N = 8192, two decryption attempts:
``K = 4`` reals per coefficient, 31 chunks, ``R = 62``, ``tau = 66``, ``b = 71``, ``w = 27``,
data level 3 x 60 = 180 bits, chain ``[60, 60, 60, 38]`` = 218 <= 218 bits: 45 bits per real,
1.41x float32 packed at the prime widths (:func:`plan` picks ``K``; :meth:`ThresholdParams.table`
prints the rest).

*The real-valued embeddings* (``"coefficients"``: the ``N`` reals of a chunk are the plaintext's
coefficients through SEAL's slot encoder, :class:`secagg.hazmat.seal_codec.CoefficientEmbedding`;
``"slots"``: two reals per complex slot) are kept for comparison: the ``t`` smudges land on every
real (uniform variance ``2^(2 tau) / 3`` each), a decoded real carries an error of standard
deviation ``sqrt(t / 3) * 2^tau / Delta`` (``sqrt(N * t / 6) * 2^tau / Delta`` for slots), the
scale is chosen so that ``z`` of those deviations stay below ``rel_error * clip``, and the data
level must hold ``Delta * n * clip`` plus the smudge. With clip 1 and one attempt that is
``Delta = 2^91`` and a 98-bit level: 3.06x float32.

The total of all primes, the unused key-switching prime included, is checked against the
HE-standard 128-bit bound (:data:`secagg.ckks.presets.HE_STANDARD_128_MAX_LOGQ`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from secagg.ckks.presets import HE_STANDARD_128_MAX_LOGQ
from secagg.errors import InvalidParameter

__all__ = ["CBD_NOISE_BOUND", "ThresholdParams", "default_threshold", "plan"]

#: SEAL 4's error sampler (centred binomial over 2 x 21 bits): |e| <= 21 per coefficient.
CBD_NOISE_BOUND = 21
_MAX_PRIME_BITS = 60
_MIN_PRIME_BITS = 20
_EMBEDDINGS = ("digits", "coefficients", "slots")
_MAX_DIGITS = 64


@dataclass(frozen=True, slots=True)
class ThresholdParams:
    """A validated threshold-CKKS parameter set (build it with :func:`plan`).

    ``coeff_modulus_bits`` lists every prime; the last is SEAL's key-switching prime, unused here
    but counted against the 128-bit bound. Data live at the level of all the other primes.

    Embedding ``"digits"`` (the default of :func:`plan`): ``scale_bits`` is the number ``f`` of
    fraction bits of the quantised reals, ``digits`` (``K``) reals share a coefficient as signed
    digits of ``digit_bits`` (``w``) bits above a noise floor of ``base_bits`` (``b``) bits. The
    real-valued embeddings leave those three at their defaults and use ``scale_bits`` as the CKKS
    scale.
    """

    poly_modulus_degree: int
    coeff_modulus_bits: tuple[int, ...]
    scale_bits: int
    smudging_bits: int
    parties: int
    threshold: int
    clip: float
    max_decryptions: int
    security_bits: int = 40
    rel_error: float = 1e-6
    error_sigmas: float = 7.5
    embedding: str = "coefficients"
    digits: int = 1
    digit_bits: int = 0
    base_bits: int = 0

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if self.embedding not in _EMBEDDINGS:
            raise InvalidParameter(f"embedding must be one of {_EMBEDDINGS}, found "
                                   f"{self.embedding!r}")
        if n not in HE_STANDARD_128_MAX_LOGQ:
            raise InvalidParameter(f"poly_modulus_degree must be one of "
                                   f"{sorted(HE_STANDARD_128_MAX_LOGQ)}, found {n}")
        bits = self.coeff_modulus_bits
        if len(bits) < 2 or any(not _MIN_PRIME_BITS <= b <= _MAX_PRIME_BITS for b in bits):
            raise InvalidParameter(f"coeff_modulus_bits needs >= 2 primes of {_MIN_PRIME_BITS}-"
                                   f"{_MAX_PRIME_BITS} bits (data primes + the special prime), "
                                   f"found {bits}")
        if sum(bits) > HE_STANDARD_128_MAX_LOGQ[n]:
            raise InvalidParameter(
                f"coeff_modulus_bits total {sum(bits)} exceeds the HE-standard 128-bit bound "
                f"{HE_STANDARD_128_MAX_LOGQ[n]} for N={n} (smudging included)")
        if not 2 <= self.threshold <= self.parties:
            raise InvalidParameter(f"threshold must be in [2, parties={self.parties}], "
                                   f"found {self.threshold}")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise InvalidParameter(f"clip must be positive and finite, found {self.clip}")
        if self.max_decryptions < 1:
            raise InvalidParameter("max_decryptions must be >= 1")
        if self.smudging_bits < self.required_smudging_bits:
            raise InvalidParameter(
                f"smudging_bits={self.smudging_bits} is below the {self.required_smudging_bits} "
                f"bits that {self.security_bits}-bit statistical security needs for "
                f"{self.max_decryptions} decryption(s) of N={n} coefficients")
        if self.embedding == "digits":
            self._check_digits()
            return
        if self.digits != 1 or self.digit_bits or self.base_bits:
            raise InvalidParameter(f"digits, digit_bits and base_bits belong to the 'digits' "
                                   f"embedding, not {self.embedding!r}")
        if self.scale_bits < self.required_scale_bits:
            raise InvalidParameter(
                f"scale 2^{self.scale_bits} is below 2^{self.required_scale_bits}: the smudging "
                f"noise would exceed rel_error={self.rel_error} of the clip range")
        if self.level_bits - 1 < self.required_level_bits:
            raise InvalidParameter(
                f"the data level ({self.level_bits} bits) cannot hold the aggregate and the "
                f"smudging ({self.required_level_bits} bits + sign); add bits to the data primes")

    def _check_digits(self) -> None:
        if not 1 <= self.digits <= _MAX_DIGITS:
            raise InvalidParameter(f"digits must be in [1, {_MAX_DIGITS}], found {self.digits}")
        if self.scale_bits < self.required_fraction_bits:
            raise InvalidParameter(
                f"{self.scale_bits} fraction bits quantise too coarsely: {self.parties} "
                f"uploads * 2^-({self.scale_bits}+1) exceeds rel_error={self.rel_error} of the "
                f"clip range; {self.required_fraction_bits} are needed")
        if self.base_bits < self.required_base_bits:
            raise InvalidParameter(
                f"a noise floor of {self.base_bits} bits does not hold the smudging of "
                f"{self.parties} decryptors (2^{self.smudging_bits} each) and the encryption "
                f"noise: {self.required_base_bits} bits are needed")
        if self.digit_bits < self.required_digit_bits:
            raise InvalidParameter(
                f"digits of {self.digit_bits} bits cannot hold the sum of {self.parties} "
                f"quantised reals (|x| <= {self.clip}, {self.scale_bits} fraction bits): "
                f"{self.required_digit_bits} are needed")
        if self.level_bits < self.message_bits + 1:
            raise InvalidParameter(
                f"the data level ({self.level_bits} bits) cannot hold {self.digits} digits of "
                f"{self.digit_bits} bits above a {self.base_bits}-bit floor (needs "
                f"{self.message_bits + 1} bits); add bits to the data primes or use fewer digits")

    # -- the bound ------------------------------------------------------------------------------

    @property
    def noise_bound(self) -> int:
        """B: worst-case honest encryption noise per coefficient of an aggregate."""
        return CBD_NOISE_BOUND * self.parties

    @property
    def required_smudging_bits(self) -> int:
        return math.ceil(self.security_bits
                         + math.log2(self.max_decryptions * self.poly_modulus_degree
                                     * self.noise_bound) - 1)

    @property
    def statistical_distance_log2(self) -> float:
        """log2 of the hybrid bound R * N * B / 2^(tau+1) (<= -security_bits)."""
        return math.log2(self.max_decryptions * self.poly_modulus_degree * self.noise_bound) \
            - (self.smudging_bits + 1)

    # -- the digit embedding ----------------------------------------------------------------

    @property
    def decryption_noise_bound(self) -> int:
        """Largest |noise| of a combined coefficient: every party may be in the decrypting set,
        each adding a smudge in [-2^tau, 2^tau), plus the uploads' noise B."""
        return _decryption_noise_bound(self.parties, self.smudging_bits)

    @property
    def required_base_bits(self) -> int:
        """The floor ``b`` with ``decryption_noise_bound < 2^(b-1)``: rounding to a multiple of
        ``2^b`` then removes the noise exactly."""
        return self.decryption_noise_bound.bit_length() + 1

    @property
    def required_fraction_bits(self) -> int:
        """``f`` with ``parties * 2^-(f+1) <= rel_error * clip`` (the sum's quantisation)."""
        return _fraction_bits(self.parties, self.rel_error, self.clip)

    @property
    def digit_bound(self) -> int:
        """Largest |sum| of one digit over the parties' uploads (each ``|round(x * 2^f)| <=
        ceil(clip * 2^f)``)."""
        return _digit_bound(self.parties, self.clip, self.scale_bits)

    @property
    def required_digit_bits(self) -> int:
        """``w`` with ``digit_bound < 2^(w-1)`` (a signed digit's sum never wraps)."""
        return self.digit_bound.bit_length() + 1

    @property
    def message_bits(self) -> int:
        """``b + K*w``: a combined coefficient stays below ``2^(b + K*w - 1)`` in magnitude (up to
        a factor ``1 + 2^(1-w)``), so ``q > 2^(b + K*w)`` keeps it below ``q / 2``."""
        return self.base_bits + self.digits * self.digit_bits

    @property
    def error_bound(self) -> float:
        """Worst-case error of one real of the released *sum* (value units): the digit embedding's
        quantisation; the real-valued embeddings' ``error_sigmas`` standard deviations."""
        if self.embedding == "digits":
            return self.parties * 2.0 ** -(self.scale_bits + 1)
        return self.error_sigmas * self.error_std

    # -- the real-valued embeddings ---------------------------------------------------------

    @property
    def error_std(self) -> float:
        """Standard deviation of the error on one decoded real of the sum (value units)."""
        if self.embedding == "digits":
            return math.sqrt(self.parties / 12.0) * 2.0 ** -self.scale_bits
        return _spread(self.embedding, self.poly_modulus_degree, self.threshold) \
            * math.ldexp(1.0, self.smudging_bits - self.scale_bits)

    @property
    def required_scale_bits(self) -> int:
        std_units = _spread(self.embedding, self.poly_modulus_degree, self.threshold) \
            * 2.0 ** self.smudging_bits
        return math.ceil(math.log2(self.error_sigmas * std_units / (self.rel_error * self.clip)))

    @property
    def required_level_bits(self) -> int:
        if self.embedding == "digits":
            return self.message_bits + 1
        peak = (2.0 ** self.scale_bits * _peak_factor(self.embedding) * self.parties * self.clip
                + self.threshold * 2.0 ** self.smudging_bits + self.noise_bound)
        return math.ceil(math.log2(peak)) + 1  # one bit of margin

    @property
    def data_primes(self) -> int:
        return len(self.coeff_modulus_bits) - 1

    @property
    def level_bits(self) -> int:
        return sum(self.coeff_modulus_bits[:-1])

    @property
    def reals_per_ciphertext(self) -> int:
        return self.poly_modulus_degree * (self.digits if self.embedding == "digits" else 1)

    def bytes_per_param(self, *, packed: bool = True) -> float:
        """Upload bytes per real (one polynomial per chunk; ``a`` comes from the round seed)."""
        per = self.digits if self.embedding == "digits" else 1
        if packed:
            return self.level_bits / 8.0 / per
        return 8.0 * self.data_primes / per

    def table(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {
            "N": self.poly_modulus_degree,
            "embedding": self.embedding,
            "coeff_modulus_bits": str(list(self.coeff_modulus_bits)),
            "total_bits": sum(self.coeff_modulus_bits),
            "he_standard_128_bound": HE_STANDARD_128_MAX_LOGQ[self.poly_modulus_degree],
            "data_level_bits": self.level_bits,
            "scale_bits": self.scale_bits,
            "smudging_bits": self.smudging_bits,
            "noise_bound_B": self.noise_bound,
            "max_decryptions_R": self.max_decryptions,
            "statistical_distance_log2": round(self.statistical_distance_log2, 2),
            "error_std_rel_clip": self.error_std / self.clip,
            "error_bound_rel_clip": self.error_bound / self.clip,
            "bytes_per_param_packed": self.bytes_per_param(packed=True),
            "ratio_vs_float32_packed": self.bytes_per_param(packed=True) / 4.0,
            "ratio_vs_float32_u64_words": self.bytes_per_param(packed=False) / 4.0,
        }
        if self.embedding == "digits":
            out.update({"digits_per_coefficient": self.digits, "digit_bits": self.digit_bits,
                        "noise_floor_bits": self.base_bits, "fraction_bits": self.scale_bits})
        return out


def default_threshold(parties: int) -> int:
    """The threshold this core uses unless told otherwise: a strict majority, ``n // 2 + 1``
    (6 of 10). Below it the round ends with :class:`~secagg.errors.NotEnoughParticipants`;
    ``n - t`` parties may be absent at decryption."""
    if parties < 2:
        raise InvalidParameter(f"a threshold round needs at least 2 parties, found {parties}")
    return parties // 2 + 1


def _spread(embedding: str, n: int, t: int) -> float:
    """Std of one decoded real per unit of smudging scale 2^tau: t uniforms of variance 1/3 each,
    per coefficient, or summed over N coefficients into a slot's real part (N/2 of them)."""
    if embedding == "coefficients":
        return math.sqrt(t / 3.0)
    return math.sqrt(n * t / 6.0)


def _peak_factor(embedding: str) -> float:
    """Largest coefficient of an encoded vector of reals bounded by 1, in units of the scale."""
    return 1.0 if embedding == "coefficients" else math.sqrt(2)


def _decryption_noise_bound(parties: int, tau: int) -> int:
    return parties * (1 << tau) + CBD_NOISE_BOUND * parties


def _fraction_bits(parties: int, rel_error: float, clip: float) -> int:
    return max(0, math.ceil(math.log2(parties / (2.0 * rel_error * clip))))


def _digit_bound(parties: int, clip: float, fraction_bits: int) -> int:
    return parties * math.ceil(clip * 2.0 ** fraction_bits)


def _chain(need: int, n: int, special_prime_bits: int) -> tuple[int, ...] | None:
    """The fewest data primes of at most 60 bits totalling >= ``need`` bits, then the special
    prime (shrunk to the room the 128-bit bound leaves, at least 20 bits); None if none fits."""
    k = max(1, math.ceil(need / _MAX_PRIME_BITS))
    per = max(_MIN_PRIME_BITS, math.ceil(need / k))
    room = HE_STANDARD_128_MAX_LOGQ[n] - per * k
    if room < _MIN_PRIME_BITS:
        return None
    return (per,) * k + (min(special_prime_bits, room),)


def plan(*, parties: int, threshold: int, clip: float, params_count: int,
         rel_error: float = 1e-6, security_bits: int = 40, attempts: int = 1,
         poly_modulus_degree: int = 8192, error_sigmas: float = 7.5,
         special_prime_bits: int = 60, embedding: str = "digits") -> ThresholdParams:
    """The smallest upload meeting the smudging bound for one round of ``params_count`` reals
    (``attempts`` decryption attempts per chunk), checked against the 128-bit bound.

    ``rel_error`` bounds the error of one real of the released *sum* relative to ``clip``
    (worst case for ``"digits"``, ``error_sigmas`` standard deviations for the real-valued
    embeddings). For ``"digits"`` every number of reals per coefficient is tried and the one with
    the fewest upload bits per real wins."""
    n = poly_modulus_degree
    if embedding not in _EMBEDDINGS:
        raise InvalidParameter(f"embedding must be one of {_EMBEDDINGS}, found {embedding!r}")
    if params_count < 1 or attempts < 1:
        raise InvalidParameter(f"params_count and attempts must be >= 1, found {params_count} "
                               f"and {attempts}")
    b = CBD_NOISE_BOUND * parties

    def tau_for(chunks: int) -> int:
        return math.ceil(security_bits + math.log2(chunks * attempts * n * b) - 1)

    if embedding == "digits":
        return _plan_digits(parties=parties, threshold=threshold, clip=clip,
                            params_count=params_count, rel_error=rel_error,
                            security_bits=security_bits, attempts=attempts, n=n,
                            special_prime_bits=special_prime_bits, tau_for=tau_for)
    chunks = max(1, math.ceil(params_count / n))
    tau = tau_for(chunks)
    std_units = _spread(embedding, n, threshold) * 2.0 ** tau
    scale = math.ceil(math.log2(error_sigmas * std_units / (rel_error * clip)))
    peak = 2.0 ** scale * _peak_factor(embedding) * parties * clip + threshold * 2.0 ** tau + b
    need = math.ceil(math.log2(peak)) + 2  # the level must exceed need - 1 bits
    bits = _chain(need, n, special_prime_bits)
    if bits is None:
        raise InvalidParameter(
            f"{need} data bits + a special prime exceed the HE-standard 128-bit bound "
            f"{HE_STANDARD_128_MAX_LOGQ[n]} for N={n}; raise poly_modulus_degree, lower "
            "security_bits or relax rel_error")
    return ThresholdParams(
        poly_modulus_degree=n, coeff_modulus_bits=bits, scale_bits=scale, smudging_bits=tau,
        parties=parties, threshold=threshold, clip=clip, max_decryptions=chunks * attempts,
        security_bits=security_bits, rel_error=rel_error, error_sigmas=error_sigmas,
        embedding=embedding)


def _plan_digits(*, parties: int, threshold: int, clip: float, params_count: int,
                 rel_error: float, security_bits: int, attempts: int, n: int,
                 special_prime_bits: int, tau_for: Callable[[int], int]) -> ThresholdParams:
    best: ThresholdParams | None = None
    for k in range(1, _MAX_DIGITS + 1):
        chunks = max(1, math.ceil(params_count / (n * k)))
        tau = tau_for(chunks)
        f = _fraction_bits(parties, rel_error, clip)
        base = _decryption_noise_bound(parties, tau).bit_length() + 1
        width = _digit_bound(parties, clip, f).bit_length() + 1
        bits = _chain(base + k * width + 1, n, special_prime_bits)
        if bits is None:
            break  # more digits only need more bits
        cand = ThresholdParams(
            poly_modulus_degree=n, coeff_modulus_bits=bits, scale_bits=f, smudging_bits=tau,
            parties=parties, threshold=threshold, clip=clip, max_decryptions=chunks * attempts,
            security_bits=security_bits, rel_error=rel_error, embedding="digits", digits=k,
            digit_bits=width, base_bits=base)
        if best is None or cand.bytes_per_param() < best.bytes_per_param():
            best = cand
    if best is None:
        raise InvalidParameter(
            f"even one real per coefficient needs more than the HE-standard 128-bit bound "
            f"{HE_STANDARD_128_MAX_LOGQ[n]} for N={n}; raise poly_modulus_degree, lower "
            "security_bits or relax rel_error")
    return best
