"""Threshold CKKS, sans-IO: key generation and dealing, uploads, the server's sum, partial
decryptions with smudging, and the combine. Transport-free: every step takes and returns values;
:mod:`.transport` seals and signs what travels between parties through the server.

The scheme (a threshold variant of the multiparty CKKS of Mouchet, Troncoso-Pastoriza, Bossuat and
Hubaux, PETS 2021, with the common random polynomial fresh per chunk):

1. *Keys.* Every party draws its own ternary secret ``s_i`` with SEAL's ``KeyGenerator`` and deals
   it to all parties by replicated t-out-of-n sharing (:mod:`.sharing`). No party, and not the
   server, ever holds ``s = sum s_i``.
2. *Upload.* For chunk ``k`` of a round, every party uses the same public ``a_k`` (SEAL expands it
   from a seed bound to the round, :func:`chunk_seed`) and sends only
   ``c0_i = -a_k*s_i + e_i + Encode(m_i)``: SEAL encrypts symmetrically under ``s_i`` with its own
   ``a'`` and noise, and SEAL's decryptor turns ``(c0', a' - a_k)`` into ``c0_i``. One polynomial
   per chunk travels; ``a_k`` never does. A party never encrypts twice under one round seed.
3. *Sum.* The server adds the ``c0_i`` of the uploaders ``U``: ``(sum c0_i, a_k)`` is an
   encryption of ``sum m_i`` under ``s_U = sum_{i in U} s_i``. (Collective public key: the same
   step with a message of zero and a public seed is a party's contribution ``-a*s_i + e_i``; see
   :func:`public_key_contribution`.)
4. *Partial decryption.* The server names a decrypting set ``S`` (``|S| >= t``); each member adds
   up its assigned terms of the uploaders' secrets into ``z_j`` and returns
   ``p_j = a_k*z_j + E_j`` (SEAL's decryptor for the product, SEAL's NTT for the smudging ``E_j``,
   uniform on ``[-2^tau, 2^tau)`` from the CSPRNG). ``sum_S z_j = s_U``.
5. *Combine.* ``sum c0_i + sum_S p_j = sum Encode(m_i) + e + sum E_j``, decoded by SEAL.

What a partial decryption depends on: the round seed, ``U`` and ``S`` only -- not the aggregate
it is applied to. Whoever holds the uploads can apply it to ``sum_{U} c0_i`` itself, so the
parties, not the caller, must decide which ``U`` is decrypted (:mod:`.policy`):

4a. *Statement.* Before any partial decryption of round ``r`` a party is shown the encoded
   aggregate and the signed uploads of its ``U``. :meth:`ThresholdParty.sign_statement`
   verifies every upload against the pinned roster (setup, round, chunk range, sender), checks
   that their senders are exactly ``U``, that ``|U| >= policy.min_uploaders``, that the
   aggregate's chunk layout is theirs and that its residues are their sum (a full re-sum), then
   signs ``(setup digest, r, chunk range, U, SHA-256 of the aggregate bytes)``
   (:func:`.wire.encode_statement`). It signs at most one statement per round and refuses any
   other ``U`` or aggregate for that round.
4b. :meth:`ThresholdParty.partial_decrypt` takes the aggregate bytes and the statements the
   server gathered; it answers only for the statement this party signed itself for that round,
   the aggregate hashing to the signed digest, and ``policy.quorum`` valid signatures over that
   same statement from distinct roster members (itself included; a forged, foreign or
   mismatching one does not count). The seed is derived from the setup digest and the round, not
   taken from the caller. Every decrypted chunk (retries with another decrypting set included)
   counts against the smudging budget (``params.max_decryptions``).

State (the statement signed per round, the budget) lives in the party object. The server round
(:mod:`.session`, mode ``ckks-threshold``, ``secagg demo --mode ckks-threshold``) makes a fresh
party every round and keeps it in the client's process: a restarted client is a dropout. A
transport that runs each message in a fresh process carries the party inside the session's
sealed export (:mod:`.session_state`, through :meth:`ThresholdParty.export_fields`), which keeps
this state with the secret, so a restored party still signs once per round and stays within its
budget (a deployment that reused keys across rounds would have to persist it the same way).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from secagg.ckks.threshold.policy import DecryptionPolicy, decryption_policy, roster_corrupt
from secagg.ckks.threshold.rings import SEED_BYTES, Residues, RingContext, add_mod
from secagg.ckks.threshold.sharing import ShareBundle, assign_terms, deal, sum_assigned, terms
from secagg.ckks.threshold.smudging import smudging_ntt
from secagg.ckks.threshold.transport import setup_digest
from secagg.ckks.threshold.wire import (
    aggregate_digest,
    decode_aggregate,
    decode_statement,
    decode_upload,
    encode_statement,
    header_chunks,
)
from secagg.errors import (
    AlreadyUsed,
    InvalidParameter,
    NotEnoughParticipants,
    ProtocolAbort,
    RejectedMessage,
)
from secagg.hazmat.handles import Unpicklable

__all__ = [
    "ThresholdParty",
    "aggregate",
    "assemble_public_key",
    "chunk_seed",
    "chunks_for",
    "combine",
    "public_key_contribution",
    "round_seed",
]

_TAG = b"secagg-ckks-threshold/v1/"


def round_seed(setup_digest: bytes, round_id: int) -> bytes:
    """The public seed of one round's common polynomials, bound to the setup and the round."""
    return hashlib.sha256(_TAG + b"round" + struct.pack(">I", len(setup_digest)) + setup_digest
                          + struct.pack(">Q", round_id)).digest()


