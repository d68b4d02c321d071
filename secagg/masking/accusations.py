"""Which clients the server drops when neighbours report their share boxes as invalid.

A client whose share box a neighbour could not open, or whose shares did not match its own
commitment, is reported in that neighbour's masked input (``excluded``) and treated as a
dropout: its vector comes back out of the sum and its masks are removed like any dropout's
(from its rebuilt mask key, or, when too few of its holders can rebuild that, from the pair
keys its maskers reveal: :mod:`.recovery`). Reports are unsigned claims about boxes only the two
ends can open, so the server cannot tell a true report from a false one. It bounds them: an
honest client never reports more than :func:`report_cap` neighbours (it refuses the round
first), so a client that does is dropped itself and its reports ignored. Nobody is dropped for having
reported, so a dealer that sends bad boxes to some holders cannot push them out of the sum.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["report_cap", "resolve_accusations"]


def report_cap(neighbours: int, threshold: int) -> int:
    """The most neighbours an honest client reports: k - t = m - t - 1, and at least 1.

    With k - t, a reporter and its reported neighbours never take more than m - t of a
    neighbourhood's holders, so one malicious enterprise that reports the most it may and then
    vanishes leaves every client t holders (with m - t it could sink the round). When k = t (a
    small federation's full graph) that would leave no room for a single bad box, and one
    enterprise sending garbage would sink every round; there one report is allowed, and
    report-then-vanish can end a round, which SECURITY.md states.
    """
    return max(1, neighbours - threshold)


def resolve_accusations(*, excluded_by: Mapping[int, frozenset[int]], uploaded: frozenset[int],
                        shared: frozenset[int], neighbours: int, threshold: int
                        ) -> frozenset[int]:
    """The clients to treat as dropouts: the accused, and reporters that overstepped."""
    cap = report_cap(neighbours, threshold)
    over = frozenset(v for v in uploaded if len(excluded_by[v]) > cap)
    accused = frozenset().union(*(excluded_by[v] for v in uploaded - over)) & shared
    return accused | over
