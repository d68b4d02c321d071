"""Norm clipping of an update vector, done before quantisation.

Clipping bounds each client's contribution: the L2 bound is the sensitivity client-level DP is
calibrated to, the L-inf bound is the fixed-point range the modulus headroom is checked against.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter

__all__ = ["clip_l2", "clip_linf"]


def clip_l2(x: npt.NDArray[np.float32], max_norm: float) -> tuple[npt.NDArray[np.float32], float]:
    """Scale ``x`` down to L2 norm <= ``max_norm``; returns the vector and the factor applied."""
    if not max_norm > 0 or not np.isfinite(max_norm):
        raise InvalidParameter(f"max_norm must be a positive finite number, found {max_norm}")
    norm = float(np.linalg.norm(x.astype(np.float64)))
    factor = 1.0 if norm <= max_norm else max_norm / norm
    return (x * np.float32(factor)).astype(np.float32, copy=False), factor


def clip_linf(x: npt.NDArray[np.float32], bound: float) -> npt.NDArray[np.float32]:
    """Clamp every coordinate to [-bound, bound]."""
    if not bound > 0 or not np.isfinite(bound):
        raise InvalidParameter(f"bound must be a positive finite number, found {bound}")
    return np.clip(x, -bound, bound).astype(np.float32, copy=False)
