"""The untrusted aggregator of a CKKS round as a sans-IO state machine, from public material only.

A :class:`ServerSession` takes client messages (:meth:`ServerSession.receive`) and, when the
transport decides a stage is over (everyone expected has answered, or its deadline passed),
:meth:`ServerSession.advance` closes the stage and returns the next message for each remaining
client. The shape is :class:`secagg.masking.ServerSession`'s::

    server = ServerSession(config, roster=pinned_roster)
    server.receive(advert_bytes)            # RejectedMessage on bad input: nothing changes
    outgoing = server.advance()             # {client_id: bytes}; NotEnoughParticipants if too few
    ...
    server.result.aggregate                 # the encrypted sum the clients verify and decrypt

Stages (:class:`ServerStage`), what each expects, and what closing it sends:

* ``advert``: every participant's key advert (its X25519 box key, signed with its roster
  identity; a low-order or malformed key is refused). Close: the key request (all accepted
  adverts) to every advertised client; the dealer deals from it, the others answer nothing.
* ``key-distribution``: the dealer's signed distribution (boxes only for advertised clients,
  each for the key that client advertised). Close: one key delivery, the same bytes, to the
  dealer and to every client it sealed a box to.
* ``upload``: every keyed client's signed, encrypted update with its sealed sketch. Each upload
  is checked completely (config, round, sender, identity signature, sizes, and per ciphertext
  SEAL header, parameters, level, scale, reduced coefficients) before it touches the sum. Close:
  the aggregate (the encrypted sum with every contributor's signed receipt) to each contributor.

A bad message raises :class:`~secagg.errors.RejectedMessage` (a
:class:`~secagg.ckks.checks.MessageRefused` naming the check) and changes nothing; a client whose
messages are all refused is simply a dropout when the stage closes, so one malformed or
malicious client never stops the round for the others. The session is deterministic: replaying
the accepted messages into a fresh session rebuilds the same state. It reads no clock: deadlines
and timings are the driver's.

The server holds the config, the pinned roster (public keys), a SEAL context with public
parameters, the adverts, the sealed key boxes it cannot open, and running encrypted sums. It never
holds the seed or the key.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from secagg.ckks.checks import Check, MessageRefused
from secagg.ckks.client import session_for
from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.intake import admit
from secagg.ckks.keys import SEALED_BOX_BYTES, check_box_key, verify_advert
from secagg.ckks.layout import Layout
from secagg.ckks.messages import (
    BOX_PUBLIC_BYTES,
    SIGNATURE_BYTES,
    Aggregate,
    KeyAdvert,
    KeyDelivery,
    KeyDistribution,
    KeyRequest,
    Receipt,
    Upload,
)
from secagg.ckks.packing import PackedKind, pack_ciphertext, packed_size, unpack_ciphertexts
from secagg.ckks.sketch import projections_for, sealed_sketch_bytes
from secagg.errors import (
    AuthenticationFailed,
    InvalidParameter,
    NotEnoughParticipants,
    ProtocolAbort,
    RejectedMessage,
)
from secagg.hazmat.seal_codec import CiphertextRejected, max_blob_bytes
from secagg.identity import Roster

__all__ = ["ServerResult", "ServerSession", "ServerStage"]

_FRAME = 5  # magic + kind
_FIELD = 4  # u32 length prefix


class ServerStage(enum.Enum):
    ADVERT = "advert"
    KEYS = "key-distribution"
    UPLOAD = "upload"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class ServerResult:
    """What a CKKS round releases on the server side: the *encrypted* aggregate and who is in it."""

    aggregate: bytes
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]


class ServerSession:
    """The aggregator's state for one CKKS round. Never decrypts; cannot."""

    def __init__(
        self,
        config: CKKSRoundConfig,
        *,
        participants: Iterable[int] | None = None,
        roster: Roster,
    ) -> None:
        if roster.digest() != config.roster_digest:
            raise InvalidParameter(
                "the round config is bound to another roster (roster_digest differs from the pinned "
                f"roster {roster.federation!r}); build the config from the federation's roster"
            )
        outside = sorted(set(config.client_ids) - set(roster.ids))
        if outside:
            raise InvalidParameter(f"the round config names client(s) {outside[:8]}, not in the roster")
        self.config = config
        self.roster = roster
        self.participants = frozenset(config.client_ids if participants is None else participants)
        if not self.participants <= set(config.client_ids) or config.dealer not in self.participants:
            raise InvalidParameter(
                f"participants must be a subset of the config's client_ids that includes the dealer "
                f"(client {config.dealer}), found {sorted(self.participants)[:8]}"
            )
        self._digest = config.digest()
        self._seal = session_for(config)
        self._layout = Layout(config.update_size, self._seal.slots)
        self._moduli = self._seal.level_moduli
        self._stage = ServerStage.ADVERT
        self._seen: set[bytes] = set()
        self._adverts: dict[int, KeyAdvert] = {}
        self._distribution: KeyDistribution | None = None
        self._keyed: frozenset[int] = frozenset()
        self._sums: list[Any] | None = None
        self._receipts: dict[int, Receipt] = {}
        self._result: ServerResult | None = None

    def __repr__(self) -> str:
        return (
            f"<ServerSession round={self.config.round} stage={self._stage.value} "
            f"accepted={len(self._receipts)}>"
        )

    # ---- public API ----------------------------------------------------------------------------

    @property
    def stage(self) -> ServerStage:
        return self._stage

    @property
    def expected(self) -> frozenset[int]:
        """Clients whose message for the current stage is still awaited."""
        if self._stage is ServerStage.ADVERT:
            return self.participants - set(self._adverts)
        if self._stage is ServerStage.KEYS:
            return frozenset() if self._distribution is not None else frozenset({self.config.dealer})
        if self._stage is ServerStage.UPLOAD:
            return self._keyed - set(self._receipts)
        return frozenset()

    @property
    def accepted(self) -> tuple[int, ...]:
        """Clients whose upload is in the sum so far (sorted)."""
        return tuple(sorted(self._receipts))

    @property
    def keyed(self) -> frozenset[int]:
        """Clients that received the round key (the dealer and its box recipients)."""
        return self._keyed

    def max_message_bytes(self) -> int:
        """Upper bound on one valid client message at the current stage (for body limits)."""
        p = self.config.params
        if self._stage is ServerStage.ADVERT:
            return _FRAME + 4 * _FIELD + 32 + 4 + BOX_PUBLIC_BYTES + SIGNATURE_BYTES
        if self._stage is ServerStage.KEYS:
            box = _FIELD + 4 + BOX_PUBLIC_BYTES + SEALED_BOX_BYTES
            return _FRAME + 4 * _FIELD + 32 + 4 + len(self.participants) * box + SIGNATURE_BYTES
        if self._stage is ServerStage.UPLOAD:
            blob = _FIELD + (packed_size(PackedKind.SEEDED, p.poly_modulus_degree, self._moduli)
                             if p.packed else max_blob_bytes(p.poly_modulus_degree, p.level_primes))
            return (_FRAME + 6 * _FIELD + 32 + 8 + 4 + self._layout.chunks * blob
                    + sealed_sketch_bytes(p.level_primes, projections_for(self._moduli))
                    + SIGNATURE_BYTES)
        return 0

    def receive(self, message: bytes) -> None:
        """Accept one client message for the current stage, or raise :class:`RejectedMessage`.

        A refused message changes nothing: the round goes on, and its sender is a dropout unless
        a valid message follows before the stage closes.
        """
        data, fingerprint = admit(message, stage=self._stage.value,
                                  done=self._stage is ServerStage.DONE,
                                  limit=self.max_message_bytes(), seen=self._seen)
        if self._stage is ServerStage.ADVERT:
            self._receive_advert(data)
        elif self._stage is ServerStage.KEYS:
            self._receive_distribution(data)
        else:
            self._receive_upload(data)
        self._seen.add(fingerprint)

    def advance(self) -> dict[int, bytes]:
        """Close the current stage; returns the next message for each remaining client."""
        stage = self._stage
        try:
            if stage is ServerStage.ADVERT:
                out = self._close_adverts()
            elif stage is ServerStage.KEYS:
                out = self._close_keys()
            elif stage is ServerStage.UPLOAD:
                out = self._close_uploads()
            else:
                raise ProtocolAbort(stage.value, "the round is already complete")
        except NotEnoughParticipants:
            self._stage = ServerStage.DONE
            raise
        return out

    @property
    def result(self) -> ServerResult:
        if self._result is None:
            raise ProtocolAbort(self._stage.value, "no result yet: the round has not completed")
        return self._result

    def stored_messages(self) -> list[bytes]:
        """Everything the server keeps about the round, as bytes (what a durable store holds)."""
        out = [self._adverts[i].to_bytes() for i in sorted(self._adverts)]
        if self._distribution is not None:
            out.append(self._distribution.to_bytes())
        out.extend(r.chunks_digest + r.sealed_sketch + r.signature for r in self._receipts.values())
        if self._sums is not None:
            out.extend(self._seal.dump(ct) for ct in self._sums)
        return out

    # ---- per-stage checks (no state change on failure) ------------------------------------------

    def _receive_advert(self, data: bytes) -> None:
        advert = KeyAdvert.from_bytes(data)
        who = advert.client_id
        if advert.config_digest != self._digest:
            raise MessageRefused(who, Check.MESSAGE_FORMAT, "key advert is for another round config")
        if who not in self.participants:
            raise MessageRefused(who, Check.MESSAGE_FORMAT,
                                 f"client {who} is not a participant of this round")
        if who in self._adverts:
            raise MessageRefused(who, Check.MESSAGE_FORMAT,
                                 "duplicate key advert: a second, different advert")
        self._verify_advert(advert)
        self._check_box_key(advert)
        self._adverts[who] = advert

    def _verify_advert(self, advert: KeyAdvert) -> None:
        try:
            verify_advert(self.config, self.roster, advert)
        except AuthenticationFailed:
            raise MessageRefused(advert.client_id, Check.ADVERT_SIGNATURE,
                                 "key advert is not signed by the sender's roster identity") from None

    def _check_box_key(self, advert: KeyAdvert) -> None:
        try:
            check_box_key(advert.box_public)
        except InvalidParameter:
            raise MessageRefused(advert.client_id, Check.BOX_KEY,
                                 "the X25519 box key is malformed or a low-order point") from None

    def _receive_distribution(self, data: bytes) -> None:
        dealer = self.config.dealer
        dist = KeyDistribution.from_bytes(data, sender=dealer)
        if dist.config_digest != self._digest or dist.dealer != dealer:
            raise MessageRefused(dealer, Check.MESSAGE_FORMAT,
                                 "key distribution is for another round config or from another dealer")
        if self._distribution is not None:
            raise MessageRefused(dealer, Check.MESSAGE_FORMAT, "duplicate key distribution")
        self._verify_distribution(dist)
        recipients = dist.recipients
        if len(set(recipients)) != len(recipients):
            raise MessageRefused(dealer, Check.MESSAGE_FORMAT, "the key distribution lists a recipient twice")
        for box in dist.boxes:
            advert = self._adverts.get(box.recipient)
            if advert is None or box.recipient == dealer:
                raise MessageRefused(dealer, Check.MESSAGE_FORMAT,
                                     f"a key box is addressed to client {box.recipient}, who did not "
                                     "advertise a key this round")
            if box.box_public != advert.box_public:
                raise MessageRefused(dealer, Check.BOX_BINDING,
                                     f"the key box for client {box.recipient} names another key than "
                                     "the one it advertised")
            if len(box.sealed) != SEALED_BOX_BYTES:
                raise MessageRefused(dealer, Check.MESSAGE_FORMAT,
                                     f"the key box for client {box.recipient} is {len(box.sealed)} "
                                     f"bytes, expected {SEALED_BOX_BYTES}")
        if len(recipients) + 1 < self.config.min_clients:
            raise MessageRefused(dealer, Check.MIN_CLIENTS,
                                 f"the dealer keyed {len(recipients) + 1} client(s); min_clients is "
                                 f"{self.config.min_clients}")
        self._distribution = dist

    def _verify_distribution(self, dist: KeyDistribution) -> None:
        try:
            self.roster.verify(self.config.dealer, dist.signature, dist.signed_part(),
                               what="key distribution")
        except AuthenticationFailed:
            raise MessageRefused(self.config.dealer, Check.DISTRIBUTION_SIGNATURE,
                                 "key distribution is not signed by the dealer's roster identity") from None

    def _receive_upload(self, data: bytes) -> None:
        upload = Upload.from_bytes(data)
        who = upload.client_id
        if upload.config_digest != self._digest or upload.round != self.config.round:
            raise MessageRefused(who, Check.MESSAGE_FORMAT, "upload is for another round config or round")
        if who not in self._keyed:
            raise MessageRefused(who, Check.MESSAGE_FORMAT,
                                 f"client {who} holds no key this round, so it cannot upload")
        if who in self._receipts:
            raise MessageRefused(who, Check.MESSAGE_FORMAT,
                                 "duplicate upload; the first one is already in the sum")
        want = sealed_sketch_bytes(self.config.params.level_primes, projections_for(self._moduli))
        if len(upload.sealed_sketch) != want:
            raise MessageRefused(who, Check.MESSAGE_FORMAT,
                                 f"sealed sketch is {len(upload.sealed_sketch)} bytes, expected {want}")
        if len(upload.chunks) != self._layout.chunks:
            raise MessageRefused(who, Check.CIPHERTEXT,
                                 f"upload has {len(upload.chunks)} ciphertexts, the round expects "
                                 f"{self._layout.chunks} for {self.config.update_size} values")
        chunks_digest = upload.chunks_digest()
        try:
            self.roster.verify(who, upload.signature, upload.signed_bytes(chunks_digest), what="upload")
        except AuthenticationFailed:
            raise MessageRefused(who, Check.UPLOAD_SIGNATURE,
                                 f"upload of client {who} is not signed by its roster identity "
                                 "(tampered or forged)") from None
        blobs: Sequence[bytes] = upload.chunks
        if self.config.params.packed:  # strict decode, then SEAL's checked loader on the rebuilt objects
            try:
                c0s, seeds = unpack_ciphertexts(blobs, PackedKind.SEEDED, self._seal.n, self._moduli,
                                                what=lambda i: f"ciphertext {i}", sender=who)
            except RejectedMessage as exc:
                raise MessageRefused(who, Check.CIPHERTEXT, exc.reason) from None
            blobs = [self._seal.join_seeded(c0, seed) for c0, seed in zip(c0s, seeds, strict=True)]
        cts = []
        for i, blob in enumerate(blobs):
            try:
                cts.append(self._seal.load(blob, what=f"ciphertext {i}"))
            except CiphertextRejected as exc:
                raise MessageRefused(who, Check.CIPHERTEXT, str(exc)) from None
        # Everything checked: only now does the upload touch the sum.
        if self._sums is None:
            self._sums = cts
        else:
            for acc, ct in zip(self._sums, cts, strict=True):
                self._seal.add_inplace(acc, ct)
        self._receipts[who] = Receipt(who, chunks_digest, upload.sealed_sketch, upload.signature)

    # ---- stage transitions -------------------------------------------------------------------

    def _close_adverts(self) -> dict[int, bytes]:
        dealer, need = self.config.dealer, self.config.min_clients
        if dealer not in self._adverts:
            raise NotEnoughParticipants(
                ServerStage.ADVERT.value, len(self._adverts), need,
                f"the dealer (client {dealer}) sent no valid key advert; only it makes the round's key",
            )
        if len(self._adverts) < need:
            raise NotEnoughParticipants(ServerStage.ADVERT.value, len(self._adverts), need)
        request = KeyRequest(self._digest, tuple(self._adverts[i] for i in sorted(self._adverts))).to_bytes()
        self._stage = ServerStage.KEYS
        return dict.fromkeys(sorted(self._adverts), request)

    def _close_keys(self) -> dict[int, bytes]:
        dist = self._distribution
        if dist is None:
            raise NotEnoughParticipants(
                ServerStage.KEYS.value, 0, self.config.min_clients,
                f"the dealer (client {self.config.dealer}) sent no valid key distribution; no one "
                "else can make the round's key",
            )
        self._keyed = frozenset({self.config.dealer, *dist.recipients})
        delivery = KeyDelivery(self._digest, dist).to_bytes()
        self._stage = ServerStage.UPLOAD
        return dict.fromkeys(sorted(self._keyed), delivery)

    def _aggregate_blob(self, ct: Any) -> bytes:
        """One summed ciphertext as sent: packed (both polynomials) in packed rounds, else SEAL's."""
        if self.config.params.packed:
            return pack_ciphertext(PackedKind.FULL, self._seal.coefficients(ct, what="sum"), self._moduli)
        return self._seal.dump(ct)

    def _close_uploads(self) -> dict[int, bytes]:
        need = self.config.min_clients
        if self._sums is None or len(self._receipts) < need:
            raise NotEnoughParticipants(ServerStage.UPLOAD.value, len(self._receipts), need)
        contributors = self.accepted
        aggregate = Aggregate(
            self._digest, self.config.round, tuple(self._receipts[i] for i in contributors),
            tuple(self._aggregate_blob(ct) for ct in self._sums),
        ).to_bytes()
        self._result = ServerResult(aggregate, contributors,
                                    tuple(sorted(self.participants - set(contributors))))
        self._stage = ServerStage.DONE
        return dict.fromkeys(contributors, aggregate)

