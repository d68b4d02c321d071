"""Fixed-point quantisation with unbiased stochastic rounding into Z_{2^b}, and its headroom rule.

A client maps each coordinate x in [-clip, clip] to ``w * (x + clip) * scale`` with
``scale = (2^value_bits - 1) / (2 * clip)`` and rounds it stochastically (up with probability equal
to the fractional part), so E[q] is exact and the server's sum is an unbiased estimate. Weights
``w`` are integers folded into the value, so a weighted sum travels inside the secure sum.

The sum of n clients is exact mod 2^b only if it never wraps. :func:`check_headroom` makes that
impossible by construction: n * max_weight * (2^value_bits - 1) + extra must be < 2^b.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.prg import Keystream

__all__ = ["FixedPoint", "check_headroom", "dequantize_sum", "quantize"]

MAX_MOD_BITS = 32
_TWO32 = float(1 << 32)


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
    out: npt.NDArray[np.uint32] | None = None,
) -> npt.NDArray[np.uint32]:
    """Clip, scale by ``weight`` and stochastically round ``x`` to integers in [0, weight*levels].

    The rounding coins come from an AES-256-CTR keystream under a fresh key (from ``rng`` when one
    is given, for reproducible runs; else from the OS): several times faster than numpy's
    generator, and unpredictable. ``out`` (same shape, uint32) receives the result without a copy.
    """
    if isinstance(weight, bool) or not isinstance(weight, int | np.integer) or weight < 1:
        raise InvalidParameter(f"weight must be an integer >= 1, found {weight!r}")
    if int(weight) * fixed_point.levels >= 1 << MAX_MOD_BITS:
        raise InvalidParameter(
            f"weight {weight} times {fixed_point.levels} levels (value_bits "
            f"{fixed_point.value_bits}) does not fit in uint32; lower weight or value_bits"
        )
    x = np.asarray(x)
    if not np.all(np.isfinite(x)):
        raise InvalidParameter("update contains nan or inf; check the training step")
    if out is None:
        out = np.empty(x.shape, dtype=np.uint32)
    elif out.dtype != np.uint32 or out.shape != x.shape or not out.flags.c_contiguous:
        raise InvalidParameter(f"out must be a contiguous uint32 array of shape {x.shape}, "
                               f"found {out.dtype} {out.shape}")
    key = rng.bytes(32) if rng is not None else os.urandom(32)
    coins = Keystream(SecretBytes(key, label="rounding-key"))
    flat_x, flat_out = np.ravel(x), out.reshape(-1)
    c = fixed_point.clip
    # floor(y + U) with U = word / 2^32 rounds y up with probability frac(y): unbiased. Computed
    # as (y * 2^32 + word) / 2^32 in float64, which keeps y exact to ~2^-20 of a level; the cast
    # to uint32 truncates, which is floor for these non-negative values.
    scale = fixed_point.scale * weight * _TWO32
    top = np.uint32(weight * fixed_point.levels)
    y = np.empty(min(flat_x.shape[0], Keystream.CHUNK_WORDS), dtype=np.float64)
    for start in range(0, flat_x.shape[0], Keystream.CHUNK_WORDS):
        stop = min(start + Keystream.CHUNK_WORDS, flat_x.shape[0])
        chunk = y[: stop - start]
        np.clip(flat_x[start:stop], -c, c, out=chunk)
        chunk *= scale
        chunk += c * scale
        chunk += coins.next_words(stop - start)
        chunk *= 1.0 / _TWO32
        dest = flat_out[start:stop]
        dest[...] = chunk
        np.minimum(dest, top, out=dest)  # y + U can reach top + 1
    return out


def dequantize_sum(
    total: npt.NDArray[np.integer], fixed_point: FixedPoint, *, total_weight: int
) -> npt.NDArray[np.float64]:
    """The weighted sum sum_i w_i x_i from the integer sum of :func:`quantize` outputs."""
    if total_weight < 1:
        raise InvalidParameter(f"total_weight must be >= 1, found {total_weight}")
    return np.asarray(total, dtype=np.float64) / fixed_point.scale - fixed_point.clip * total_weight
