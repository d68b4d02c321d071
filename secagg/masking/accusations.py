"""Which clients the server drops when neighbours report their share boxes as invalid.

A client whose share box a neighbour could not open, or whose shares did not match its own
commitment, is reported in that neighbour's masked input (``excluded``) and treated as a
dropout: its vector comes back out of the sum and its mask key is rebuilt like any dropout's.
Reports are also a weapon, so they are bounded:

* an honest client never reports more than m - t neighbours (its own holder check would fail
  first); a client that does is dropped itself and its reports ignored, so one malicious
  enterprise cannot knock out more than m - t neighbours;
* reports that would leave a dropped client's mask key with fewer than t holders able to
  rebuild it (adjacent reporters hold each other's shares) cost their reporters their place
  instead: the round goes on either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["resolve_accusations"]


def resolve_accusations(*, graph: Mapping[int, frozenset[int]],
                        excluded_by: Mapping[int, frozenset[int]], uploaded: frozenset[int],
                        shared: frozenset[int], neighbours: int, threshold: int
                        ) -> frozenset[int]:
    """The clients to treat as dropouts: the accused, plus reporters that overstepped."""
    cap = neighbours + 1 - threshold
    over = {v for v in uploaded if len(excluded_by[v]) > cap}
    while True:
        accused = frozenset().union(*(excluded_by[v] for v in uploaded - over)) & shared
        short = _unrebuildable(graph, excluded_by, accused | over, uploaded, threshold)
        if not short:
            return accused | over
        over |= {v for v in uploaded - over if excluded_by[v] & short}


def _unrebuildable(graph: Mapping[int, frozenset[int]], excluded_by: Mapping[int, frozenset[int]],
                   dropped: Iterable[int], uploaded: frozenset[int], threshold: int) -> set[int]:
    """Dropped clients that some survivor masked with but fewer than t survivors can rebuild
    the mask key of (holders that reported a client hold none of its shares)."""
    survivors = uploaded - set(dropped)
    short = set()
    for j in dropped:
        masked_with = [w for w in graph[j] & survivors if j not in excluded_by[w]]
        if masked_with and len(masked_with) < threshold:
            short.add(j)
    return short
