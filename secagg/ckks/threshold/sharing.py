"""Replicated ({0,1}-linear) t-out-of-n sharing of the parties' CKKS secrets.

Why not Shamir. With Shamir shares over Z_q, a decrypting set turns its shares into additive
ones with Lagrange weights; given the ``t - 1`` shares of a coalition, an honest party's
partial decryption is ``(P/Q) * (a*s) + known + E`` with ``P/Q`` a rational with a small
denominator. Then ``Q * p`` reduced modulo ``Q`` reveals ``P * e mod Q`` for the aggregate's
encryption noise ``e``, whatever the smudging ``E``: the simulation behind the smudging argument
fails as soon as two honest parties decrypt together. For n = 10, t = 6 the server can pick a
decrypting set with ``Q = 51200 > 2|e|``, and the coalition reads ``e`` exactly through 2^40 of
smudging (``tests/ckks/test_threshold_attacks.py::test_why_not_shamir_...``). Boneh et al.
(CRYPTO 2018) clear the denominators with factorials, which costs about ``2 log2(n!)`` bits of
modulus (about 43 for n = 10).

Replicated sharing has only 0/1 coefficients. Every subset ``T`` of ``n - t + 1`` parties is a
*term*; a dealer splits its secret ``s_i`` into one uniformly random polynomial ``r_{i,T}`` per
term, summing to ``s_i`` modulo q, and gives ``r_{i,T}`` to the members of ``T``. A set ``S`` of
at least ``t`` parties meets every term (``|T| + |S| > n``); each term is assigned to one of its
members in ``S`` by a public rule and each decryptor adds up its assigned terms: an additive
sharing of ``s_i`` among ``S``. A coalition of ``t - 1`` parties misses exactly the terms inside
the honest set, so it learns nothing about ``s_i``, and every honest partial decryption is a 0/1
combination of unknown uniform terms (see :mod:`.params` for the simulation).

Cost: ``C(n, t - 1)`` terms (252 for n = 10, t = 6; 3003 for n = 14, t = 7). Every random term
travels as a 64-byte seed that SEAL expands (:meth:`RingContext.uniform`); the one correcting
term travels as a full polynomial to its ``n - t + 1`` members. Past :data:`MAX_TERMS` the
federation is too large for this sharing; the scaled Shamir variant is the way there (not built).
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from secagg.ckks.threshold.rings import SEED_BYTES, Residues, RingContext, add_mod, sub_mod
from secagg.errors import InvalidParameter, NotEnoughParticipants, RejectedMessage

__all__ = ["MAX_TERMS", "ShareBundle", "assign_terms", "deal", "sum_assigned", "terms"]

MAX_TERMS = 5000
_BUNDLE = struct.Struct("<4sIIIIB")  # magic, dealer, recipient, term count, primes, has_correction
_MAGIC = b"TSH1"


@lru_cache(maxsize=64)
def terms(party_ids: tuple[int, ...], threshold: int) -> tuple[tuple[int, ...], ...]:
    """The canonical list of terms: every (n - t + 1)-subset of the sorted party ids."""
    ids = tuple(sorted(party_ids))
    if len(set(ids)) != len(ids):
        raise InvalidParameter("party ids must be distinct")
    n = len(ids)
    if not 2 <= threshold <= n:
        raise InvalidParameter(f"threshold must be in [2, {n}], found {threshold}")
    size = n - threshold + 1
    count = _binom(n, size)
    if count > MAX_TERMS:
        raise InvalidParameter(
            f"replicated sharing for n={n}, t={threshold} needs {count} terms (> {MAX_TERMS}); "
            "this federation is too large for the {0,1} sharing")
    return tuple(itertools.combinations(ids, size))


def _binom(n: int, k: int) -> int:
    from math import comb
    return comb(n, k)


def assign_terms(all_terms: Sequence[tuple[int, ...]], decryptors: Iterable[int],
                 threshold: int) -> dict[int, list[int]]:
    """Term indices each decryptor adds up: term ``k`` goes to member ``k mod m`` of its ``m``
    members in ``S`` (a public, deterministic rule that spreads the work; any rule is as safe).

    Raises :class:`NotEnoughParticipants` below the threshold."""
    s = sorted(set(decryptors))
    if len(s) < threshold:
        raise NotEnoughParticipants("threshold decryption", len(s), threshold,
                                    "partial decryptions of the aggregate")
    members = set(s)
    out: dict[int, list[int]] = {j: [] for j in s}
    for idx, term in enumerate(all_terms):
        holders = [j for j in term if j in members]
        if not holders:  # impossible when |S| >= t; a guard against a bad party list
            raise NotEnoughParticipants("threshold decryption", len(s), threshold,
                                        f"no decryptor holds term {term}")
        out[holders[idx % len(holders)]].append(idx)
    return out


@dataclass(frozen=True, slots=True, repr=False)
class ShareBundle:
    """What dealer ``dealer`` gives ``recipient``: seeds of its random terms that contain the
    recipient, and the correcting term's residues if the recipient is one of its members.

    A secret: it travels only sealed to the recipient (:mod:`.transport`)."""

    dealer: int
    recipient: int
    seeds: Mapping[int, bytes]
    correction: Residues | None
    correction_index: int

    def __repr__(self) -> str:
        return f"<ShareBundle {self.dealer}->{self.recipient}: redacted>"

    def to_bytes(self) -> bytes:
        primes = 0 if self.correction is None else int(self.correction.shape[0])
        parts = [_BUNDLE.pack(_MAGIC, self.dealer, self.recipient, len(self.seeds), primes,
                              int(self.correction is not None)),
                 struct.pack("<I", self.correction_index)]
        for idx in sorted(self.seeds):
            parts.append(struct.pack("<I", idx) + self.seeds[idx])
        if self.correction is not None:
            parts.append(np.ascontiguousarray(self.correction, "<u8").tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, ring: RingContext) -> ShareBundle:
        try:
            magic, dealer, recipient, count, primes, has_corr = _BUNDLE.unpack_from(data)
            (corr_idx,) = struct.unpack_from("<I", data, _BUNDLE.size)
        except struct.error:
            raise RejectedMessage(None, "share bundle: truncated header") from None
        if magic != _MAGIC:
            raise RejectedMessage(None, "share bundle: bad magic")
        off = _BUNDLE.size + 4
        seeds: dict[int, bytes] = {}
        if len(data) < off + count * (4 + SEED_BYTES):
            raise RejectedMessage(None, "share bundle: truncated seeds")
        for _ in range(count):
            (idx,) = struct.unpack_from("<I", data, off)
            seeds[idx] = data[off + 4: off + 4 + SEED_BYTES]
            off += 4 + SEED_BYTES
        correction = None
        if has_corr:
            if primes != ring.primes or len(data) != off + primes * ring.n * 8:
                raise RejectedMessage(None, "share bundle: correction term of the wrong size")
            correction = np.frombuffer(data, "<u8", offset=off).astype(np.uint64) \
                .reshape(primes, ring.n)
            if (correction >= ring.moduli[:, None]).any():
                raise RejectedMessage(None, "share bundle: correction term not reduced modulo q")
        elif len(data) != off:
            raise RejectedMessage(None, "share bundle: trailing bytes")
        return cls(dealer, recipient, seeds, correction, corr_idx)

    def term(self, index: int, ring: RingContext) -> Residues:
        """The residues (primes, N) of term ``index`` (a held one)."""
        if index == self.correction_index:
            if self.correction is None:
                raise InvalidParameter(f"dealer {self.dealer} gave no correcting term to "
                                       f"{self.recipient}")
            return self.correction
        seed = self.seeds.get(index)
        if seed is None:
            raise InvalidParameter(f"dealer {self.dealer} gave party {self.recipient} no "
                                   f"seed for term {index}")
        return ring.uniform(seed)


def deal(ring: RingContext, secret: Residues, dealer: int, party_ids: Sequence[int],
         threshold: int) -> dict[int, ShareBundle]:
    """Split ``secret`` (NTT residues at the data level) into the replicated terms; one bundle
    per party (the dealer's own included). Random terms come from fresh OS seeds that SEAL
    expands; the last term corrects the sum to ``secret``."""
    all_terms = terms(tuple(party_ids), threshold)
    last = len(all_terms) - 1
    seeds = [os.urandom(SEED_BYTES) for _ in range(last)]
    acc = ring.sum_uniform(seeds)
    correction = sub_mod(np.asarray(secret, dtype=np.uint64), acc, ring.moduli)
    bundles: dict[int, ShareBundle] = {}
    for j in sorted(party_ids):
        held = {idx: seeds[idx] for idx in range(last) if j in all_terms[idx]}
        bundles[j] = ShareBundle(dealer, j, held, correction if j in all_terms[last] else None,
                                 last)
    return bundles


def sum_assigned(ring: RingContext, bundles: Mapping[int, ShareBundle],
                 indices: Sequence[int]) -> Residues:
    """Sum over the dealers in ``bundles`` of their terms ``indices``: a decryptor's additive
    share of ``sum_i s_i`` (the uploaders' secrets)."""
    seeds: list[bytes] = []
    corrections: list[Residues] = []
    for bundle in bundles.values():
        for idx in indices:
            if idx == bundle.correction_index:
                corrections.append(bundle.term(idx, ring))
            elif idx in bundle.seeds:
                seeds.append(bundle.seeds[idx])
            else:
                raise InvalidParameter(f"dealer {bundle.dealer} gave party {bundle.recipient} "
                                       f"no seed for term {idx}")
    acc = ring.sum_uniform(seeds)
    for c in corrections:
        acc = add_mod(acc, c, ring.moduli)
    return acc
