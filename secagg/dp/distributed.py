"""Client-level DP inside the secure sum: each client adds its share of Skellam noise.

Pipeline per client (TFF's distributed-DP chain, Kairouz et al. 2021; Skellam: Agarwal, Kairouz and
Liu 2021): clip the update to L2 norm ``l2_clip`` -> :func:`secagg.encoding.quantize` -> **add this
client's noise share** (:func:`add_noise_share`) -> mask and upload. The server's unmasked sum
carries the full noise; :func:`remove_noise_offset` takes off the known centring offset before
:func:`secagg.encoding.dequantize_sum`.

Why Skellam: Sk(a) + Sk(b) = Sk(a + b) exactly, so the shares of any ``m`` survivors sum to one
Skellam whose variance is known to the integer, and it is sampled exactly in integers from a CSPRNG
(:mod:`secagg.dp.csprng`). The noise is calibrated for the fewest survivors the round accepts
(``min_clients``): in a masking round it is the masking threshold t (:func:`round_noise`), because
an honest client reveals no unmasking share for a survivor set that keeps fewer than t of its
share holders, so no sum of fewer than t noise shares is ever unmasked. More survivors only add
noise; the ledger records the actual number (:mod:`secagg.dp.client_level`).

Headroom: a share is clamped to [-c, c], with c from Bernstein's inequality so the clamp touches a
coordinate with probability <= 2^-64 (the clamped mechanism differs from the exact one with
probability tau <= rounds*n*dim*2^-64, charged as (1 + e^eps)*tau in delta by
:mod:`secagg.dp.client_level`), and shifted by +c so it is never negative. Each client then
contributes at most ``max_weight*levels + 2c``, and :func:`secagg.encoding.check_headroom` proves
at construction that n such values never wrap the modulus 2^mod_bits (``extra = 2*c*n``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from secagg.dp.csprng import secure_skellam
from secagg.encoding import FixedPoint, check_headroom, dequantize_sum
from secagg.errors import InvalidParameter

if TYPE_CHECKING:
    from secagg.masking.config import MaskingConfig

__all__ = ["DistributedNoise", "add_noise_share", "noisy_sum_to_float", "remove_noise_offset",
           "round_noise", "share_bound", "share_mu"]

#: log(2 * 2^64): the two-sided tail a clamp may cut, per coordinate and client.
TAIL_LOG = 65.0 * math.log(2.0)
TAIL_PROB = 2.0**-64


def integer_sensitivity_l2(*, scale: float, l2_clip: float, dim: int, max_weight: int = 1) -> float:
    """Replace-one L2 sensitivity of one client's quantised update: w * (2 * scale * l2_clip +
    2 * sqrt(dim)). Both the old and the new update are stochastically rounded, each off by
    less than 1 per coordinate (at most sqrt(dim) in L2), so the rounding counts twice."""
    return max_weight * (2.0 * scale * l2_clip + 2.0 * math.sqrt(dim))


def share_mu(*, fixed_point: FixedPoint, l2_clip: float, dim: int, min_clients: int,
             noise_multiplier: float, max_weight: int = 1) -> float:
    """Each Poisson of one client's Sk(mu, mu) share (see :attr:`DistributedNoise.share_mu`)."""
    sens = integer_sensitivity_l2(scale=fixed_point.scale, l2_clip=l2_clip, dim=dim,
                                  max_weight=max_weight)
    std = noise_multiplier * sens
    mu = std * std / (2.0 * min_clients)  # float multiplication: inf on overflow, never raises
    if not (math.isfinite(mu) and mu > 0):
        raise InvalidParameter(f"noise_multiplier {noise_multiplier} with l2_clip {l2_clip} gives "
                               f"a Skellam share parameter of {mu}; choose values whose product "
                               "is a positive, finite noise level (e.g. noise_multiplier 0.5-5, "
                               "l2_clip below the value clip)")
    return mu


def share_bound(mu: float) -> int:
    """c: P(|Sk(mu, mu)| > c) <= 2^-64 by Bernstein's inequality (v = 2 mu, b = 1/3)."""
    v = 2.0 * mu
    t = TAIL_LOG / 3.0 + math.sqrt(TAIL_LOG**2 / 9.0 + 2.0 * TAIL_LOG * v)
    return math.ceil(t)


