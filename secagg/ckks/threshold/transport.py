"""Share bundles between parties through the server: sealed to the recipient, signed by the
dealer's pinned roster identity.

Reuses the authenticated ceremony's primitives (read-only): :func:`secagg.hazmat.sealed_box.
seal_to` (X25519 + HKDF bound to protocol, setup digest and the (dealer, recipient) pair +
ChaCha20-Poly1305, the recipient's id and box key as associated data) and Ed25519 signatures
checked against the roster (:meth:`secagg.identity.Roster.verify`). The server relays the
envelopes; it can drop one (the dealer then counts as absent for that recipient) but cannot read,
forge, re-address or swap one.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from secagg.ckks.threshold.policy import DecryptionPolicy
from secagg.ckks.threshold.rings import RingContext
from secagg.ckks.threshold.sharing import ShareBundle
from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.kdf import KeyContext, Purpose
from secagg.hazmat.sealed_box import open_box, seal_to
from secagg.hazmat.signing import SigningKey

__all__ = ["PROTOCOL", "SealedBundle", "open_bundle", "seal_bundle", "setup_digest"]

PROTOCOL = "secagg-ckks-threshold"
VERSION = 1
_TAG = b"secagg-ckks-threshold/v1/share"


class _Verifier(Protocol):
    def verify(self, client_id: int, signature: bytes, message: bytes, *, what: str) -> None: ...


def setup_digest(roster_digest: bytes, party_ids: Sequence[int], threshold: int,
                 params_repr: str, *, policy: DecryptionPolicy) -> bytes:
    """The digest every message of a setup is bound to (roster, parties, threshold, params and
    the decryption policy: corrupt count, statement quorum, minimum uploaders)."""
    ids = tuple(party_ids)
    if policy.parties != len(ids) or policy.threshold != threshold:
        raise InvalidParameter(f"the decryption policy is for {policy.parties} parties, t="
                               f"{policy.threshold}; the setup has {len(ids)}, t={threshold}")
    h = hashlib.sha256(_TAG + b"/setup")
    h.update(struct.pack(">I", len(roster_digest)) + roster_digest)
    h.update(struct.pack(">I", len(ids)) + b"".join(struct.pack(">I", i) for i in ids))
    h.update(struct.pack(">I", threshold) + struct.pack(">I", len(params_repr))
             + params_repr.encode())
    h.update(policy.to_bytes())
    return h.digest()


@dataclass(frozen=True, slots=True)
class SealedBundle:
    dealer: int
    recipient: int
    recipient_box: bytes
    sealed: bytes
    signature: bytes

    def signed_part(self, session: bytes) -> bytes:
        return b"".join([_TAG, hashlib.sha256(session).digest(),
                         struct.pack(">II", self.dealer, self.recipient), self.recipient_box,
                         hashlib.sha256(self.sealed).digest()])


def _context(session: bytes, dealer: int, recipient: int) -> KeyContext:
    return KeyContext(protocol=PROTOCOL, version=VERSION, session=session, round=0,
                      purpose=Purpose.SHARE_ENCRYPTION, pair=(dealer, recipient))


def _aad(dealer: int, recipient: int, box: bytes) -> bytes:
    return _TAG + struct.pack(">II", dealer, recipient) + box


def seal_bundle(bundle: ShareBundle, *, identity: SigningKey, recipient_box: bytes,
                session: bytes) -> SealedBundle:
    sealed = seal_to(recipient_box, bundle.to_bytes(),
                     _context(session, bundle.dealer, bundle.recipient),
                     aad=_aad(bundle.dealer, bundle.recipient, recipient_box))
    unsigned = SealedBundle(bundle.dealer, bundle.recipient, recipient_box, sealed, b"")
    return SealedBundle(bundle.dealer, bundle.recipient, recipient_box, sealed,
                        identity.sign(unsigned.signed_part(session)))


def open_bundle(envelope: SealedBundle, *, me: int, box: X25519KeyPair, roster: _Verifier,
                session: bytes, ring: RingContext) -> ShareBundle:
    """Verify the dealer's roster signature, check the envelope names this party and its box
    key, open it, and check the bundle inside matches the envelope. Raises
    :class:`AuthenticationFailed` on any mismatch."""
    if envelope.recipient != me or envelope.recipient_box != box.public_bytes:
        raise AuthenticationFailed("share envelope addressed to another party or box key")
    roster.verify(envelope.dealer, envelope.signature, envelope.signed_part(session),
                  what="share envelope")
    raw = open_box(box, envelope.sealed, _context(session, envelope.dealer, me),
                   aad=_aad(envelope.dealer, me, box.public_bytes))
    bundle = ShareBundle.from_bytes(raw, ring)
    if bundle.dealer != envelope.dealer or bundle.recipient != me:
        raise AuthenticationFailed("share bundle inside the envelope names other parties")
    return bundle
