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
    x32 = np.array(x, dtype=np.float32)  # a copy: the caller's array is never aliased
    if not np.all(np.isfinite(x32)):
        raise InvalidParameter("update contains nan or inf (or values beyond float32 range)")
    norm = _l2(x32)
    if norm <= max_norm:
        return x32, 1.0
    # Scaling in float32 rounds each coordinate, which can leave the norm a few ulps above the
    # bound; the bound is the DP sensitivity, so step the factor down until it holds exactly.
    factor = np.float32(max_norm / norm)
    out = x32 * factor
    while _l2(out) > max_norm:
        factor = np.nextafter(factor, np.float32(0))
        out = x32 * factor
    return out, float(factor)


def _l2(x: npt.NDArray[np.float32]) -> float:
    return float(np.linalg.norm(x.astype(np.float64)))


def clip_linf(x: npt.NDArray[np.float32], bound: float) -> npt.NDArray[np.float32]:
    """Clamp every coordinate to [-bound, bound]."""
    if not bound > 0 or not np.isfinite(bound):
        raise InvalidParameter(f"bound must be a positive finite number, found {bound}")
    # The largest float32 <= bound: float32(bound) itself may round up past it (e.g. 0.1).
    b32 = np.float32(bound)
    if float(b32) > bound:
        b32 = np.nextafter(b32, np.float32(0))
    return np.clip(np.asarray(x, dtype=np.float32), -b32, b32)
