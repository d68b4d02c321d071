"""Noise samplers driven by a cryptographically secure keystream (AES-256-CTR, fresh OS key).

Opacus's ``secure_mode`` needs torchcsprng, which has no build for recent torch. We do not write a
random number generator: every random bit comes from AES-256-CTR (``cryptography``, through
:func:`secagg.hazmat.prg.expand_mask`) keyed by 32 fresh bytes from ``os.urandom`` per call, and the
key is dropped when the call returns. What we write are the standard transforms from uniform bits to
the target distribution, all in float64:

* uniforms: 53-bit integers u -> (u + 0.5) / 2^53, never 0 or 1;
* normals: Box-Muller; callers that release floats sum 2n = 4 normals and divide by 2, the defence
  against floating-point attacks on Gaussian samplers that Opacus's secure mode uses (Holohan and
  Braghin 2021, section 5.1; attack: Mironov 2012, Jin et al. 2022);
* Poisson: Hormann's PTRS transformed rejection (1993) for mean >= 10, inversion below; the result is
  an exact integer, so the floating-point attacks on released floats do not apply to it;
* Skellam: the difference of two independent Poissons (Agarwal, Kairouz and Liu 2021).

Keys are never stored, logged or returned; a test can seed nothing here by design (tests check
distributions statistically).
"""

from __future__ import annotations

import math
import os

import numpy as np
import numpy.typing as npt
from scipy.special import gammaln

from secagg.errors import InvalidParameter
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.prg import expand_mask

__all__ = ["secure_normal", "secure_poisson", "secure_skellam", "secure_uniform", "secure_words64"]

_TWO_53 = float(1 << 53)


def _check_size(size: int) -> None:
    if not (isinstance(size, int | np.integer) and size >= 0):
        raise InvalidParameter(f"size must be an integer >= 0, found {size!r}")


def secure_uniform(size: int) -> npt.NDArray[np.float64]:
    """``size`` float64 uniforms on the open interval (0, 1) from a fresh AES-256-CTR keystream."""
    _check_size(size)
    key = SecretBytes(os.urandom(32), label="noise key")
    words = expand_mask(key, 2 * int(size)).astype(np.uint64)
    del key
    bits = (words[0::2] << np.uint64(21)) ^ (words[1::2] >> np.uint64(11))  # 53 bits
    return (bits.astype(np.float64) + 0.5) / _TWO_53


def secure_words64(size: int) -> npt.NDArray[np.uint64]:
    """``size`` uniformly random 64-bit words from a fresh AES-256-CTR keystream (two 32-bit
    keystream words each, high word first). Callers take the bit widths they need; the threshold
    CKKS smudging noise (:mod:`secagg.ckks.threshold.smudging`) is drawn from these words."""
    _check_size(size)
    key = SecretBytes(os.urandom(32), label="noise key")
    words = expand_mask(key, 2 * int(size)).astype(np.uint64)
    del key
    return (words[0::2] << np.uint64(32)) | words[1::2]


def secure_normal(size: int) -> npt.NDArray[np.float64]:
    """``size`` standard normals (Box-Muller over :func:`secure_uniform`)."""
    _check_size(size)
    half = (int(size) + 1) // 2
    u = secure_uniform(2 * half)
    r = np.sqrt(-2.0 * np.log(u[:half]))
    theta = (2.0 * math.pi) * u[half:]
    out = np.concatenate([r * np.cos(theta), r * np.sin(theta)])
    return out[: int(size)]


def _poisson_small(lam: float, size: int) -> npt.NDArray[np.int64]:
    """Inversion by sequential search, vectorised; for lam < 10 (mean search length lam + 1)."""
    u = secure_uniform(size)
    k = np.zeros(size, dtype=np.int64)
    p = math.exp(-lam)
    cdf = np.full(size, p)
    active = u > cdf
    term = p
    i = 0
    while active.any():
        i += 1
        term *= lam / i
        k[active] += 1
        cdf[active] += term
        active &= u > cdf
        if i > 10_000:  # only reachable through cdf rounding at u -> 1; probability < 2^-50
            break
    return k


def _poisson_ptrs(lam: float, size: int) -> npt.NDArray[np.int64]:
    """Hormann's PTRS (transformed rejection with squeeze), vectorised over rejections."""
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    out = np.empty(size, dtype=np.int64)
    todo = np.arange(size)
    while todo.size:
        n = todo.size
        uv = secure_uniform(2 * n)
        u = uv[:n] - 0.5
        v = uv[n:]
        us = 0.5 - np.abs(u)
        k = np.floor((2.0 * a / us + b) * u + lam + 0.43)
        fast = (us >= 0.07) & (v <= vr)
        valid = (k >= 0) & ~((us < 0.013) & (v > us))
        with np.errstate(divide="ignore", invalid="ignore"):
            lhs = np.log(v) + math.log(invalpha) - np.log(a / (us * us) + b)
            rhs = -lam + k * loglam - gammaln(k + 1.0)
        accept = fast | (valid & (lhs <= rhs))
        out[todo[accept]] = k[accept].astype(np.int64)
        todo = todo[~accept]
    return out


def secure_poisson(lam: float, size: int) -> npt.NDArray[np.int64]:
    """``size`` Poisson(``lam``) integers."""
    _check_size(size)
    if not (math.isfinite(lam) and lam >= 0):
        raise InvalidParameter(f"Poisson mean must be finite and >= 0, found {lam}")
    if lam == 0 or size == 0:
        return np.zeros(int(size), dtype=np.int64)
    if lam < 10:
        return _poisson_small(lam, int(size))
    return _poisson_ptrs(lam, int(size))


def secure_skellam(mu: float, size: int) -> npt.NDArray[np.int64]:
    """``size`` symmetric Skellam Sk(mu, mu) integers: Poisson(mu) - Poisson(mu), variance 2*mu."""
    return secure_poisson(mu, size) - secure_poisson(mu, size)
