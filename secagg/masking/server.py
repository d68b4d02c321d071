"""The server side of SecAgg / SecAgg+ as a sans-IO state machine.

A :class:`ServerSession` takes client messages (:meth:`receive`) and, when the transport decides a
stage is over (everyone expected has answered, or its deadline passed), :meth:`advance` closes the
stage: clients that did not answer become dropouts, and the returned dict holds the message for
each remaining client. The session is deterministic: replaying the same accepted messages into a
fresh session rebuilds the same state, which is how a server process recovers after a restart.

A bad message (wrong config or round, unknown or dropped sender, replay, wrong size, bad
signature) raises :class:`RejectedMessage` and changes nothing: the round goes on for everyone.
Too few clients raises :class:`NotEnoughParticipants` from :meth:`advance`.

The server only ever holds public keys, sealed shares it cannot open, masked vectors, and, at the
end, the t-of-m shares that reveal exactly the masks it must remove.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from secagg.encoding.packing import PackedSum, packed_size
from secagg.errors import (
    AuthenticationFailed,
    ErrorCode,
    InvalidParameter,
    NotEnoughParticipants,
    ProtocolAbort,
    RejectedMessage,
)
from secagg.hazmat.agreement import validate_public_key
from secagg.hazmat.prg import MaskExpander
from secagg.masking import keys, wire
from secagg.masking import messages as m
from secagg.masking.accusations import resolve_accusations
from secagg.masking.config import MaskingConfig, Stage
from secagg.masking.graph import neighbours as build_graph
from secagg.masking.graph import roster_neighbours, two_hop
from secagg.masking.intake import check_envelope
from secagg.masking.limits import (
    REVEALED_SHARE_BYTES,
    SEALED_SHARE_BYTES,
    SHARE_COMMITMENTS_BYTES,
    message_limit,
)
from secagg.masking.recovery import SecretRecovery, unmask_masks
from secagg.masking.update import Aggregate

if TYPE_CHECKING:
    from secagg.identity import Roster

__all__ = ["ServerSession"]

_EXPECTED_TYPE: dict[Stage, type[Any]] = {
    Stage.ADVERTISE: m.AdvertiseKeys,
    Stage.SHARE: m.ShareKeys,
    Stage.MASKED_INPUT: m.MaskedInput,
    Stage.CONSISTENCY: m.ConsistencySignature,
    Stage.UNMASK: m.UnmaskShares,
}


#: Messages at least this long (masked vectors) are fingerprinted in a worker thread while the
#: session checks and sums them (hashlib releases the GIL; a 100k-parameter vector hashes in
#: about as long as it takes to sum).
_PARALLEL_HASH_BYTES = 1 << 16
_hasher: tuple[int, ThreadPoolExecutor] | None = None


def _fingerprint(raw: bytes) -> Callable[[], bytes]:
    """SHA-256 of ``raw``, as a callable that returns it (computed in the background if large)."""
    global _hasher
    if len(raw) < _PARALLEL_HASH_BYTES:
        digest = hashlib.sha256(raw).digest()
        return lambda: digest
    if _hasher is None or _hasher[0] != os.getpid():  # a forked child needs its own thread
        _hasher = os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="secagg-fingerprint")
    return _hasher[1].submit(lambda: hashlib.sha256(raw).digest()).result


_PROBE = m.ShareKeys(digest=bytes(32), round=0, party=0)
#: the domain label keys.share_keys_bytes puts before the encoded, unsigned message
_SHARE_KEYS_LABEL = keys.share_keys_bytes(_PROBE)[: -len(wire.encode(_PROBE))]
assert keys.share_keys_bytes(_PROBE) == _SHARE_KEYS_LABEL + wire.encode(_PROBE)


class ServerSession:
    """The aggregator's state for one round."""

    def __init__(self, config: MaskingConfig, *, participants: Iterable[int] | None = None,
                 roster: Roster | None = None) -> None:
        """``roster`` (public) is required in active mode: the server checks signatures as
        messages arrive so that a forged one never reaches the clients (who check again)."""
        self.config = config
        config.check_roster(roster)
        if participants is None:
            participants = roster.ids if roster is not None else range(config.num_clients)
        self.participants = frozenset(participants)
        if len(self.participants) != config.num_clients:
            raise InvalidParameter(f"participants lists {len(self.participants)} clients; the "
                                   f"config is for num_clients={config.num_clients}")
        if roster is not None and self.participants != set(roster.ids):
            raise InvalidParameter("participants must be the roster's client ids")
        self._roster = roster
        self._digest = config.digest()
        self._stage = Stage.ADVERTISE
        self._received: dict[Stage, dict[int, Any]] = {s: {} for s in _EXPECTED_TYPE}
        self._fingerprints: dict[Stage, dict[int, bytes]] = {s: {} for s in _EXPECTED_TYPE}
        self._advert_bytes: dict[int, bytes] = {}
        self._packed: PackedSum | None = None
        self._expected: frozenset[int] = self.participants
        self._graph: dict[int, frozenset[int]] = {}
        if config.active:
            assert roster is not None
            self._graph = roster_neighbours(roster.ids, degree=config.neighbours,
                                            roster_digest=config.roster_digest)
        self._u1: frozenset[int] = frozenset()
        self._transcript = b""
        self._consistency_signed = b""
        self._payloads: dict[int, bytes] = {}  # kept while a neighbour may still report it
        self._awaiting: dict[int, int] = {}  # client -> neighbours that shared, not yet uploaded
        self._reported: set[int] = set()  # clients some uploader reported
        self._excluded_by: dict[int, frozenset[int]] = {}  # reporter -> neighbours it excluded
        self._accused: frozenset[int] = frozenset()
        self._recovery = SecretRecovery(config)  # also remembers holders caught lying
        self._u2: frozenset[int] = frozenset()
        self._u3: frozenset[int] = frozenset()
        self._result: Aggregate | None = None
        self._raw = b""  # the encoding of the message being received
        # what to check on receipt and how to close, per stage (one table, no name building)
        self._checks: dict[Stage, Callable[[Any], None]] = {
            Stage.ADVERTISE: self._check_advertise, Stage.SHARE: self._check_share,
            Stage.MASKED_INPUT: self._check_masked_input,
            Stage.CONSISTENCY: self._check_consistency, Stage.UNMASK: self._check_unmask,
        }
        self._closers: dict[Stage, Callable[[frozenset[int]], dict[int, m.ServerMessage]]] = {
            Stage.ADVERTISE: self._close_advertise, Stage.SHARE: self._close_share,
            Stage.MASKED_INPUT: self._close_masked_input,
            Stage.CONSISTENCY: self._close_consistency, Stage.UNMASK: self._close_unmask,
        }

    # ---- public API ----------------------------------------------------------------------------

    @property
    def stage(self) -> Stage:
        return self._stage

    @property
    def expected(self) -> frozenset[int]:
        """Clients whose message for the current stage is still awaited."""
        if self._stage is Stage.DONE:
            return frozenset()
        return self._expected - set(self._received[self._stage])

    def max_message_bytes(self) -> int:
        """Upper bound on one valid client message at the current stage (for body limits)."""
        return message_limit(self.config, self._stage)

    def receive(self, message: m.ClientMessage | bytes) -> None:
        """Accept one client message for the current stage, or raise :class:`RejectedMessage`."""
        limit = self.max_message_bytes()
        if isinstance(message, bytes | bytearray | memoryview):
            raw = bytes(message)
            try:
                msg = wire.decode(raw, max_bytes=limit, borrow=True)  # a vector: not copied
            except InvalidParameter as exc:
                raise RejectedMessage(None, str(exc)) from None
        else:
            msg, raw = message, wire.encode(message)
        sender = msg.party
        stage = self._stage
        if stage is Stage.DONE:
            raise RejectedMessage(sender, "the round is already complete", ErrorCode.ROUND_COMPLETE)
        expected_type = _EXPECTED_TYPE[stage]
        fingerprint = _fingerprint(raw)  # a masked vector is hashed on another core meanwhile

        def not_replayed() -> bytes:
            digest = fingerprint()
            if any(hmac.compare_digest(seen.get(sender, b""), digest)
                   for seen in self._fingerprints.values()):
                raise RejectedMessage(sender, "replayed message (already accepted in this round)",
                                      ErrorCode.REPLAYED)
            return digest

        self._raw = raw
        try:
            check_envelope(msg, len(raw), stage=stage, digest=self._digest,
                           round_=self.config.round, expected_type=expected_type,
                           answered=self._received[stage], expected=self._expected,
                           participants=self.participants, limit=limit)
            self._checks[stage](msg)
        except RejectedMessage:
            not_replayed()  # a replay is refused as one, whatever else is wrong with it
            raise
        if isinstance(msg, m.MaskedInput):
            # Sum as vectors arrive. A vector is kept only until every neighbour that could
            # still report its sender's share box as invalid has uploaded.
            assert self._packed is not None
            self._packed.add(msg.payload)
            try:
                # (a message that passed the checks is never a replay: an accepted one of this
                # stage fails the check above, one of another stage has another type byte)
                self._fingerprints[stage][sender] = not_replayed()
            except RejectedMessage:
                self._packed.subtract(msg.payload)
                raise
            self._payloads[sender] = msg.payload
            self._excluded_by[sender] = frozenset(msg.excluded)
            msg = m.MaskedInput(digest=msg.digest, round=msg.round, party=msg.party, payload=b"",
                                excluded=msg.excluded)
            self._release_payloads(sender)
        else:
            self._fingerprints[stage][sender] = not_replayed()
            if stage is Stage.ADVERTISE:
                self._advert_bytes[sender] = raw
        self._received[stage][sender] = msg

    def advance(self) -> dict[int, m.ServerMessage]:
        """Close the current stage; returns the next message for each remaining client."""
        stage = self._stage
        if stage is Stage.DONE:
            raise ProtocolAbort(stage.value, "the round is already complete")
        answered = frozenset(self._received[stage])
        need = self.config.threshold
        if len(answered) < need:
            self._stage = Stage.DONE
            raise NotEnoughParticipants(stage.value, len(answered), need)
        try:
            out: dict[int, m.ServerMessage] = self._closers[stage](answered)
        except ProtocolAbort:  # includes NotEnoughParticipants
            self._stage = Stage.DONE
            raise
        return out

    def advance_bytes(self) -> dict[int, bytes]:
        return wire.encode_all(self.advance())

    @property
    def result(self) -> Aggregate:
        if self._result is None:
            raise ProtocolAbort(self._stage.value, "no result yet: the round has not completed")
        return self._result

    # ---- per-stage checks (no state change on failure) ------------------------------------------

    def _check_advertise(self, msg: m.AdvertiseKeys) -> None:
        try:
            validate_public_key(msg.cipher_public, what="cipher_public")
            validate_public_key(msg.mask_public, what="mask_public")
        except InvalidParameter as exc:
            raise RejectedMessage(msg.party, str(exc)) from None
        if len(msg.seed_commitment) != 32:
            raise RejectedMessage(msg.party, "seed_commitment must be 32 bytes")
        self._check_signature(msg.party, msg.signature, keys.advert_bytes(msg),
                              "key advertisement")

    def _check_signature(self, party: int, signature: bytes, signed: bytes, what: str) -> None:
        """Active mode: signed by the roster's identity for ``party``; passive: unsigned."""
        if not self.config.active:
            if signature:
                raise RejectedMessage(party, f"{what}: signature given but the round is not in "
                                      "active mode")
            return
        assert self._roster is not None
        try:
            self._roster.verify(party, signature, signed, what=what)
        except AuthenticationFailed:
            raise RejectedMessage(party, f"{what} is not signed by the identity the roster pins "
                                  "for this client") from None

    def _check_share(self, msg: m.ShareKeys) -> None:
        want = self._graph[msg.party] & self._u1
        if set(msg.sealed_shares) != want:
            raise RejectedMessage(msg.party, f"shares must be addressed to exactly the client's "
                                  f"{len(want)} neighbours")
        if any(len(b) != SEALED_SHARE_BYTES for b in msg.sealed_shares.values()):
            raise RejectedMessage(msg.party, f"each sealed share must be {SEALED_SHARE_BYTES} bytes")
        if set(msg.commitments) != want | {msg.party}:
            raise RejectedMessage(msg.party, f"share commitments must be given for exactly the "
                                  f"client's {len(want)} neighbours and itself")
        if any(len(c) != SHARE_COMMITMENTS_BYTES for c in msg.commitments.values()):
            raise RejectedMessage(msg.party, f"each share commitment must be "
                                  f"{SHARE_COMMITMENTS_BYTES} bytes")
        # what keys.share_keys_bytes(msg) returns, cut from the bytes received (not re-encoded)
        signed = _SHARE_KEYS_LABEL + wire.without_signature(self._raw, msg.signature)
        self._check_signature(msg.party, msg.signature, signed, "share keys")

    def _check_masked_input(self, msg: m.MaskedInput) -> None:
        want = packed_size(self.config.wire_length, self.config.mod_bits)
        if len(msg.payload) != want:
            raise RejectedMessage(msg.party, f"masked vector is {len(msg.payload)} bytes; "
                                  f"{self.config.wire_length} values at {self.config.mod_bits} "
                                  f"bits need {want}")
        stray = set(msg.excluded) - (self._graph[msg.party] & self._u2)
        if stray:
            raise RejectedMessage(msg.party, f"'excluded' names clients {sorted(stray)[:5]} that "
                                  "are not neighbours that shared")

    def _check_consistency(self, msg: m.ConsistencySignature) -> None:
        assert self._roster is not None
        try:
            self._roster.verify(msg.party, msg.signature,
                                self._consistency_signed,
                                what="consistency signature")
        except AuthenticationFailed:
            raise RejectedMessage(msg.party, "consistency signature is invalid") from None

    def _check_unmask(self, msg: m.UnmaskShares) -> None:
        holds = ((self._graph[msg.party] | {msg.party}) & self._u2) - self._excluded_by[msg.party]
        want_seed, want_key = holds & self._u3, holds - self._u3
        if set(msg.seed_shares) != want_seed or set(msg.mask_key_shares) != want_key \
                or set(msg.pair_keys) != want_key:
            raise RejectedMessage(msg.party, "unmask shares must cover exactly the seed shares of "
                                  "surviving neighbours and the key shares and pair keys of "
                                  "dropped ones")
        if any(len(k) != keys.MASK_KEY_BYTES for k in msg.pair_keys.values()):
            raise RejectedMessage(msg.party, f"each pair key must be {keys.MASK_KEY_BYTES} bytes")
        for share in (*msg.seed_shares.values(), *msg.mask_key_shares.values()):
            if len(share) != REVEALED_SHARE_BYTES:
                raise RejectedMessage(msg.party, f"each revealed share must be "
                                      f"{REVEALED_SHARE_BYTES} bytes (share and salt)")

    # ---- stage transitions -------------------------------------------------------------------

    def _close_advertise(self, u1: frozenset[int]) -> dict[int, m.ServerMessage]:
        adverts: dict[int, m.AdvertiseKeys] = self._received[Stage.ADVERTISE]
        self._u1 = u1
        if not self.config.active:
            self._graph = build_graph(
                {p: adverts[p].cipher_public + adverts[p].mask_public for p in u1},
                degree=self.config.neighbours, config_digest=self._digest)
        self._require_holders(u1, Stage.ADVERTISE)
        self._expected, self._stage = u1, Stage.SHARE
        if not self.config.active:
            directory = {p: self._advert_bytes[p] for p in u1}
            return {p: m.KeyDirectory(digest=self._digest, round=self.config.round, party=p,
                                      adverts=directory) for p in sorted(u1)}
        # Active mode: the graph is the roster's, so each client needs only its neighbours'
        # adverts, plus every advert's hash for the transcript the survivors will sign.
        hashes = {q: keys.advert_hash(self._advert_bytes[q]) for q in sorted(u1)}
        self._transcript = keys.advert_transcript(self._digest, self.config.round, hashes)
        return {p: m.KeyDirectory(
            digest=self._digest, round=self.config.round, party=p,
            adverts={q: self._advert_bytes[q] for q in (self._graph[p] | {p}) & u1},
            advert_hashes=hashes,
        ) for p in sorted(u1)}

    def _close_share(self, u2: frozenset[int]) -> dict[int, m.ServerMessage]:
        self._u2 = u2
        self._require_holders(u2, Stage.SHARE)
        shares: dict[int, m.ShareKeys] = self._received[Stage.SHARE]
        shared = tuple(sorted(u2))
        self._packed = PackedSum(self.config.wire_length, self.config.mod_bits)
        self._expected, self._stage = u2, Stage.MASKED_INPUT
        # v's boxes and commitments from each neighbour u that shared (the graph is symmetric;
        # every dealer addressed exactly its neighbours that advertised, a superset of u2's)
        boxes: dict[int, dict[int, bytes]] = {v: {} for v in shared}
        commits: dict[int, dict[int, bytes]] = {v: {} for v in shared}
        for u in shared:
            for v, box in shares[u].sealed_shares.items():
                if v in u2:
                    boxes[v][u] = box
            for v, commitment in shares[u].commitments.items():
                if v in u2 and v != u:
                    commits[v][u] = commitment
        self._awaiting = {v: len(boxes[v]) for v in shared}
        return {v: m.ShareDelivery(
            digest=self._digest, round=self.config.round, party=v, shared=shared,
            sealed_shares=boxes[v], commitments=commits[v],
        ) for v in shared}

    def _close_masked_input(self, uploaded: frozenset[int]) -> dict[int, m.ServerMessage]:
        accused = resolve_accusations(  # see accusations.py: reports are bounded
            excluded_by=self._excluded_by, uploaded=uploaded, shared=self._u2,
            neighbours=self.config.neighbours, threshold=self.config.threshold)
        assert self._packed is not None
        for j in sorted(accused & uploaded):
            self._packed.subtract(self._payloads[j])
        self._payloads.clear()
        self._accused = accused
        u3 = uploaded - accused
        if len(u3) < self.config.threshold:
            raise NotEnoughParticipants(Stage.MASKED_INPUT.value, len(u3), self.config.threshold)
        self._u3 = u3
        # what every survivor signs (the same bytes for all: built once, not per signature)
        self._consistency_signed = keys.consistency_bytes(self._digest, self.config.round, u3,
                                                          self._transcript)
        survivors = tuple(sorted(u3))
        self._expected = u3
        # Accused clients that uploaded get the survivor set too, so they learn at once that
        # they were left out (and why) instead of waiting for a deadline.
        told = sorted(u3 | (accused & uploaded))
        if self.config.active:
            self._stage = Stage.CONSISTENCY
            return {u: m.ConsistencyRequest(digest=self._digest, round=self.config.round, party=u,
                                            survivors=survivors) for u in told}
        self._stage = Stage.UNMASK
        return {u: m.UnmaskRequest(digest=self._digest, round=self.config.round, party=u,
                                   survivors=survivors) for u in told}

    def _close_consistency(self, u4: frozenset[int]) -> dict[int, m.ServerMessage]:
        sigs = {p: msg.signature for p, msg in self._received[Stage.CONSISTENCY].items()}
        survivors = tuple(sorted(self._u3))
        self._expected, self._stage = u4, Stage.UNMASK
        # Each client checks, per neighbourhood, the signatures of its two-hop neighbourhood.
        return {u: m.UnmaskRequest(
            digest=self._digest, round=self.config.round, party=u, survivors=survivors,
            signatures={p: sigs[p] for p in two_hop(self._graph, u) & u4},
        ) for u in sorted(u4)}

    def _close_unmask(self, u5: frozenset[int]) -> dict[int, m.ServerMessage]:
        cfg = self.config
        packed = self._packed
        assert packed is not None  # it already holds the sum of the survivors' masked vectors
        masks = unmask_masks(self._recovery, cfg, graph=self._graph, shared=self._u2,
                             survivors=self._u3, answered=u5, excluded_by=self._excluded_by,
                             adverts=self._received[Stage.ADVERTISE],
                             commitments=self._received[Stage.SHARE],
                             replies=self._received[Stage.UNMASK])
        MaskExpander().apply_many(packed.accumulator, masks, after_chunk=packed.reduce_through)
        total = packed.result()
        total_weight = int(total[-1])
        if not len(self._u3) <= total_weight <= len(self._u3) * cfg.max_weight:
            raise ProtocolAbort(Stage.UNMASK.value, "the unmasked total weight is out of range: "
                                "a client masked inconsistently")
        self._result = Aggregate(total=total[:-1], total_weight=total_weight,
                                 survivors=tuple(sorted(self._u3)),
                                 dropped=tuple(sorted(self.participants - self._u3)), config=cfg,
                                 excluded=tuple(sorted(self._accused)),
                                 corrupt_shares=tuple(sorted(self._recovery.liars)))
        self._stage = Stage.DONE
        return {}

    def _release_payloads(self, sender: int) -> None:
        """Forget vectors no neighbour can report any more, unless their sender was reported or
        reported someone (it may have to be dropped itself); on sparse graphs memory stays near
        a neighbourhood. O(k) per upload: a count of neighbours still to upload per client."""
        self._reported.update(self._excluded_by[sender])
        for j in self._graph[sender] & self._u2:
            self._awaiting[j] -= 1
        for j in self._graph[sender] | {sender}:
            if j in self._payloads and self._awaiting[j] == 0 and not self._excluded_by[j] \
                    and j not in self._reported:
                del self._payloads[j]

    def _require_holders(self, alive: frozenset[int], stage: Stage) -> None:
        """Fail early when some client can no longer have its secrets reconstructed."""
        for owner in sorted(alive):
            holders = len((self._graph[owner] | {owner}) & alive)
            if holders < self.config.threshold:
                self._stage = Stage.DONE
                raise NotEnoughParticipants(stage.value, holders, self.config.threshold,
                                            f"share holders of client {owner}")

    def __repr__(self) -> str:
        return (f"<ServerSession round={self.config.round} stage={self._stage.value} "
                f"clients={self.config.num_clients}>")

