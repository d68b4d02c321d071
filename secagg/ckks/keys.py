"""The key ceremony among clients, and the handle the round's CKKS secret key lives in.

The dealer (a client named in the config, never the server) draws a 64-byte seed with the OS
CSPRNG, derives the SEAL secret key from it, and seals the seed to the fresh X25519 key of every
peer whose advert it verified against the pinned roster (HPKE-style sealed box: X25519 + HKDF bound
to protocol, round, config and the (dealer, recipient) pair + ChaCha20-Poly1305, with the
recipient's id and box key as associated data). It signs the whole distribution (who got a box,
for which key, and the boxes) with its long-term identity key; every recipient verifies that
signature against the roster and that its own entry names its own box key. The server relays the
adverts and the boxes; it never holds a seed or a key, and it cannot substitute a key: an advert
is signed by its sender's identity, which the server does not hold.

Keys live in :class:`CKKSKey`: redacted ``repr``, no pickling or copying. The only way the secret
leaves is the greppable :meth:`CKKSKey.expose_secret_seed_for_export`; the round's other secrets
(the sketch keys) are derived inside the handle (:meth:`CKKSKey.derive`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from secagg.ckks.config import PROTOCOL, VERSION, CKKSRoundConfig
from secagg.ckks.messages import KeyAdvert, KeyBox, KeyDistribution
from secagg.ckks.wire import u32
from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes, Unpicklable
from secagg.hazmat.kdf import KeyContext, Purpose, derive_key
from secagg.hazmat.seal_codec import KEY_SEED_BYTES, SealKeys, SealSession
from secagg.hazmat.sealed_box import open_box, seal_to
from secagg.hazmat.signing import SigningKey
from secagg.identity import Roster

__all__ = ["SEALED_BOX_BYTES", "CKKSKey", "check_box_key", "deal_key", "open_key", "verify_advert"]

#: ephemeral X25519 key + nonce + the 64-byte seed + Poly1305 tag
SEALED_BOX_BYTES = 32 + 12 + KEY_SEED_BYTES + 16

# A throwaway key that only ever serves to test peers' public keys: X25519 with a low-order point
# gives the all-zero output for every private key, which `cryptography` refuses (ValueError).
_PROBE = X25519KeyPair.generate()


def check_box_key(public: bytes) -> None:
    """Refuse a malformed (not 32 bytes) or low-order X25519 public key (InvalidParameter)."""
    _PROBE.exchange(public)  # validates the length and refuses an all-zero shared secret


def verify_advert(config: CKKSRoundConfig, roster: Roster, advert: KeyAdvert) -> None:
    """Raise :class:`AuthenticationFailed` unless ``advert``'s sender signed it with its roster
    identity for this config (the box key cannot have been substituted in transit)."""
    roster.verify(advert.client_id, advert.signature, advert.signed_part(), what="key advert")


class CKKSKey(Unpicklable):
    """The round's CKKS secret key (as its seed) with the SEAL objects built from it.

    Build it through the ceremony (:func:`deal_key`, :func:`open_key`); it cannot be printed,
    pickled or copied.
    """

    __slots__ = ("_seal", "_seed")

    def __init__(self, seed: SecretBytes, session: SealSession) -> None:
        self._seed = seed
        self._seal = session.keys_from_seed(seed)

    @property
    def seal(self) -> SealKeys:
        return self._seal

    def derive(self, config: CKKSRoundConfig, purpose: Purpose) -> SecretBytes:
        """A 32-byte key for ``purpose`` (the sketch projections or the sketch seal), independent
        of the SEAL key: :func:`secagg.hazmat.kdf.derive_key` bound to protocol, version, the
        config digest and the round."""
        if purpose not in (Purpose.SKETCH, Purpose.SKETCH_SEAL):
            raise InvalidParameter(f"CKKS round keys are derived only for the sketch, not {purpose}")
        return derive_key(self._seed, KeyContext(protocol=PROTOCOL, version=VERSION,
                                                 session=config.digest(), round=config.round,
                                                 purpose=purpose))

    def expose_secret_seed_for_export(self) -> SecretBytes:
        """The seed the key is derived from. Every call site is a place the key leaves memory."""
        return self._seed

    def __repr__(self) -> str:
        return "<CKKSKey secret key: redacted>"

    __str__ = __repr__


def box_context(config: CKKSRoundConfig, recipient: int) -> KeyContext:
    return KeyContext(
        protocol=PROTOCOL,
        version=VERSION,
        session=config.digest(),
        round=config.round,
        purpose=Purpose.SEALED_BOX,
        pair=(config.dealer, recipient),
    )


def box_aad(config: CKKSRoundConfig, recipient: int, box_public: bytes) -> bytes:
    return b"secagg-ckks/v2/key-box" + config.digest() + u32(recipient) + box_public


def deal_key(
    config: CKKSRoundConfig,
    session: SealSession,
    identity: SigningKey,
    recipients: Iterable[KeyAdvert],
) -> tuple[CKKSKey, KeyDistribution]:
    """Dealer side: draw the seed, build the key, seal the seed to each of ``recipients``.

    The caller has verified every advert against the roster and its box key (the dealer's
    session does); the distribution is signed with the dealer's identity key.
    """
    seed = SecretBytes(secrets.token_bytes(KEY_SEED_BYTES), label="ckks-key-seed")
    raw = seed.expose_secret_bytes()
    boxes = tuple(
        KeyBox(
            a.client_id,
            a.box_public,
            seal_to(a.box_public, raw, box_context(config, a.client_id),
                    aad=box_aad(config, a.client_id, a.box_public)),
        )
        for a in sorted(recipients, key=lambda a: a.client_id)
    )
    unsigned = KeyDistribution(config.digest(), config.dealer, boxes, b"")
    signature = identity.sign(unsigned.signed_part())
    signed = KeyDistribution(unsigned.config_digest, unsigned.dealer, boxes, signature)
    return CKKSKey(seed, session), signed


def open_key(config: CKKSRoundConfig, session: SealSession, me: int, box_keys: X25519KeyPair,
             box: KeyBox) -> CKKSKey:
    """Recipient side: open this client's box (the caller verified the dealer's signature).

    Raises :class:`AuthenticationFailed` if the box does not open or holds the wrong length.
    """
    raw = open_box(box_keys, box.sealed, box_context(config, me),
                   aad=box_aad(config, me, box_keys.public_bytes))
    if len(raw) != KEY_SEED_BYTES:
        raise AuthenticationFailed("key box")
    return CKKSKey(SecretBytes(raw, label="ckks-key-seed"), session)
