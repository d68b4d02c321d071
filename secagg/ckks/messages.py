"""The CKKS round's messages: frozen dataclasses that turn into bytes and back.

Every message carries the round config's digest, so a client and a server holding different
configs (parameters, roster, round) fail loudly on the first message. Signatures (Ed25519) cover
a domain label, the config digest and every field they authenticate.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from secagg.ckks.wire import frame, join_fields, split_fields, u32, u64, unframe
from secagg.errors import RejectedMessage

__all__ = [
    "Aggregate",
    "KeyAdvert",
    "KeyDelivery",
    "KeyDistribution",
    "KeyRequest",
    "Kind",
    "Receipt",
    "Upload",
]


class Kind(enum.IntEnum):
    ADVERT = 1
    KEY_REQUEST = 2
    KEY_DISTRIBUTION = 3
    KEY_DELIVERY = 4
    UPLOAD = 5
    AGGREGATE = 6


_NAMES = {k.value: k.name.lower().replace("_", " ") for k in Kind}


def _int(raw: bytes, size: int, what: str, sender: int | None) -> int:
    if len(raw) != size:
        raise RejectedMessage(sender, f"{what} must be {size} bytes, found {len(raw)}")
    return int.from_bytes(raw, "big")


@dataclass(frozen=True, slots=True)
class KeyAdvert:
    """A client's public keys for the round: X25519 (to receive the sealed key), Ed25519 (to sign)."""

    config_digest: bytes
    client_id: int
    box_public: bytes
    verify_key: bytes
    signature: bytes  # self-signature: proves possession of the Ed25519 key

    def signed_part(self) -> bytes:
        return (
            b"secagg-ckks/advert"
            + self.config_digest
            + u32(self.client_id)
            + (self.box_public + self.verify_key)
        )

    def to_bytes(self) -> bytes:
        return frame(
            Kind.ADVERT,
            [self.config_digest, u32(self.client_id), self.box_public, self.verify_key, self.signature],
        )

    @classmethod
    def from_bytes(cls, data: bytes, sender: int | None = None) -> KeyAdvert:
        d, cid, box, vk, sig = unframe(data, expected=Kind.ADVERT, count=5, names=_NAMES, sender=sender)
        return cls(d, _int(cid, 4, "client id", sender), box, vk, sig)


