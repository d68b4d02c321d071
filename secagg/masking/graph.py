"""The neighbour graph: a Harary graph H(k, n) over a pseudorandom permutation of the clients.

Active (malicious-server) rounds draw the permutation from the pinned roster alone
(:func:`roster_neighbours`): SHA-256 of the roster digest, which hashes every enterprise's
identity key, and the degree. Nothing the server sends -- which adverts it relays, the round's
session, the round number -- enters it, so a server cannot surround a victim with its
colluders, and every client computes the same graph before any message arrives. (The one party
with any influence is an enterprise that chooses its identity key after seeing all the others';
SECURITY.md says how rosters are assembled to avoid that.)

Honest-but-curious rounds (no roster) keep the older derivation (:func:`neighbours`) over the
advertised clients, seeded by the config digest and every advertised key. A server that deviates
can show a victim a directory of its choice and so choose its neighbours; that is one reason
passive mode is for experiments only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

__all__ = ["holders_of", "neighbours", "roster_neighbours", "two_hop"]


def _permutation(ids: Sequence[int], seed: bytes) -> list[int]:
    # Sort by a keyed hash of each id: a uniformly random order derived from public material.
    return sorted(ids, key=lambda i: hashlib.sha256(seed + i.to_bytes(4, "big")).digest())


def _harary(ids: Sequence[int], degree: int, seed: bytes) -> dict[int, frozenset[int]]:
    """H(degree, n) over the permutation of ``ids`` that ``seed`` draws (the full graph when
    ``degree >= n - 1``)."""
    ids = sorted(ids)
    n = len(ids)
    if degree >= n - 1:
        everyone = frozenset(ids)
        return {i: everyone - {i} for i in ids}
    order = _permutation(ids, seed)
    half = degree // 2
    return {i: frozenset(order[(pos + d) % n] for d in range(-half, half + 1) if d != 0)
            for pos, i in enumerate(order)}


def neighbours(
    advertised: Mapping[int, bytes], *, degree: int, config_digest: bytes
) -> dict[int, frozenset[int]]:
    """Each advertised client's neighbours. ``advertised`` maps id -> the public-key bytes."""
    h = hashlib.sha256(b"secagg-graph" + config_digest)
    for i in sorted(advertised):
        h.update(i.to_bytes(4, "big") + advertised[i])
    return _harary(list(advertised), degree, h.digest())


def roster_neighbours(ids: Sequence[int], *, degree: int, roster_digest: bytes
                      ) -> dict[int, frozenset[int]]:
    """Each roster member's neighbours, from the roster alone (active mode)."""
    seed = hashlib.sha256(b"secagg-graph-roster" + roster_digest + degree.to_bytes(4, "big")).digest()
    return _harary(ids, degree, seed)


def holders_of(graph: Mapping[int, frozenset[int]], owner: int) -> frozenset[int]:
    """The m = k + 1 clients that hold shares of ``owner``'s secrets: its neighbours and itself."""
    return graph[owner] | {owner}


def two_hop(graph: Mapping[int, frozenset[int]], me: int) -> frozenset[int]:
    """Every holder of every secret ``me`` holds a share of: whose signatures ``me`` needs."""
    out: set[int] = set()
    for u in holders_of(graph, me):
        out |= holders_of(graph, u)
    return frozenset(out)
