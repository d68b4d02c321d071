"""The CKKS round's messages: frozen dataclasses that turn into bytes and back.

Every message carries the round config's digest (which binds the pinned roster), so a client and a
server holding different configs fail loudly on the first message. Signatures are Ed25519 by the
sender's long-term *identity* key (:class:`secagg.identity.Identity`), verified against the pinned
roster; each covers a domain label, the config digest and every field it authenticates.

Frames (``wire.frame``: magic, kind, length-prefixed fields); the field that names the sender of a
client message is field 1 (advert, key distribution) or field 2 (upload), as before:

=================  ==========================================================================
advert             config digest, client id (u32), X25519 box key (32), identity signature
key request        config digest, [advert, ...]
key distribution   config digest, dealer id (u32), [recipient (u32) || box key (32) || sealed
                   box, ...], dealer's identity signature
key delivery       config digest, key distribution
upload             config digest, round (u64), client id (u32), [ciphertext, ...], sealed
                   sketch, identity signature
aggregate          config digest, round (u64), [[client id, chunks digest, sealed sketch,
                   signature], ...], [ciphertext, ...]
=================  ==========================================================================
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from secagg.ckks.wire import frame, join_fields, split_fields, u32, u64, unframe
from secagg.errors import RejectedMessage

__all__ = [
    "BOX_PUBLIC_BYTES",
    "SIGNATURE_BYTES",
    "Aggregate",
    "KeyAdvert",
    "KeyBox",
    "KeyDelivery",
    "KeyDistribution",
    "KeyRequest",
    "Kind",
    "Receipt",
    "Upload",
    "upload_signed_bytes",
]

BOX_PUBLIC_BYTES = 32
SIGNATURE_BYTES = 64
DIGEST_BYTES = 32

_ADVERT_LABEL = b"secagg-ckks/v2/advert"
_KEYS_LABEL = b"secagg-ckks/v2/key-distribution"
_CHUNKS_LABEL = b"secagg-ckks/v2/upload-chunks"
_UPLOAD_LABEL = b"secagg-ckks/v2/upload"


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


def _exact(raw: bytes, size: int, what: str, sender: int | None) -> bytes:
    if len(raw) != size:
        raise RejectedMessage(sender, f"{what} must be {size} bytes, found {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class KeyAdvert:
    """A client's fresh X25519 key for the round, signed with its long-term identity key."""

    config_digest: bytes
    client_id: int
    box_public: bytes
    signature: bytes

    def signed_part(self) -> bytes:
        return _ADVERT_LABEL + self.config_digest + u32(self.client_id) + self.box_public

    def to_bytes(self) -> bytes:
        return frame(Kind.ADVERT, [self.config_digest, u32(self.client_id), self.box_public, self.signature])

    @classmethod
    def from_bytes(cls, data: bytes, sender: int | None = None) -> KeyAdvert:
        d, cid, box, sig = unframe(data, expected=Kind.ADVERT, count=4, names=_NAMES, sender=sender)
        who = _int(cid, 4, "client id", sender)
        return cls(
            _exact(d, DIGEST_BYTES, "config digest", who),
            who,
            _exact(box, BOX_PUBLIC_BYTES, "X25519 box key", who),
            _exact(sig, SIGNATURE_BYTES, "advert signature", who),
        )


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """Server -> every advertised client: the adverts the server accepted (the dealer deals)."""

    config_digest: bytes
    adverts: tuple[KeyAdvert, ...]

    def to_bytes(self) -> bytes:
        adverts = join_fields([a.to_bytes() for a in self.adverts])
        return frame(Kind.KEY_REQUEST, [self.config_digest, adverts])

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRequest:
        d, adverts = unframe(data, expected=Kind.KEY_REQUEST, count=2, names=_NAMES)
        return cls(d, tuple(KeyAdvert.from_bytes(a) for a in split_fields(adverts, what="adverts")))


@dataclass(frozen=True, slots=True)
class KeyBox:
    """The round's key seed sealed to ``recipient``'s advertised X25519 key ``box_public``."""

    recipient: int
    box_public: bytes
    sealed: bytes


@dataclass(frozen=True, slots=True)
class KeyDistribution:
    """Dealer -> server: the key seed sealed to each verified peer, signed by the dealer's identity."""

    config_digest: bytes
    dealer: int
    boxes: tuple[KeyBox, ...]
    signature: bytes

    def _boxes_field(self) -> bytes:
        return join_fields([u32(b.recipient) + b.box_public + b.sealed for b in self.boxes])

    def signed_part(self) -> bytes:
        boxes = hashlib.sha256(self._boxes_field()).digest()
        return _KEYS_LABEL + self.config_digest + u32(self.dealer) + boxes

    @property
    def recipients(self) -> tuple[int, ...]:
        return tuple(b.recipient for b in self.boxes)

    def box_for(self, client_id: int) -> KeyBox | None:
        return next((b for b in self.boxes if b.recipient == client_id), None)

    def to_bytes(self) -> bytes:
        return frame(
            Kind.KEY_DISTRIBUTION, [self.config_digest, u32(self.dealer), self._boxes_field(), self.signature]
        )

    @classmethod
    def from_bytes(cls, data: bytes, sender: int | None = None) -> KeyDistribution:
        d, dealer, boxes, sig = unframe(
            data, expected=Kind.KEY_DISTRIBUTION, count=4, names=_NAMES, sender=sender
        )
        parsed = []
        for raw in split_fields(boxes, what="key boxes", sender=sender):
            if len(raw) < 4 + BOX_PUBLIC_BYTES:
                raise RejectedMessage(sender, "a key box is truncated")
            parsed.append(KeyBox(int.from_bytes(raw[:4], "big"), raw[4:36], raw[36:]))
        return cls(
            _exact(d, DIGEST_BYTES, "config digest", sender),
            _int(dealer, 4, "dealer id", sender),
            tuple(parsed),
            _exact(sig, SIGNATURE_BYTES, "key distribution signature", sender),
        )


