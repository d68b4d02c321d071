"""Shamir t-of-n secret sharing over GF(2^521 - 1).

.. danger:: Part of :mod:`secagg.hazmat`, and the one primitive secagg writes itself. Shares are
   secrets: they travel only inside AEAD (:mod:`.aead`). Fewer than ``threshold`` shares reveal
   nothing about the secret (information-theoretically); ``threshold`` or more reveal it. Shares
   are not verifiable: a corrupted share gives a wrong secret, which the recipes catch downstream.

The field is the Mersenne prime 2^521 - 1, comfortably larger than any 32-byte secret. Polynomial
coefficients come from :mod:`secrets` (the OS CSPRNG). x-coordinates are party ids + 1, never 0.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from functools import lru_cache

from secagg.errors import InvalidParameter, NotEnoughParticipants
from secagg.hazmat.handles import SecretBytes

__all__ = ["PRIME", "SHARE_BYTES", "combine", "split"]

PRIME = 2**521 - 1
SHARE_BYTES = 66
MAX_SECRET_BYTES = 64


def split(secret: SecretBytes, *, threshold: int, xs: Sequence[int]) -> dict[int, SecretBytes]:
    """Split ``secret`` into one share per x in ``xs``; any ``threshold`` of them recover it."""
    raw = secret.expose_secret_bytes()
    if len(raw) > MAX_SECRET_BYTES:
        raise InvalidParameter(f"Shamir secret must be <= {MAX_SECRET_BYTES} bytes, found {len(raw)}")
    if len(set(xs)) != len(xs):
        raise InvalidParameter("Shamir x-coordinates must be distinct")
    if any(not 0 < x < PRIME for x in xs):
        raise InvalidParameter("Shamir x-coordinates must be in [1, p)")
    if not 1 <= threshold <= len(xs):
        raise InvalidParameter(
            f"Shamir threshold must be in [1, {len(xs)}] for {len(xs)} shares, found {threshold}"
        )
    coeffs = [int.from_bytes(raw, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares: dict[int, SecretBytes] = {}
    for x in xs:
        y = 0
        for c in reversed(coeffs):
            y = (y * x + c) % PRIME
        shares[x] = SecretBytes(y.to_bytes(SHARE_BYTES, "big"), label="shamir-share")
    return shares


@lru_cache(maxsize=4096)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """lambda_i = prod_{j != i} x_j / (x_j - x_i) = P / (x_i * d_i), P the product of all x.

    The d_i are products of small integers (x-coordinates are client ids + 1), taken exactly and
    reduced once; all 2t divisions share one inversion (Montgomery's batch trick: invert the
    product of everything, then peel the factors off).
    """
    dens = [math.prod([xj - xi for xj in xs if xj != xi]) % PRIME for xi in xs]
    factors = [x * d % PRIME for x, d in zip(xs, dens, strict=True)]
    prefix = [1]
    for f in factors:
        prefix.append(prefix[-1] * f % PRIME)
    inv = pow(prefix[-1], -1, PRIME)
    out = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        out[i] = inv * prefix[i] % PRIME  # = 1 / (x_i d_i)
        inv = inv * factors[i] % PRIME
    product = math.prod(xs) % PRIME
    return tuple(product * o % PRIME for o in out)


def combine(
    shares: Mapping[int, SecretBytes], *, threshold: int, secret_bytes: int, stage: str = "unmask"
) -> SecretBytes:
    """Recover a ``secret_bytes``-long secret from at least ``threshold`` shares keyed by x."""
    if threshold < 1:
        raise InvalidParameter(f"Shamir threshold must be >= 1, found {threshold}")
    if not 0 <= secret_bytes <= MAX_SECRET_BYTES:
        raise InvalidParameter(
            f"Shamir secret_bytes must be in [0, {MAX_SECRET_BYTES}], found {secret_bytes}"
        )
    if len(shares) < threshold:
        raise NotEnoughParticipants(stage, len(shares), threshold, "Shamir shares for one secret")
    xs = tuple(sorted(shares)[:threshold])
    if any(not 0 < x < PRIME for x in xs):
        raise InvalidParameter("Shamir x-coordinates must be in [1, p)")
    secret = 0
    for x, lam in zip(xs, _lagrange_at_zero(xs), strict=True):
        share = shares[x].expose_secret_bytes()
        if len(share) != SHARE_BYTES:
            raise InvalidParameter(f"Shamir share must be {SHARE_BYTES} bytes, found {len(share)}")
        y = int.from_bytes(share, "big")
        if y >= PRIME:
            raise InvalidParameter("Shamir share is not a field element")
        secret = (secret + y * lam) % PRIME
    if secret >= 1 << (8 * secret_bytes):
        raise InvalidParameter(
            "Shamir shares are inconsistent: the reconstruction does not fit the secret size "
            "(a share was corrupted or belongs to another secret)"
        )
    return SecretBytes(secret.to_bytes(secret_bytes, "big"), label="shamir-secret")
