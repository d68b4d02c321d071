"""The untrusted aggregator of a CKKS round, sans-IO, from public material only.

It holds the round config, a SEAL context with public parameters, the clients' public keys and
the sealed key boxes it relays, and running encrypted sums. It has no secret key and no way to
get one: the dealer's seed reaches the others sealed to their X25519 keys.

Every upload is checked before it touches the sum (config digest, round, sender, signature,
number of ciphertexts, and per ciphertext: SEAL header, size, parameters, level, scale,
reduced coefficients). A bad upload raises :class:`RejectedMessage` naming the rule and the
ciphertext; the sender counts as dropped and the round goes on for everyone else. Dropouts
simply never appear in the sum.
"""

from __future__ import annotations

import enum
from typing import Any

from secagg.ckks.client import session_for
from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.keys import check_advert
from secagg.ckks.layout import Layout
from secagg.ckks.messages import (
    Aggregate,
    KeyAdvert,
    KeyDelivery,
    KeyDistribution,
    KeyRequest,
    Receipt,
    Upload,
    roster_digest,
)
from secagg.errors import (
    AlreadyUsed,
    AuthenticationFailed,
    NotEnoughParticipants,
    RejectedMessage,
)
from secagg.hazmat.seal_codec import CiphertextRejected
from secagg.hazmat.signing import verify_signature

__all__ = ["CKKSServer", "ServerStage"]


class ServerStage(enum.Enum):
    ADVERTS = "collecting key adverts"
    KEYS = "waiting for the dealer's key distribution"
    UPLOADS = "collecting encrypted updates"
    DONE = "aggregate released"


