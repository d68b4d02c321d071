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
from functools import lru_cache
from typing import Any, NoReturn

__all__ = ["FrozenGraph", "holders_of", "neighbours", "roster_neighbours", "two_hop"]


def _permutation(ids: Sequence[int], seed: bytes) -> list[int]:
    # Sort by a keyed hash of each id: a uniformly random order derived from public material.
    return sorted(ids, key=lambda i: hashlib.sha256(seed + i.to_bytes(4, "big")).digest())


def neighbours(
    advertised: Mapping[int, bytes], *, degree: int, config_digest: bytes
) -> FrozenGraph:
    """Each advertised client's neighbours. ``advertised`` maps id -> the public-key bytes."""
    h = hashlib.sha256(b"secagg-graph" + config_digest)
    for i in sorted(advertised):
        h.update(i.to_bytes(4, "big") + advertised[i])
    return _harary(list(advertised), degree, h.digest())


class FrozenGraph(dict[int, frozenset[int]]):
    """A neighbour graph no caller can change: one object is shared by every session of a
    process that runs the same roster (see :func:`roster_neighbours`).

    ``ring`` is the Harary construction's cyclic order: each client's holders (its neighbours
    and itself) are the clients within ``degree // 2`` places of it on the ring (every client,
    on the full graph). It is public, derived from the same material as the graph."""

    def __init__(self, graph: Mapping[int, frozenset[int]], *, ring: Sequence[int] = ()) -> None:
        super().__init__(graph)
        self._set_ring(tuple(ring))

    def _set_ring(self, ring: tuple[int, ...]) -> None:
        # ring positions and the half-degree, computed once here: the graph is shared by
        # threads, so nothing is filled in lazily later
        self.ring = ring
        self._pos = {v: i for i, v in enumerate(ring)}
        # a full graph may have odd degree; a sparse Harary graph's is even
        self._half = (len(self[ring[0]]) + 1) // 2 if ring else 0

    def ring_window(self, me: int, hops: int) -> frozenset[int]:
        """The clients within ``hops`` times ``degree // 2`` places of ``me`` on the ring."""
        n, reach = len(self.ring), hops * self._half
        if 2 * reach + 1 >= n:
            return frozenset(self.ring)
        start = self._pos[me] - reach
        if start >= 0 and start + 2 * reach < n:
            return frozenset(self.ring[start : start + 2 * reach + 1])
        return frozenset(self.ring[(start + d) % n] for d in range(2 * reach + 1))

    def _refuse(self, *_: Any, **__: Any) -> NoReturn:
        raise TypeError("the neighbour graph is shared and read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return FrozenGraph, (dict(self),), {"ring": self.ring}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._set_ring(tuple(state["ring"]))


def _harary(ids: Sequence[int], degree: int, seed: bytes) -> FrozenGraph:
    """H(degree, n) over the permutation of ``ids`` that ``seed`` draws (the full graph when
    ``degree >= n - 1``)."""
    ids = sorted(ids)
    n = len(ids)
    if degree >= n - 1:
        everyone = frozenset(ids)
        return FrozenGraph({i: everyone - {i} for i in ids}, ring=ids)
    order = _permutation(ids, seed)
    half = degree // 2
    return FrozenGraph({i: frozenset(order[(pos + d) % n] for d in range(-half, half + 1) if d != 0)
                        for pos, i in enumerate(order)}, ring=order)


def roster_neighbours(ids: Sequence[int], *, degree: int, roster_digest: bytes
                      ) -> FrozenGraph:
    """Each roster member's neighbours, from the roster alone (active mode).

    The graph is a pure function of its arguments, so it is computed once per process and
    shared, read-only, by every session that asks (an in-memory simulation of n clients would
    otherwise hold n copies of an n-entry graph: O(n^2 k) memory)."""
    return _roster_graph(tuple(ids), degree, bytes(roster_digest))


@lru_cache(maxsize=8)
def _roster_graph(ids: tuple[int, ...], degree: int, roster_digest: bytes) -> FrozenGraph:
    seed = hashlib.sha256(b"secagg-graph-roster" + roster_digest + degree.to_bytes(4, "big")).digest()
    return _harary(ids, degree, seed)


def holders_of(graph: Mapping[int, frozenset[int]], owner: int) -> frozenset[int]:
    """The m = k + 1 clients that hold shares of ``owner``'s secrets: its neighbours and itself."""
    return graph[owner] | {owner}


def two_hop(graph: Mapping[int, frozenset[int]], me: int) -> frozenset[int]:
    """Every holder of every secret ``me`` holds a share of: whose signatures ``me`` needs.

    On a Harary graph with its ring, that is the clients within twice ``degree // 2`` places of
    ``me`` on the ring (read off the ring, not unioned from k + 1 neighbourhoods)."""
    if isinstance(graph, FrozenGraph) and graph.ring:
        return graph.ring_window(me, 2)
    holders = holders_of(graph, me)
    return holders.union(*(graph[u] for u in holders))
