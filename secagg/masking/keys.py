"""Every key and authenticated byte string of the masking protocol, bound to its context.

Both state machines derive keys only through here, so the context a key is bound to (config
digest as session, round, purpose, ordered pair) is written once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping
from typing import Literal

from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import KeyContext, Purpose, derive_key
from secagg.hazmat.shamir import SHARE_BYTES
from secagg.masking import wire
from secagg.masking.config import PROTOCOL_NAME, PROTOCOL_VERSION
from secagg.masking.messages import AdvertiseKeys, ShareKeys

__all__ = [
    "advert_bytes",
    "advert_hash",
    "advert_transcript",
    "consistency_bytes",
    "pairwise_mask_key",
    "revealed_share_ok",
    "seed_commitment",
    "self_mask_key",
    "share_associated_data",
    "share_box_plaintext",
    "share_commitments",
    "share_key",
    "share_keys_bytes",
    "split_share_box",
]


def _context(digest: bytes, round_: int, purpose: Purpose, pair: tuple[int, int]) -> KeyContext:
    return KeyContext(protocol=PROTOCOL_NAME, version=PROTOCOL_VERSION, session=digest,
                      round=round_, purpose=purpose, pair=pair)


#: Mask keys are 128-bit AES keys (AES-128-CTR masks), derived from 256-bit secrets.
MASK_KEY_BYTES = 16


def pairwise_mask_key(own: X25519KeyPair, peer_public: bytes, me: int, peer: int,
                      digest: bytes, round_: int) -> SecretBytes:
    """The mask key both ends of the pair (me, peer) derive; the pair is ordered (min, max)."""
    pair = (min(me, peer), max(me, peer))
    return derive_key(own.exchange(peer_public), _context(digest, round_, Purpose.PAIRWISE_MASK, pair),
                      length=MASK_KEY_BYTES)


def self_mask_key(seed: SecretBytes, me: int, digest: bytes, round_: int) -> SecretBytes:
    return derive_key(seed, _context(digest, round_, Purpose.SELF_MASK, (me, me)),
                      length=MASK_KEY_BYTES)


def share_key(own: X25519KeyPair, peer_public: bytes, src: int, dst: int,
              digest: bytes, round_: int) -> SecretBytes:
    """The AEAD key for shares sent from ``src`` to ``dst`` (directional)."""
    return derive_key(own.exchange(peer_public),
                      _context(digest, round_, Purpose.SHARE_ENCRYPTION, (src, dst)))


def share_associated_data(digest: bytes, round_: int, src: int, dst: int) -> bytes:
    """AEAD associated data for a share: binds sender, recipient, round and config."""
    return b"secagg-share" + digest + struct.pack(">QII", round_, src, dst)


def seed_commitment(seed: SecretBytes, me: int, digest: bytes, round_: int) -> bytes:
    """A hiding commitment to the 256-bit self-mask seed, to check its reconstruction."""
    return hashlib.sha256(b"secagg-seed-commitment" + digest + struct.pack(">QI", round_, me)
                          + seed.expose_secret_bytes()).digest()


#: Salt of each share commitment, sent inside the sealed box and revealed with the share. It
#: makes the commitment hiding: t - 1 colluding holders fix a share up to the secret, so an
#: unsalted hash of it would let them test guesses of a low-entropy secret.
SALT_BYTES = 16
COMMITMENT_BYTES = 32
ShareKind = Literal["key", "seed"]


def _share_commitment(kind: ShareKind, share: bytes, salt: bytes, dealer: int, holder: int,
                      digest: bytes, round_: int) -> bytes:
    return hashlib.sha256(b"secagg-share-commitment-" + kind.encode() + digest
                          + struct.pack(">QII", round_, dealer, holder) + salt + share).digest()


def share_commitments(key_share: SecretBytes, seed_share: SecretBytes, key_salt: bytes,
                      seed_salt: bytes, dealer: int, holder: int, digest: bytes,
                      round_: int) -> bytes:
    """The dealer's commitment to the two shares ``holder`` holds: key part, then seed part.

    Bound to dealer, holder, round and config, so it cannot be replayed for another pair.
    """
    return (_share_commitment("key", key_share.expose_secret_bytes(), key_salt, dealer, holder,
                              digest, round_)
            + _share_commitment("seed", seed_share.expose_secret_bytes(), seed_salt, dealer,
                                holder, digest, round_))


#: The shares a client holds for one owner: mask-key share, seed share, and their salts.
HeldShares = tuple[SecretBytes, SecretBytes, bytes, bytes]


def share_box_plaintext(key_share: SecretBytes, seed_share: SecretBytes, key_salt: bytes,
                        seed_salt: bytes) -> bytes:
    """What a dealer seals to one holder: both shares, then both salts."""
    return (key_share.expose_secret_bytes() + seed_share.expose_secret_bytes() + key_salt
            + seed_salt)


def split_share_box(plain: bytes) -> HeldShares | None:
    """An opened share box as (key share, seed share, key salt, seed salt); None if its length
    is wrong."""
    n, salt = SHARE_BYTES, SALT_BYTES
    if len(plain) != 2 * n + 2 * salt:
        return None
    return (SecretBytes(plain[:n], label="shamir-share"),
            SecretBytes(plain[n : 2 * n], label="shamir-share"),
            plain[2 * n : 2 * n + salt], plain[2 * n + salt :])


def revealed_share_ok(kind: ShareKind, revealed: bytes, commitments: bytes, dealer: int,
                      holder: int, digest: bytes, round_: int) -> bool:
    """Whether a share revealed at the unmask stage (share || salt) is the one the dealer
    committed to for this holder (constant-time comparison)."""
    if len(revealed) != SHARE_BYTES + SALT_BYTES or len(commitments) != 2 * COMMITMENT_BYTES:
        return False
    want = commitments[:COMMITMENT_BYTES] if kind == "key" else commitments[COMMITMENT_BYTES:]
    got = _share_commitment(kind, revealed[:SHARE_BYTES], revealed[SHARE_BYTES:], dealer, holder,
                            digest, round_)
    return hmac.compare_digest(got, want)


def consistency_bytes(digest: bytes, round_: int, survivors: Iterable[int],
                      transcript: bytes) -> bytes:
    """What each survivor signs in the consistency round (active mode).

    ``transcript`` (:func:`advert_transcript`) hashes every advert of this round, each client's
    fresh keys included, so a signature cannot be replayed into another round that reuses the
    same config: the verifier's own fresh advert is in the transcript it checks against.
    """
    ids = sorted(survivors)
    return (b"secagg-consistency" + digest + transcript
            + struct.pack(f">QI{len(ids)}I", round_, len(ids), *ids))


def advert_hash(raw_advert: bytes) -> bytes:
    """SHA-256 of one encoded (signed) advert, as listed in the key directory."""
    return hashlib.sha256(b"secagg-advert" + raw_advert).digest()


def advert_transcript(digest: bytes, round_: int, hashes: Mapping[int, bytes]) -> bytes:
    """The round's advert transcript: every advertiser's id and advert hash, in id order."""
    h = hashlib.sha256(b"secagg-advert-transcript" + digest + struct.pack(">QI", round_, len(hashes)))
    for party in sorted(hashes):
        h.update(struct.pack(">I", party) + hashes[party])
    return h.digest()


def advert_bytes(advert: AdvertiseKeys) -> bytes:
    """What a client signs when it advertises its keys (active mode): the advert minus its
    signature, under a domain label."""
    return b"secagg-advertise" + wire.encode(dataclasses.replace(advert, signature=b""))


def share_keys_bytes(shares: ShareKeys) -> bytes:
    """What a dealer signs at the share stage (active mode): its boxes and its commitments, so
    that its commitments are evidence anyone can check against its roster identity."""
    return b"secagg-share-keys" + wire.encode(dataclasses.replace(shares, signature=b""))