def chunk_seed(seed: bytes, chunk: int) -> bytes:
    """The 64-byte SEAL seed of chunk ``chunk``'s common ``a`` (public)."""
    return hashlib.shake_256(_TAG + b"common-a" + struct.pack(">I", len(seed)) + seed
                             + struct.pack(">Q", chunk)).digest(SEED_BYTES)


def chunks_for(ring: RingContext, length: int) -> int:
    """Ciphertext chunks (one polynomial each) that carry ``length`` reals."""
    return max(1, math.ceil(length / ring.params.reals_per_ciphertext))


def _to_slots(ring: RingContext, values: npt.NDArray[np.float64]) -> list[npt.NDArray[Any]]:
    padded = np.zeros(chunks_for(ring, values.size) * ring.n, dtype=np.float64)
    padded[: values.size] = values
    return [ring.pack(b) for b in padded.reshape(-1, ring.n)]


@dataclass(frozen=True, slots=True)
class _Statement:
    uploaders: tuple[int, ...]
    first_chunk: int
    chunks: int
    digest: bytes
    encoded: bytes


class ThresholdParty(Unpicklable):
    """One party's secret, the shares it was dealt, and the steps it takes. Redacted.

    ``identity``, ``roster`` and ``policy`` bind the party to a setup (:attr:`setup`, the digest
    of :func:`.transport.setup_digest`); an unbound party can deal, receive and encrypt but never
    signs a statement or partially decrypts. ``policy`` defaults to the roster's
    (:func:`.policy.decryption_policy` with the roster's ``corrupt_rate``); one assuming fewer
    corrupt parties than the roster is refused."""

    #: attributes a restore (:meth:`from_fields`) rebuilds rather than reads from an export: the
    #: round supplies the ring, ids, threshold, identity, roster and policy, the terms and setup
    #: follow from them, and SEAL's encryptor and decryptor from the secret
    _REBUILT = frozenset({"ring", "party_id", "party_ids", "threshold", "terms", "setup",
                          "policy", "_identity", "_roster", "_encryptor", "_own"})

    def __init__(self, ring: RingContext, party_id: int, party_ids: Sequence[int],
                 threshold: int, *, identity: Any = None, roster: Any = None,
                 policy: DecryptionPolicy | None = None) -> None:
        self._bind(ring, party_id, party_ids, threshold, identity, roster, policy)
        self._statements: dict[int, _Statement] = {}
        sk = seal.KeyGenerator(ring.context).secret_key()  # SEAL samples the ternary secret
        self._secret = ring.read_secret(sk)
        self._encryptor = seal.Encryptor(ring.context, sk)
        self._own = seal.Decryptor(ring.context, sk)
        self._bundles: dict[int, ShareBundle] = {}
        self._rounds_used: set[bytes] = set()
        self._decrypted_chunks = 0

    def _bind(self, ring: RingContext, party_id: int, party_ids: Sequence[int], threshold: int,
              identity: Any, roster: Any, policy: DecryptionPolicy | None) -> None:
        """The checks and the public setup of a party, for a new one and a restored one alike."""
        ids = tuple(sorted(party_ids))
        if party_id not in ids:
            raise InvalidParameter(f"party {party_id} is not among the parties {ids}")
        self.ring = ring
        self.party_id = party_id
        self.party_ids = ids
        self.threshold = threshold
        self.terms = terms(ids, threshold)
        self.setup: bytes | None = None
        self.policy: DecryptionPolicy | None = None
        self._identity = identity
        self._roster = roster
        if (identity is None) != (roster is None):
            raise InvalidParameter("pass both identity and roster (or neither)")
        if roster is not None:
            floor = roster_corrupt(roster.corrupt_rate, len(ids))
            if policy is None:
                policy = decryption_policy(len(ids), threshold, corrupt=floor)
            if policy.corrupt < floor:
                raise InvalidParameter(
                    f"the policy assumes {policy.corrupt} corrupt parties; the pinned roster's "
                    f"corrupt_rate {roster.corrupt_rate} means {floor} of {len(ids)}")
            missing = [i for i in ids if i not in roster.public_keys]
            if missing:
                raise InvalidParameter(f"parties {missing} are not in the pinned roster")
            key = getattr(identity, "public_key", None)
            if key is None:
                key = identity.public_bytes
            if roster.public_keys[party_id] != key:
                raise InvalidParameter(f"this identity is not party {party_id}'s in the roster")
            self.policy = policy
            self.setup = setup_digest(roster.digest(), ids, threshold, repr(ring.params),
                                      policy=policy)
        elif policy is not None:
            raise InvalidParameter("a policy needs the identity and the pinned roster")

    def export_fields(self) -> dict[str, Any]:
        """What a restore cannot rebuild: the secret, the bundles held, the statements signed,
        the round seeds encrypted under and the smudging budget spent. Only for a sealed export
        (:mod:`.session_state`): carrying the statements and the budget along is what keeps a
        restored party from signing twice or decrypting past its budget."""
        return {name: value for name, value in vars(self).items() if name not in self._REBUILT}

    @classmethod
    def from_fields(cls, ring: RingContext, party_id: int, party_ids: Sequence[int],
                    threshold: int, fields: Mapping[str, Any], *, identity: Any = None,
                    roster: Any = None, policy: DecryptionPolicy | None = None) \
            -> ThresholdParty:
        """The party :meth:`export_fields` described, bound again to the re-supplied round
        (the same checks as a new party's). SEAL's encryptor and decryptor are rebuilt from the
        secret's data-level residues: the round never switches keys, so the special prime's
        residues (zero in the rebuilt key) are never read."""
        party = cls.__new__(cls)
        party._bind(ring, party_id, party_ids, threshold, identity, roster, policy)
        secret = fields.get("_secret")
        if not isinstance(secret, np.ndarray) or secret.dtype != np.uint64 \
                or secret.shape != (ring.primes, ring.n):
            raise InvalidParameter("the exported party holds no secret of this ring's shape")
        for name, value in fields.items():
            if name in cls._REBUILT:
                raise InvalidParameter(f"the exported party carries the rebuilt attribute {name}")
            setattr(party, name, value)
        sk = ring.secret_key(secret)  # SEAL's load refuses unreduced residues
        party._encryptor = seal.Encryptor(ring.context, sk)
        party._own = seal.Decryptor(ring.context, sk)
        return party

    def __repr__(self) -> str:
        return f"<ThresholdParty {self.party_id}: secret redacted>"

    # -- keys -----------------------------------------------------------------------------

    def deal(self) -> dict[int, ShareBundle]:
        """Bundles of this party's secret for every party (its own kept, the others to seal)."""
        if self.party_id in self._bundles:
            raise AlreadyUsed("this party already dealt its secret")
        bundles = deal(self.ring, self._secret, self.party_id, self.party_ids, self.threshold)
        self._bundles[self.party_id] = bundles[self.party_id]
        return {j: b for j, b in bundles.items() if j != self.party_id}

    def receive(self, bundle: ShareBundle) -> None:
        """Keep a bundle dealt to this party (opened and verified by :mod:`.transport`)."""
        if bundle.recipient != self.party_id or bundle.dealer not in self.party_ids:
            raise InvalidParameter(f"bundle {bundle.dealer}->{bundle.recipient} is not for "
                                   f"party {self.party_id}")
        if bundle.dealer in self._bundles:
            raise AlreadyUsed(f"party {self.party_id} already holds dealer {bundle.dealer}'s "
                              "bundle")
        last = len(self.terms) - 1
        expected = {i for i in range(last) if self.party_id in self.terms[i]}
        if set(bundle.seeds) != expected or bundle.correction_index != last \
                or (bundle.correction is not None) != (self.party_id in self.terms[last]):
            raise InvalidParameter(f"dealer {bundle.dealer}'s bundle does not hold exactly the "
                                   f"terms of party {self.party_id}")
        self._bundles[bundle.dealer] = bundle

    @property
    def dealers(self) -> frozenset[int]:
        return frozenset(self._bundles)

    # -- upload ---------------------------------------------------------------------------

    def encrypt(self, values: npt.ArrayLike, seed: bytes, *, clip: float | None = None) \
            -> list[Residues]:
        """``c0`` of every chunk of ``values`` under this party's secret and the round's common
        ``a``. Refuses a second upload under the same round seed (it would reuse ``a_k``)."""
        vec = np.asarray(values, dtype=np.float64).reshape(-1)
        limit = self.ring.params.clip if clip is None else clip
        if not np.isfinite(vec).all() or (np.abs(vec) > limit).any():
            raise InvalidParameter(f"values must be finite and within the clip range "
                                   f"[-{limit}, {limit}]; clip them first")
        if seed in self._rounds_used:
            raise AlreadyUsed("this party already encrypted under this round seed")
        self._rounds_used.add(seed)
        if self.ring.params.embedding == "digits":
            plains = [self.ring.plaintext(r) for r in self.ring.codec.encode(vec)]
        else:
            plains = [self.ring.encode(slots) for slots in _to_slots(self.ring, vec)]
        return [self._encrypt_chunk(p, chunk_seed(seed, k)) for k, p in enumerate(plains)]

    def round_seed(self, round_id: int) -> bytes:
        """This setup's seed of round ``round_id`` (needs a bound party)."""
        return round_seed(self._bound(), round_id)

    def encrypt_round(self, values: npt.ArrayLike, round_id: int, *,
                      clip: float | None = None) -> list[Residues]:
        """:meth:`encrypt` under this setup's seed of ``round_id``."""
        return self.encrypt(values, self.round_seed(round_id), clip=clip)

    def _bound(self) -> bytes:
        if self.setup is None:
            raise InvalidParameter(f"party {self.party_id} is not bound to a setup (identity, "
                                   "roster, policy): it neither signs statements nor decrypts")
        return self.setup

    def _encrypt_chunk(self, plain: Any, a_seed: bytes) -> Residues:
        ring = self.ring
        fresh = seal.Ciphertext()
        self._encryptor.encrypt_symmetric(plain, fresh)  # (-a's + e + m, a')
        shifted = seal.Ciphertext()
        ring.evaluator.sub(fresh, ring.common_a(a_seed), shifted)  # (c0', a' - a)
        return ring.decrypt(self._own, shifted)  # c0' + (a' - a)s = -a s + e + m

    # -- decryption -----------------------------------------------------------------------

    def sign_statement(self, aggregate: bytes, uploads: Mapping[int, bytes], *,
                       round_id: int) -> bytes:
        """Verify the aggregate against the signed uploads it claims to sum and sign this round's
        decryption statement (step 4a). Idempotent for the same statement; any other ``U`` or
        aggregate for a round already signed is :class:`AlreadyUsed`."""
        setup = self._bound()
        assert self.policy is not None
        first, chunks = header_chunks(aggregate)
        agg = decode_aggregate(aggregate, self.ring, config_digest=setup, round_id=round_id,
                               chunks=chunks, first_chunk=first)
        users = agg.uploaders
        digest = aggregate_digest(aggregate)
        earlier = self._statements.get(round_id)
        if earlier is not None:
            if (earlier.uploaders, earlier.first_chunk, earlier.chunks, earlier.digest) \
                    == (users, first, chunks, digest):
                return earlier.encoded
            raise AlreadyUsed(f"party {self.party_id} already signed round {round_id}'s "
                              f"statement for uploaders {list(earlier.uploaders)} and aggregate "
                              f"{earlier.digest[:8].hex()}...; it signs one per round (two sums "
                              "of one round would reveal their difference)")
        need = self.policy.min_uploaders
        if len(users) < need:
            raise NotEnoughParticipants("decryption statement", len(users), need,
                                        "uploaders (the setup's policy min_uploaders)")
        missing = [i for i in users if i not in self._bundles]
        if missing:
            raise InvalidParameter(f"party {self.party_id} holds no shares of uploader(s) "
                                   f"{missing}; they cannot be in this round's sum")
        if set(uploads) != set(users):
            raise ProtocolAbort("decryption statement",
                                f"the aggregate claims uploaders {list(users)} but the uploads "
                                f"shown are from {sorted(uploads)}")
        arrays = [decode_upload(uploads[i], self.ring, roster=self._roster, config_digest=setup,
                                round_id=round_id, chunks=chunks, first_chunk=first,
                                sender=i).residues for i in users]
        if not np.array_equal(_sum_mod(self.ring, arrays), agg.residues):
            raise ProtocolAbort("decryption statement", "the aggregate is not the sum of the "
                                "signed uploads of its uploaders")
        encoded = encode_statement(self.ring, identity=self._identity, config_digest=setup,
                                   round_id=round_id, sender=self.party_id, uploaders=users,
                                   chunks=chunks, digest_of_aggregate=digest, first_chunk=first)
        self._statements[round_id] = _Statement(users, first, chunks, digest, encoded)
        return encoded

    def partial_decrypt(self, aggregate: bytes, statements: Mapping[int, bytes],
                        decryptors: Iterable[int], *, round_id: int) -> list[Residues]:
        """This party's smudged partial decryptions of round ``round_id``'s aggregate (step 4b).

        ``statements``: signer id -> encoded statement, as the server gathered them. Refused
        unless this party signed a statement for the round, ``aggregate`` hashes to its digest,
        and ``policy.quorum`` distinct roster members (this party included) validly signed that
        very statement. A retry with another decrypting set (a decryptor vanished) is allowed
        and, like every chunk, counts against the smudging budget ``params.max_decryptions``
        (the argument in :mod:`.params` covers it: the coefficients stay 0/1)."""
        setup = self._bound()
        assert self.policy is not None
        mine = self._statements.get(round_id)
        if mine is None:
            raise ProtocolAbort("partial decryption", f"party {self.party_id} has not signed a "
                                f"statement for round {round_id}; it decrypts only what it "
                                "verified and signed")
        if aggregate_digest(aggregate) != mine.digest:
            raise ProtocolAbort("partial decryption", "the aggregate is not the one this party "
                                f"signed for round {round_id}")
        signers = {self.party_id}
        for j, blob in statements.items():
            if j == self.party_id or j not in self.party_ids:
                continue
            try:
                decode_statement(blob, self.ring, roster=self._roster, config_digest=setup,
                                 round_id=round_id, chunks=mine.chunks,
                                 first_chunk=mine.first_chunk, uploaders=mine.uploaders,
                                 digest_of_aggregate=mine.digest, sender=j)
            except RejectedMessage:
                continue  # forged, foreign or for another statement: does not count
            signers.add(j)
        quorum = self.policy.quorum
        if len(signers) < quorum:
            raise NotEnoughParticipants(
                "partial decryption", len(signers), quorum,
                f"valid signatures over this party's statement for round {round_id} (quorum "
                f"max(t, floor((n + corrupt) / 2) + 1) of the setup's policy)")
        group = sorted(set(decryptors))
        if self.party_id not in group:
            raise InvalidParameter(f"party {self.party_id} is not in the decrypting set {group}")
        if not set(group) <= set(self.party_ids):
            raise InvalidParameter(f"the decrypting set {group} names non-parties")
        if len(group) < self.threshold:
            raise NotEnoughParticipants("threshold decryption", len(group), self.threshold,
                                        "decrypting set")
        budget = self.ring.params.max_decryptions
        if self._decrypted_chunks + mine.chunks > budget:
            raise AlreadyUsed(f"the smudging budget of these keys is {budget} decrypted "
                              f"chunk(s); {self._decrypted_chunks} used, {mine.chunks} asked")
        self._decrypted_chunks += mine.chunks
        return self._partial(round_seed(setup, round_id), mine.first_chunk, mine.chunks,
                             mine.uploaders, group)

    def _partial(self, seed: bytes, first: int, chunks: int, users: Sequence[int],
                 group: Sequence[int]) -> list[Residues]:
        """The bare computation, no checks (what a colluder's own code can always do)."""
        assignment = assign_terms(self.terms, sorted(group), self.threshold)
        share = sum_assigned(self.ring, {i: self._bundles[i] for i in users},
                             assignment[self.party_id])
        key = seal.Decryptor(self.ring.context, self.ring.secret_key(share))
        smudge = smudging_ntt(self.ring, self.ring.params.smudging_bits, chunks)
        out = []
        for k in range(chunks):
            a_z = self.ring.decrypt(key, self.ring.common_a(chunk_seed(seed, first + k)))
            out.append(add_mod(a_z, smudge[k], self.ring.moduli))
        return out

    # -- the collective public key (a contribution is an upload of zero) ------------------

    def public_key_contribution(self, pk_seed: bytes) -> Residues:
        """``-a*s_i + e_i`` for the public ``a`` of ``pk_seed`` (see :func:`assemble_public_key`)."""
        return public_key_contribution(self, pk_seed)


