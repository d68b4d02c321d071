"""From a float update to the integers a client masks, and from the unmasked sum back.

The wire vector is the quantised update followed by one coordinate holding the client's weight,
so a weighted mean needs no extra round: the sum of that coordinate is the total weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secagg.encoding.quantize import dequantize_sum, quantize
from secagg.errors import InvalidParameter
from secagg.masking.config import MaskingConfig

__all__ = ["Aggregate", "client_value_bound", "encode_update"]


def client_value_bound(config: MaskingConfig) -> int:
    """The largest value one client may put in any coordinate (headroom is checked against it)."""
    fp = config.fixed_point
    return config.max_weight * fp.levels + -(-config.noise_headroom // config.num_clients)


def encode_update(config: MaskingConfig, update: npt.ArrayLike, *, weight: int = 1,
                  rng: np.random.Generator | None = None) -> npt.NDArray[np.uint32]:
    """Clip and quantise ``update`` (stochastic rounding) and append ``weight``."""
    vec = np.asarray(update, dtype=np.float32)
    if vec.shape != (config.vector_length,):
        raise InvalidParameter(f"update has shape {vec.shape}; the round expects "
                               f"({config.vector_length},)")
    if not 1 <= weight <= config.max_weight:
        raise InvalidParameter(f"weight must be in [1, max_weight={config.max_weight}], found {weight}")
    out = np.empty(config.wire_length, dtype=np.uint32)
    quantize(vec, config.fixed_point, weight=weight, rng=rng, out=out[:-1])
    out[-1] = weight
    return out


@dataclass(frozen=True)
class Aggregate:
    """The released result of a round: the exact integer sum and who is in it."""

    total: npt.NDArray[np.uint32]
    total_weight: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    config: MaskingConfig
    #: clients treated as dropouts because a neighbour found their share box invalid
    excluded: tuple[int, ...] = ()
    #: holders whose unmask shares did not match the owner's commitment (their input counts)
    corrupt_shares: tuple[int, ...] = ()

    def weighted_sum(self) -> npt.NDArray[np.float64]:
        """sum_u w_u * x_u over the survivors (within n * quantisation step per coordinate)."""
        return dequantize_sum(self.total, self.config.fixed_point, total_weight=self.total_weight)

    def mean(self) -> npt.NDArray[np.float64]:
        """The weighted mean update of the survivors."""
        return self.weighted_sum() / self.total_weight