@dataclass(frozen=True, slots=True)
class DistributedNoise:
    """The round's distributed-noise parameters, shared by every client and the server.

    ``noise_multiplier`` z sets the aggregate noise: its standard deviation, in the integer domain,
    is z times the integer L2 sensitivity (:attr:`sensitivity_l2`) once ``min_clients`` shares are
    summed. Sensitivity is for replacing one client's update by any other (both clipped to
    ``l2_clip``); it includes both updates' stochastic-rounding errors (each at most sqrt(dim) in
    L2).
    """

    fixed_point: FixedPoint
    l2_clip: float
    dim: int
    num_clients: int
    min_clients: int
    noise_multiplier: float
    mod_bits: int
    max_weight: int = 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.l2_clip) and self.l2_clip > 0):
            raise InvalidParameter(f"l2_clip must be a finite number > 0, found {self.l2_clip}")
        if not (isinstance(self.dim, int) and self.dim >= 1):
            raise InvalidParameter(f"dim must be an integer >= 1, found {self.dim!r}")
        if not (isinstance(self.num_clients, int) and self.num_clients >= 1):
            raise InvalidParameter(f"num_clients must be an integer >= 1, found {self.num_clients!r}")
        if not (isinstance(self.min_clients, int) and 1 <= self.min_clients <= self.num_clients):
            raise InvalidParameter(
                f"min_clients must be in [1, num_clients={self.num_clients}], found "
                f"{self.min_clients!r}; set it to the masking threshold t"
            )
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise InvalidParameter(
                f"noise_multiplier must be a finite number > 0, found {self.noise_multiplier}"
            )
        if not (isinstance(self.max_weight, int) and self.max_weight >= 1):
            raise InvalidParameter(f"max_weight must be an integer >= 1, found {self.max_weight!r}")
        check_headroom(
            num_clients=self.num_clients,
            fixed_point=self.fixed_point,
            max_weight=self.max_weight,
            mod_bits=self.mod_bits,
            extra=2 * self.share_bound * self.num_clients,
        )
        rounding = 2.0 * math.sqrt(self.dim)
        signal = 2.0 * self.fixed_point.scale * self.l2_clip
        if rounding > signal:
            warnings.warn(
                f"rounding error (2*sqrt(dim)={rounding:.1f}) exceeds the clipped signal "
                f"(2*scale*l2_clip={signal:.1f}) in the sensitivity: most noise pays for rounding; "
                f"raise fixed_point.value_bits (now {self.fixed_point.value_bits})",
                stacklevel=2,
            )

    @property
    def sensitivity_l2(self) -> float:
        """Integer-domain L2 sensitivity (replace-one; :func:`integer_sensitivity_l2`)."""
        return integer_sensitivity_l2(scale=self.fixed_point.scale, l2_clip=self.l2_clip,
                                      dim=self.dim, max_weight=self.max_weight)

    @property
    def sensitivity_l1(self) -> float:
        """Integer L1 sensitivity: for integer vectors |v|_1 <= min(|v|_2^2, sqrt(d) |v|_2)."""
        l2 = self.sensitivity_l2
        return min(l2 * l2, math.sqrt(self.dim) * l2)

    @property
    def share_mu(self) -> float:
        """Each Poisson of a client's Sk(mu, mu) share: total variance / (2 * min_clients)."""
        return share_mu(fixed_point=self.fixed_point, l2_clip=self.l2_clip, dim=self.dim,
                        min_clients=self.min_clients, noise_multiplier=self.noise_multiplier,
                        max_weight=self.max_weight)

    @property
    def share_bound(self) -> int:
        """c: a share is clamped to [-c, c]; P(|Sk| > c) <= 2^-64 by Bernstein (v=2mu, b=1/3)."""
        return share_bound(self.share_mu)

    def sum_variance(self, num_contributors: int) -> float:
        """Variance of the noise in a sum of ``num_contributors`` shares (integer units)."""
        return 2.0 * self.share_mu * num_contributors

    def sum_std_float(self, num_contributors: int) -> float:
        """The same, as a standard deviation in the float units of the dequantised sum."""
        return math.sqrt(self.sum_variance(num_contributors)) / self.fixed_point.scale