def public_key_contribution(party: ThresholdParty, pk_seed: bytes) -> Residues:
    ring = party.ring
    zero = ring.plaintext(np.zeros((ring.primes, ring.n), dtype=np.uint64))
    return party._encrypt_chunk(zero, chunk_seed(pk_seed, 0))


def assemble_public_key(ring: RingContext, contributions: Mapping[int, Residues],
                        pk_seed: bytes) -> Residues:
    """The collective public key ``(b, a)`` = ``(sum_i (-a*s_i + e_i), a)`` of the contributors,
    shape (2, primes, N). Encrypting under it needs SEAL's public-key encryptor and a larger
    smudging bound (the noise then includes ``u*e + e1*s``); the rounds here use the common-a
    uploads above instead, which are smaller and need less smudging."""
    b = np.zeros((ring.primes, ring.n), dtype=np.uint64)
    for c in contributions.values():
        b = add_mod(b, c, ring.moduli)
    a = ring.read_ct(ring.common_a(chunk_seed(pk_seed, 0)))[1]
    return np.stack([b, a])


def aggregate(ring: RingContext, uploads: Mapping[int, Sequence[Residues] | Residues]) \
        -> list[Residues]:
    """The server's sum of the uploads' ``c0`` chunk by chunk (public material only).

    An upload is a list of ``(primes, N)`` chunks or one ``(chunks, primes, N)`` array (what
    :func:`.wire.decode_upload` returns); the sum is one vectorised pass per upload."""
    if not uploads:
        raise NotEnoughParticipants("sum", 0, 1, "uploads")
    arrays = [np.asarray(u, dtype=np.uint64) for u in uploads.values()]
    lengths = {a.shape[0] if a.ndim == 3 else -1 for a in arrays}
    if len(lengths) != 1:
        raise InvalidParameter("uploads carry different numbers of chunks")
    for a in arrays:
        if a.ndim != 3 or a.shape[1:] != (ring.primes, ring.n) \
                or (a.max(axis=(0, 2)) >= ring.moduli).any():
            raise InvalidParameter("an upload chunk has the wrong shape or unreduced residues")
    return list(_sum_mod(ring, arrays))