def roster_digest(adverts: tuple[KeyAdvert, ...]) -> bytes:
    """Binds the key distribution to exactly the set of advertised keys."""
    return hashlib.sha256(b"".join(a.signed_part() for a in adverts)).digest()


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """Server -> dealer: the roster of everyone who advertised keys."""

    config_digest: bytes
    adverts: tuple[KeyAdvert, ...]

    def to_bytes(self) -> bytes:
        return frame(
            Kind.KEY_REQUEST, [self.config_digest, join_fields([a.to_bytes() for a in self.adverts])]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRequest:
        d, adverts = unframe(data, expected=Kind.KEY_REQUEST, count=2, names=_NAMES)
        return cls(d, tuple(KeyAdvert.from_bytes(a) for a in split_fields(adverts)))


@dataclass(frozen=True, slots=True)
class KeyDistribution:
    """Dealer -> server: the round's key seed sealed to each other client, signed by the dealer."""

    config_digest: bytes
    dealer: int
    roster: bytes  # roster_digest of the adverts the dealer sealed to
    boxes: tuple[tuple[int, bytes], ...]
    signature: bytes

    def _boxes_field(self) -> bytes:
        return join_fields([u32(r) + blob for r, blob in self.boxes])

    def signed_part(self) -> bytes:
        return (
            b"secagg-ckks/keys"
            + self.config_digest
            + u32(self.dealer)
            + self.roster
            + hashlib.sha256(self._boxes_field()).digest()
        )

    def box_for(self, client_id: int) -> bytes:
        for recipient, blob in self.boxes:
            if recipient == client_id:
                return blob
        raise RejectedMessage(self.dealer, f"the key distribution has no box for client {client_id}")

    def to_bytes(self) -> bytes:
        return frame(
            Kind.KEY_DISTRIBUTION,
            [self.config_digest, u32(self.dealer), self.roster, self._boxes_field(), self.signature],
        )

    @classmethod
    def from_bytes(cls, data: bytes, sender: int | None = None) -> KeyDistribution:
        d, dealer, roster, boxes, sig = unframe(
            data, expected=Kind.KEY_DISTRIBUTION, count=5, names=_NAMES, sender=sender
        )
        parsed = []
        for raw in split_fields(boxes, what="key boxes", sender=sender):
            if len(raw) < 4:
                raise RejectedMessage(sender, "a key box is truncated")
            parsed.append((int.from_bytes(raw[:4], "big"), raw[4:]))
        return cls(d, _int(dealer, 4, "dealer id", sender), roster, tuple(parsed), sig)


@dataclass(frozen=True, slots=True)
class KeyDelivery:
    """Server -> one client: the roster and the dealer's signed distribution (only its box)."""

    config_digest: bytes
    adverts: tuple[KeyAdvert, ...]
    distribution: KeyDistribution

    def to_bytes(self) -> bytes:
        return frame(
            Kind.KEY_DELIVERY,
            [
                self.config_digest,
                join_fields([a.to_bytes() for a in self.adverts]),
                self.distribution.to_bytes(),
            ],
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyDelivery:
        d, adverts, dist = unframe(data, expected=Kind.KEY_DELIVERY, count=3, names=_NAMES)
        return cls(
            d, tuple(KeyAdvert.from_bytes(a) for a in split_fields(adverts)), KeyDistribution.from_bytes(dist)
        )


@dataclass(frozen=True, slots=True)
class Upload:
    """Client -> server: one encrypted, weighted update (seeded ciphertexts), signed."""

    config_digest: bytes
    round: int
    client_id: int
    chunks: tuple[bytes, ...]
    signature: bytes

    def digest(self) -> bytes:
        """What the signature covers: label, config, round, sender and every chunk."""
        h = hashlib.sha256(
            b"secagg-ckks/upload"
            + self.config_digest
            + u64(self.round)
            + u32(self.client_id)
            + u32(len(self.chunks))
        )
        for c in self.chunks:
            h.update(u32(len(c)))
            h.update(c)
        return h.digest()

    def to_bytes(self) -> bytes:
        return frame(
            Kind.UPLOAD,
            [
                self.config_digest,
                u64(self.round),
                u32(self.client_id),
                join_fields(self.chunks),
                self.signature,
            ],
        )

    @classmethod
    def from_bytes(cls, data: bytes, sender: int | None = None) -> Upload:
        d, rnd, cid, chunks, sig = unframe(data, expected=Kind.UPLOAD, count=5, names=_NAMES, sender=sender)
        client = _int(cid, 4, "client id", sender)
        return cls(
            d,
            _int(rnd, 8, "round", client),
            client,
            tuple(split_fields(chunks, what="upload chunks", sender=client)),
            sig,
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof that ``client_id`` uploaded the update with ``upload_digest`` (its signature)."""

    client_id: int
    upload_digest: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Server -> clients: the encrypted sum, who is in it, and their signed receipts."""

    config_digest: bytes
    round: int
    receipts: tuple[Receipt, ...]
    chunks: tuple[bytes, ...]

    @property
    def contributors(self) -> tuple[int, ...]:
        return tuple(r.client_id for r in self.receipts)

    def to_bytes(self) -> bytes:
        receipts = join_fields([u32(r.client_id) + r.upload_digest + r.signature for r in self.receipts])
        return frame(
            Kind.AGGREGATE, [self.config_digest, u64(self.round), receipts, join_fields(self.chunks)]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Aggregate:
        d, rnd, receipts, chunks = unframe(data, expected=Kind.AGGREGATE, count=4, names=_NAMES)
        parsed = []
        for raw in split_fields(receipts, what="receipts"):
            if len(raw) != 4 + 32 + 64:
                raise RejectedMessage(None, f"a receipt has {len(raw)} bytes, expected 100")
            parsed.append(Receipt(int.from_bytes(raw[:4], "big"), raw[4:36], raw[36:]))
        return cls(
            d,
            _int(rnd, 8, "round", None),
            tuple(parsed),
            tuple(split_fields(chunks, what="aggregate chunks")),
        )