def _check_vector(q: npt.NDArray[np.integer], noise: DistributedNoise, what: str) -> None:
    if q.ndim != 1 or q.shape[0] != noise.dim:
        raise InvalidParameter(f"{what} has shape {q.shape}; the round expects ({noise.dim},)")


def add_noise_share(
    q: npt.NDArray[np.uint32], noise: DistributedNoise
) -> npt.NDArray[np.uint32]:
    """This client's quantised update plus its centred noise share: q + clamp(Sk) + c.

    ``q`` comes from :func:`secagg.encoding.quantize` (values in [0, max_weight*levels]); the result
    lies in [0, max_weight*levels + 2c] and goes to masking unchanged. The share is drawn from a
    fresh AES-CTR keystream and never leaves this function except inside the returned sum.
    """
    _check_vector(q, noise, "quantised update")
    if q.dtype != np.uint32:
        raise InvalidParameter(f"quantised update must be uint32, found {q.dtype}")
    top = noise.max_weight * noise.fixed_point.levels
    if q.size and int(q.max()) > top:
        raise InvalidParameter(
            f"quantised update has a value {int(q.max())} above max_weight*levels={top}; quantise "
            "with the round's fixed_point and a weight <= max_weight"
        )
    c = noise.share_bound
    share = np.clip(secure_skellam(noise.share_mu, noise.dim), -c, c)
    out = q.astype(np.int64) + share + c
    return out.astype(np.uint32)


def remove_noise_offset(
    total: npt.NDArray[np.integer], noise: DistributedNoise, *, num_contributors: int
) -> npt.NDArray[np.int64]:
    """The noisy integer sum without the ``num_contributors * c`` centring offsets.

    ``total`` is the unmasked sum (mod 2^mod_bits, exact by the headroom check). The result may be
    slightly negative (noise); pass it to :func:`secagg.encoding.dequantize_sum`.
    """
    _check_vector(np.asarray(total), noise, "unmasked sum")
    if not (isinstance(num_contributors, int) and 1 <= num_contributors <= noise.num_clients):
        raise InvalidParameter(
            f"num_contributors must be in [1, num_clients={noise.num_clients}], found "
            f"{num_contributors!r}"
        )
    if num_contributors < noise.min_clients:
        raise InvalidParameter(
            f"only {num_contributors} client(s) contributed but the noise is calibrated for at "
            f"least min_clients={noise.min_clients}: the sum is not protected as promised; "
            "do not release it (raise the masking threshold to min_clients)"
        )
    return np.asarray(total, dtype=np.int64) - num_contributors * noise.share_bound


def noisy_sum_to_float(
    total: npt.NDArray[np.integer],
    noise: DistributedNoise,
    *,
    num_contributors: int,
    total_weight: int,
) -> npt.NDArray[np.float64]:
    """Offset removal then dequantisation: the released, client-level-DP weighted sum."""
    ints = remove_noise_offset(total, noise, num_contributors=num_contributors)
    return dequantize_sum(ints, noise.fixed_point, total_weight=total_weight)


def round_noise(config: MaskingConfig) -> DistributedNoise | None:
    """The distributed noise a masking round's config announces, or None for a round without.

    The update is the config's vector (the weight coordinate stays noiseless: distributed-DP
    rounds have ``max_weight`` 1, so the total weight is the survivor count, which is public),
    and the noise is calibrated for ``config.dp_min_shares`` contributors, which the config
    refuses to set above the masking threshold.
    """
    if not config.dp_noise_multiplier:
        return None
    return DistributedNoise(
        fixed_point=config.fixed_point, l2_clip=config.dp_l2_clip, dim=config.vector_length,
        num_clients=config.num_clients, min_clients=config.dp_min_shares,
        noise_multiplier=config.dp_noise_multiplier, mod_bits=config.mod_bits,
        max_weight=config.max_weight)