def _sum_mod(ring: RingContext, arrays: Sequence[Residues]) -> Residues:
    """Sum of reduced ``(chunks, primes, N)`` arrays modulo each prime: plain uint64 additions,
    reduced only when the next one could overflow (at most ``2^64 / q`` terms between)."""
    q = ring.moduli[None, :, None]
    per = max(1, ((1 << 64) - 1) // (int(ring.moduli.max()) - 1) - 1)
    acc = np.array(arrays[0], dtype=np.uint64)
    pending = 1
    for a in arrays[1:]:
        if pending >= per:
            np.remainder(acc, q, out=acc)
            pending = 1
        acc += a
        pending += 1
    np.remainder(acc, q, out=acc)
    return acc


def combine(ring: RingContext, summed: Sequence[Residues],
            partials: Mapping[int, Sequence[Residues] | Residues], *, decryptors: Iterable[int],
            threshold: int, length: int) -> npt.NDArray[np.float64]:
    """``sum c0 + sum_S p_j``, decoded: the aggregate's first ``length`` reals.

    Needs the partial decryptions of every member of the announced decrypting set ``S``
    (``|S| >= threshold``); fewer is a :class:`NotEnoughParticipants`."""
    group = sorted(set(decryptors))
    if len(group) < threshold:
        raise NotEnoughParticipants("threshold decryption", len(group), threshold,
                                    "decrypting set")
    have = sorted(j for j in partials if j in group)
    if have != group:
        raise NotEnoughParticipants("threshold decryption", len(have), len(group),
                                    f"partial decryptions of the announced set {group}; "
                                    f"missing {sorted(set(group) - set(have))}")
    terms = [np.asarray(summed, dtype=np.uint64)]
    for j in group:
        p = np.asarray(partials[j], dtype=np.uint64)
        if p.shape != terms[0].shape or (p.max(axis=(0, 2)) >= ring.moduli).any():
            raise InvalidParameter(f"party {j}'s partial decryption has the wrong shape or "
                                   "unreduced residues")
        terms.append(p)
    acc = _sum_mod(ring, terms)
    if ring.params.embedding == "digits":
        out_digits: npt.NDArray[np.float64] = ring.codec.decode(acc, length)
        return out_digits
    out = np.empty(len(acc) * ring.n, dtype=np.float64)
    for k, chunk in enumerate(acc):
        out[k * ring.n: (k + 1) * ring.n] = ring.decode_reals(chunk)
    return out[:length]
