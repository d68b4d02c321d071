"""The two survivor checks a client makes before it reveals any share (active mode).

After the masked inputs the server announces the survivor set S and each client signs it (with
the round's advert transcript). A server that shows different clients different sets could make
some holders of a client u reveal u's seed share and others u's mask-key share, and strip u's
masks. Before revealing, a client therefore requires:

1. :func:`own_holders_alive` -- S keeps at least t of the holders whose masks it applied
   (itself included); otherwise a server that "drops" its neighbours could strip them
   (Bell et al. 2020, section 4);
2. :func:`quorum_gap` -- for each owner u whose share it reveals, at least t of u's own holders
   signed exactly S. Honest clients sign once, so two different sets can both reach that quorum
   in u's neighbourhood only if at least 2t - m of u's m holders are corrupt -- the event the
   parameter finder bounds. Hence every honest holder of u reveals the same kind of share of u.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from secagg.errors import AuthenticationFailed
from secagg.identity import Roster
from secagg.masking.graph import holders_of, two_hop

__all__ = ["consistency_refusal", "own_holders_alive", "quorum_gap", "survivor_refusal",
           "valid_signers"]


def own_holders_alive(included: frozenset[int], me: int, survivors: Iterable[int]) -> int:
    """How many of the holders whose masks ``me`` applied (and ``me``) are in S."""
    return len((included | {me}) & set(survivors))


def valid_signers(roster: Roster, signatures: Mapping[int, bytes], signed: bytes,
                  candidates: Iterable[int]) -> set[int]:
    """The candidates whose signature over ``signed`` verifies against the pinned roster (an
    invalid signature simply does not count, so a malicious peer cannot make anyone abort)."""
    valid = set()
    for party in sorted(candidates):
        try:
            roster.verify(party, signatures[party], signed, what="consistency signature")
        except AuthenticationFailed:
            continue
        valid.add(party)
    return valid


def quorum_gap(graph: Mapping[int, frozenset[int]], owners: Iterable[int], signers: set[int],
               threshold: int) -> tuple[int, int] | None:
    """The first owner whose holders signed fewer than ``threshold`` times, with that count."""
    for u in sorted(owners):
        have = len(signers & holders_of(graph, u))
        if have < threshold:
            return u, have
    return None


def consistency_refusal(roster: Roster, graph: Mapping[int, frozenset[int]], me: int,
                        included: frozenset[int], survivors: tuple[int, ...],
                        signatures: Mapping[int, bytes], signed: bytes, threshold: int, *,
                        insecure_global: bool = False) -> str | None:
    """Why ``me`` must not reveal its shares for this unmask request (check 2), or None.

    Only signatures from ``me``'s two-hop neighbourhood count (its holders' holders), unless
    ``insecure_global`` restores the old rule of t signatures from anyone (positive controls).
    """
    stray = set(signatures) - set(survivors)
    if stray:
        return (f"consistency signatures from clients {sorted(stray)[:5]} that are not in the "
                "survivor set")
    candidates = set(signatures) if insecure_global else set(signatures) & two_hop(graph, me)
    signers = valid_signers(roster, signatures, signed, candidates)
    if insecure_global:
        if len(signers) < threshold:
            return "the unmask request lacks threshold-many survivor signatures"
        return None
    gap = quorum_gap(graph, included | {me}, signers, threshold)
    if gap is not None:
        return (f"only {gap[1]} of client {gap[0]}'s share holders confirmed the survivor set; "
                f"need {threshold} (consistency check per neighbourhood)")
    return None


def survivor_refusal(me: int, survivors: tuple[int, ...], shared: frozenset[int],
                     included: frozenset[int], threshold: int, *,
                     insecure_global: bool = False) -> str | None:
    """Why ``me`` must not go on with this survivor set S (check 1), or None."""
    if not set(survivors) <= shared:
        return "the survivor set names clients that never shared keys"
    if me not in survivors:
        return ("the server reports this client as dropped although it uploaded its input (a "
                "neighbour may have reported its share box as invalid)")
    if insecure_global:
        if len(survivors) < threshold:
            return f"only {len(survivors)} survivors; threshold is {threshold}"
        return None
    alive = own_holders_alive(included, me, survivors)
    if alive < threshold:
        return (f"the survivor set keeps only {alive} of this client's share holders; threshold "
                f"is {threshold} (refusing to reveal shares)")
    return None