class CKKSServer:
    """Relays the key ceremony and sums encrypted updates. Never decrypts; cannot."""

    def __init__(self, config: CKKSRoundConfig) -> None:
        self.config = config
        self.stage = ServerStage.ADVERTS
        self._digest = config.digest()
        self._session = session_for(config)
        self._layout = Layout(config.update_size, self._session.slots)
        self._adverts: dict[int, KeyAdvert] = {}
        self._distribution: KeyDistribution | None = None
        self._delivery = b""
        self._sums: list[Any] | None = None
        self._receipts: list[Receipt] = []
        self.rejections: dict[int, str] = {}

    def __repr__(self) -> str:
        return (
            f"<CKKSServer round={self.config.round} stage={self.stage.name} "
            f"accepted={len(self._receipts)} rejected={len(self.rejections)}>"
        )

    @property
    def accepted(self) -> tuple[int, ...]:
        return tuple(r.client_id for r in self._receipts)

    def _require(self, stage: ServerStage, action: str) -> None:
        if self.stage is not stage:
            raise AlreadyUsed(f"server cannot {action} while {self.stage.value}")

    # -- key ceremony relay ------------------------------------------------------------------

    def receive_advert(self, data: bytes) -> None:
        self._require(ServerStage.ADVERTS, "take key adverts")
        advert = KeyAdvert.from_bytes(data)
        check_advert(self.config, advert)
        if advert.client_id in self._adverts:
            raise RejectedMessage(advert.client_id, "duplicate key advert")
        self._adverts[advert.client_id] = advert

    def _roster(self) -> tuple[KeyAdvert, ...]:
        return tuple(self._adverts[i] for i in sorted(self._adverts))

    def key_request(self) -> bytes:
        """Close the advert stage; the bytes go to the dealer."""
        self._require(ServerStage.ADVERTS, "request the key")
        if len(self._adverts) < self.config.min_clients:
            raise NotEnoughParticipants("key ceremony", len(self._adverts), self.config.min_clients)
        if self.config.dealer not in self._adverts:
            raise NotEnoughParticipants(
                "key ceremony", len(self._adverts), self.config.min_clients, "the dealer did not advertise"
            )
        self.stage = ServerStage.KEYS
        return KeyRequest(self._digest, self._roster()).to_bytes()

    def receive_key_distribution(self, data: bytes) -> None:
        self._require(ServerStage.KEYS, "take the key distribution")
        dealer = self.config.dealer
        dist = KeyDistribution.from_bytes(data, sender=dealer)
        if dist.config_digest != self._digest or dist.dealer != dealer:
            raise RejectedMessage(dealer, "key distribution is for another config or dealer")
        if dist.roster != roster_digest(self._roster()):
            raise RejectedMessage(dealer, "key distribution was made for another roster")
        try:
            verify_signature(
                self._adverts[dealer].verify_key, dist.signature, dist.signed_part(), what="key distribution"
            )
        except AuthenticationFailed as exc:
            raise RejectedMessage(dealer, str(exc)) from None
        self._distribution = dist
        # One message for everyone: all boxes travel, because the dealer's signature covers the
        # full set, and each box opens only for its recipient.
        self._delivery = KeyDelivery(self._digest, self._roster(), dist).to_bytes()
        self.stage = ServerStage.UPLOADS

    def key_delivery(self, client_id: int) -> bytes:
        """What to relay to ``client_id``: the roster and the dealer's signed distribution."""
        if self._distribution is None:
            raise AlreadyUsed("server has no key distribution yet")
        self._distribution.box_for(client_id)  # raises if the dealer sealed nothing to this client
        return self._delivery

    # -- aggregation -------------------------------------------------------------------------

    def receive_upload(self, data: bytes, *, sender: int | None = None) -> None:
        """Check one upload completely, then add it to the sums; raise RejectedMessage if bad.

        ``sender`` is who the transport says sent it (when it knows); a rejected message from a
        known sender marks that sender as dropped for the round.
        """
        self._require(ServerStage.UPLOADS, "take uploads")
        try:
            upload, digest, cts = self._validate(data, sender)
        except RejectedMessage as exc:
            # Only the transport-authenticated sender is marked dropped: a message that merely
            # claims to be from client i must not get client i excluded.
            if sender is not None and sender in self._adverts and sender not in self.accepted:
                self.rejections.setdefault(sender, exc.reason)
            raise
        if self._sums is None:
            self._sums = cts
        else:
            for acc, ct in zip(self._sums, cts, strict=True):
                self._session.add_inplace(acc, ct)
        self._receipts.append(Receipt(upload.client_id, digest, upload.signature))

    def _validate(self, data: bytes, sender: int | None) -> tuple[Upload, bytes, list[Any]]:
        upload = Upload.from_bytes(data, sender=sender)
        who = upload.client_id
        if sender is not None and sender != who:
            raise RejectedMessage(sender, f"upload claims to come from client {who}")
        if upload.config_digest != self._digest or upload.round != self.config.round:
            raise RejectedMessage(who, "upload is for another round config or round")
        if who not in self._adverts:
            raise RejectedMessage(who, "upload from a client without a key advert this round")
        if who in self.accepted:
            raise RejectedMessage(who, "duplicate upload; the first one is already in the sum")
        if who in self.rejections:
            raise RejectedMessage(who, "client was already rejected this round (counts as dropped)")
        digest = upload.digest()
        try:
            verify_signature(
                self._adverts[who].verify_key, upload.signature, digest, what=f"upload of client {who}"
            )
        except AuthenticationFailed as exc:
            raise RejectedMessage(who, f"{exc} (tampered or not signed by the sender)") from None
        if len(upload.chunks) != self._layout.chunks:
            raise RejectedMessage(
                who,
                f"upload has {len(upload.chunks)} ciphertexts, the round expects "
                f"{self._layout.chunks} for {self.config.update_size} values",
            )
        cts = []
        for i, blob in enumerate(upload.chunks):
            try:
                cts.append(self._session.load(blob, what=f"ciphertext {i}"))
            except CiphertextRejected as exc:
                raise RejectedMessage(who, str(exc)) from None
        return upload, digest, cts

    def aggregate(self) -> bytes:
        """Close the round: the encrypted sum and the receipts, for the clients to decrypt."""
        self._require(ServerStage.UPLOADS, "aggregate")
        if self._sums is None or len(self._receipts) < self.config.min_clients:
            raise NotEnoughParticipants("aggregate", len(self._receipts), self.config.min_clients)
        chunks = tuple(self._session.dump(ct) for ct in self._sums)
        self.stage = ServerStage.DONE
        return Aggregate(self._digest, self.config.round, tuple(self._receipts), chunks).to_bytes()

    def stored_messages(self) -> list[bytes]:
        """Everything the server keeps about the round, as bytes (what a durable store holds)."""
        out = [a.to_bytes() for a in self._roster()]
        if self._distribution is not None:
            out.append(self._distribution.to_bytes())
        out.extend(r.upload_digest + r.signature for r in self._receipts)
        if self._sums is not None:
            out.extend(self._session.dump(ct) for ct in self._sums)
        return out
