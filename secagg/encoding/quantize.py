"""Fixed-point quantisation with unbiased stochastic rounding into Z_{2^b}, and its headroom rule.

A client maps each coordinate x in [-clip, clip] to ``w * (x + clip) * scale`` with
``scale = (2^value_bits - 1) / (2 * clip)`` and rounds it stochastically (up with probability equal
to the fractional part), so E[q] is exact and the server's sum is an unbiased estimate. Weights
``w`` are integers folded into the value, so a weighted sum travels inside the secure sum.

The sum of n clients is exact mod 2^b only if it never wraps. :func:`check_headroom` makes that
impossible by construction: n * max_weight * (2^value_bits - 1) + extra must be < 2^b.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter

__all__ = ["FixedPoint", "check_headroom", "dequantize_sum", "quantize"]

MAX_MOD_BITS = 32


@dataclass(frozen=True, slots=True)
class FixedPoint:
    """The fixed-point grid: values in [-clip, clip] on 2^value_bits levels."""

    clip: float
    value_bits: int

    def __post_init__(self) -> None:
        if not (self.clip > 0 and np.isfinite(self.clip)):
            raise InvalidParameter(f"clip must be a positive finite number, found {self.clip}")
        if not 1 <= self.value_bits <= 30:
            raise InvalidParameter(f"value_bits must be in [1, 30], found {self.value_bits}")

    @property
    def levels(self) -> int:
        return (1 << self.value_bits) - 1

    @property
    def scale(self) -> float:
        return self.levels / (2.0 * self.clip)

    @property
    def step(self) -> float:
        """Quantisation step: the worst-case rounding error of one client's coordinate."""
        return 1.0 / self.scale


def check_headroom(
    *, num_clients: int, fixed_point: FixedPoint, max_weight: int, mod_bits: int, extra: int = 0
) -> None:
    """Raise unless the sum of ``num_clients`` weighted values (+ ``extra``) fits in 2^mod_bits."""
    if not 1 <= mod_bits <= MAX_MOD_BITS:
        raise InvalidParameter(f"mod_bits must be in [1, {MAX_MOD_BITS}], found {mod_bits}")
    if num_clients < 1:
        raise InvalidParameter(f"num_clients must be >= 1, found {num_clients}")
    if max_weight < 1:
        raise InvalidParameter(f"max_weight must be >= 1, found {max_weight}")
    if extra < 0:
        raise InvalidParameter(f"extra must be >= 0, found {extra}")
    worst = num_clients * max_weight * fixed_point.levels + extra
    if worst >= 1 << mod_bits:
        need = worst.bit_length()
        raise InvalidParameter(
            f"sum of {num_clients} clients can reach {worst}, which overflows the modulus "
            f"2^{mod_bits}; it needs mod_bits >= {need}. Raise mod_bits (max {MAX_MOD_BITS}), "
            f"lower value_bits (now {fixed_point.value_bits}), lower max_weight (now {max_weight}), "
            f"or lower num_clients (now {num_clients})"
        )


def quantize(
    x: npt.NDArray[np.floating],
    fixed_point: FixedPoint,
    *,
    weight: int = 1,
    rng: np.random.Generator | None = None,
) -> npt.NDArray[np.uint32]:
    """Clip, scale by ``weight`` and stochastically round ``x`` to integers in [0, weight*levels]."""
    if isinstance(weight, bool) or not isinstance(weight, int | np.integer) or weight < 1:
        raise InvalidParameter(f"weight must be an integer >= 1, found {weight!r}")
    if int(weight) * fixed_point.levels >= 1 << MAX_MOD_BITS:
        raise InvalidParameter(
            f"weight {weight} times {fixed_point.levels} levels (value_bits "
            f"{fixed_point.value_bits}) does not fit in uint32; lower weight or value_bits"
        )
    if not np.all(np.isfinite(x)):
        raise InvalidParameter("update contains nan or inf; check the training step")
    rng = rng if rng is not None else np.random.default_rng()
    c = fixed_point.clip
    top = weight * fixed_point.levels
    # floor(y + U), U ~ Uniform[0, 1), rounds y up with probability frac(y): unbiased, and one
    # pass cheaper than comparing against the fractional part. float64 keeps y exact to 2^-22.
    y = x.astype(np.float64)
    np.maximum(y, -c, out=y)
    np.minimum(y, c, out=y)
    y += c
    y *= fixed_point.scale * weight
    y += rng.random(y.shape, dtype=np.float32)
    np.floor(y, out=y)
    q = y.astype(np.uint32)
    np.minimum(q, np.uint32(top), out=q)  # y + U can round up to top + 1 in float64
    return q


def dequantize_sum(
    total: npt.NDArray[np.integer], fixed_point: FixedPoint, *, total_weight: int
) -> npt.NDArray[np.float64]:
    """The weighted sum sum_i w_i x_i from the integer sum of :func:`quantize` outputs."""
    if total_weight < 1:
        raise InvalidParameter(f"total_weight must be >= 1, found {total_weight}")
    return np.asarray(total, dtype=np.float64) / fixed_point.scale - fixed_point.clip * total_weight