@dataclass(frozen=True, slots=True)
class KeyDelivery:
    """Server -> each keyed client (the dealer too, as its go signal): the signed distribution."""

    config_digest: bytes
    distribution: KeyDistribution

    def to_bytes(self) -> bytes:
        return frame(Kind.KEY_DELIVERY, [self.config_digest, self.distribution.to_bytes()])

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyDelivery:
        d, dist = unframe(data, expected=Kind.KEY_DELIVERY, count=2, names=_NAMES)
        return cls(d, KeyDistribution.from_bytes(dist))


def upload_signed_bytes(
    config_digest: bytes, round: int, client_id: int, chunks_digest: bytes, sealed_sketch: bytes
) -> bytes:
    """What an upload's identity signature covers (also rebuilt from an aggregate's receipt)."""
    return (
        _UPLOAD_LABEL
        + config_digest
        + u64(round)
        + u32(client_id)
        + chunks_digest
        + u32(len(sealed_sketch))
        + sealed_sketch
    )


@dataclass(frozen=True, slots=True)
class Upload:
    """Client -> server: the encrypted, weighted update (seeded ciphertexts), the sealed sketch
    of those ciphertexts, and the sender's identity signature over all of it."""

    config_digest: bytes
    round: int
    client_id: int
    chunks: tuple[bytes, ...]
    sealed_sketch: bytes
    signature: bytes

    def chunks_digest(self) -> bytes:
        """SHA-256 of the label, config, round, sender and every ciphertext (length-prefixed)."""
        h = hashlib.sha256(
            _CHUNKS_LABEL + self.config_digest + u64(self.round) + u32(self.client_id) + u32(len(self.chunks))
        )
        for c in self.chunks:
            h.update(u32(len(c)))
            h.update(c)
        return h.digest()

    def signed_bytes(self, chunks_digest: bytes | None = None) -> bytes:
        digest = self.chunks_digest() if chunks_digest is None else chunks_digest
        return upload_signed_bytes(self.config_digest, self.round, self.client_id, digest, self.sealed_sketch)

    def to_bytes(self) -> bytes:
        return frame(
            Kind.UPLOAD,
            [
                self.config_digest,
                u64(self.round),
                u32(self.client_id),
                join_fields(self.chunks),
                self.sealed_sketch,
                self.signature,
            ],
        )

    @classmethod
    def from_bytes(cls, data: bytes, sender: int | None = None) -> Upload:
        d, rnd, cid, chunks, sketch, sig = unframe(
            data, expected=Kind.UPLOAD, count=6, names=_NAMES, sender=sender
        )
        client = _int(cid, 4, "client id", sender)
        return cls(
            _exact(d, DIGEST_BYTES, "config digest", client),
            _int(rnd, 8, "round", client),
            client,
            tuple(split_fields(chunks, what="upload chunks", sender=client)),
            sketch,
            _exact(sig, SIGNATURE_BYTES, "upload signature", client),
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a client needs to check one contribution to the aggregate without its ciphertexts."""

    client_id: int
    chunks_digest: bytes
    sealed_sketch: bytes
    signature: bytes

    def signed_bytes(self, config_digest: bytes, round: int) -> bytes:
        return upload_signed_bytes(config_digest, round, self.client_id, self.chunks_digest,
                                   self.sealed_sketch)


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
        receipts = join_fields([
            join_fields([u32(r.client_id), r.chunks_digest, r.sealed_sketch, r.signature])
            for r in self.receipts
        ])
        fields = [self.config_digest, u64(self.round), receipts, join_fields(self.chunks)]
        return frame(Kind.AGGREGATE, fields)

    @classmethod
    def from_bytes(cls, data: bytes) -> Aggregate:
        d, rnd, receipts, chunks = unframe(data, expected=Kind.AGGREGATE, count=4, names=_NAMES)
        parsed = []
        for raw in split_fields(receipts, what="receipts"):
            cid, digest, sketch, sig = split_fields(raw, count=4, what="a receipt")
            parsed.append(
                Receipt(
                    _int(cid, 4, "receipt client id", None),
                    _exact(digest, DIGEST_BYTES, "receipt chunks digest", None),
                    sketch,
                    _exact(sig, SIGNATURE_BYTES, "receipt signature", None),
                )
            )
        blobs = tuple(split_fields(chunks, what="aggregate chunks"))
        return cls(d, _int(rnd, 8, "round", None), tuple(parsed), blobs)
