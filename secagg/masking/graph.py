"""The neighbour graph: a Harary graph H(k, n) over a permutation of the advertised clients.

The permutation is drawn from SHA-256 of the config digest and every advertised public key, so
it is fixed only after the clients have committed fresh keys: neither the server nor a client can
place chosen parties next to a victim before keys are public. (A server that drops clients at the
advertise stage can try a few permutations; each try costs it a client.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

__all__ = ["neighbours"]


def _permutation(ids: Sequence[int], seed: bytes) -> list[int]:
    # Sort by a keyed hash of each id: a uniformly random order derived from public material.
    return sorted(ids, key=lambda i: hashlib.sha256(seed + i.to_bytes(4, "big")).digest())


def neighbours(
    advertised: Mapping[int, bytes], *, degree: int, config_digest: bytes
) -> dict[int, frozenset[int]]:
    """Each advertised client's neighbours. ``advertised`` maps id -> the public-key bytes."""
    ids = sorted(advertised)
    n = len(ids)
    if degree >= n - 1:
        everyone = frozenset(ids)
        return {i: everyone - {i} for i in ids}
    h = hashlib.sha256(b"secagg-graph" + config_digest)
    for i in ids:
        h.update(i.to_bytes(4, "big") + advertised[i])
    order = _permutation(ids, h.digest())
    half = degree // 2
    out: dict[int, frozenset[int]] = {}
    for pos, i in enumerate(order):
        out[i] = frozenset(order[(pos + d) % n] for d in range(-half, half + 1) if d != 0)
    return out
