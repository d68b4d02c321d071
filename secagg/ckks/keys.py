"""The key ceremony among clients, and the handle the round's CKKS secret key lives in.

The dealer (a client named in the config, never the server) draws a 64-byte seed with the OS
CSPRNG, derives the SEAL secret key from it, and seals the seed to every other client's X25519
key (HPKE-style sealed box: X25519 + HKDF bound to protocol, round, config and the (dealer,
recipient) pair + ChaCha20-Poly1305). The server relays the sealed boxes and the public
adverts; it never holds a seed or a key. The dealer signs the distribution with its Ed25519 key
so another client or the network cannot substitute a key.

Keys live in :class:`CKKSKey`: redacted ``repr``, no pickling or copying. The only way the secret
leaves is the greppable :meth:`CKKSKey.expose_secret_seed_for_export`.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from secagg.ckks.config import PROTOCOL, VERSION, CKKSRoundConfig
from secagg.ckks.messages import KeyAdvert, KeyDistribution, roster_digest
from secagg.errors import AuthenticationFailed, RejectedMessage
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes, Unpicklable
from secagg.hazmat.kdf import KeyContext, Purpose
from secagg.hazmat.seal_codec import KEY_SEED_BYTES, SealKeys, SealSession
from secagg.hazmat.sealed_box import open_box, seal_to
from secagg.hazmat.signing import SigningKey, verify_signature

__all__ = ["CKKSKey", "check_advert", "check_roster", "deal_key", "open_key"]


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

    def expose_secret_seed_for_export(self) -> SecretBytes:
        """The seed the key is derived from. Every call site is a place the key leaves memory."""
        return self._seed

    def __repr__(self) -> str:
        return "<CKKSKey secret key: redacted>"

    __str__ = __repr__



def _box_context(config: CKKSRoundConfig, recipient: int) -> KeyContext:
    return KeyContext(
        protocol=PROTOCOL,
        version=VERSION,
        session=config.digest(),
        round=config.round,
        purpose=Purpose.SEALED_BOX,
        pair=(config.dealer, recipient),
    )


def check_advert(config: CKKSRoundConfig, advert: KeyAdvert) -> None:
    """Refuse an advert for another config, from a stranger, or without a valid self-signature."""
    sender = advert.client_id
    if advert.config_digest != config.digest():
        raise RejectedMessage(sender, "key advert is for another round config (digest mismatch)")
    if sender not in config.client_ids:
        raise RejectedMessage(sender, "key advert from a client not in the round's client_ids")
    if len(advert.box_public) != 32 or len(advert.verify_key) != 32:
        raise RejectedMessage(sender, "key advert public keys must be 32 bytes each")
    try:
        verify_signature(advert.verify_key, advert.signature, advert.signed_part(), what="key advert")
    except AuthenticationFailed as exc:
        raise RejectedMessage(sender, str(exc)) from None


def check_roster(config: CKKSRoundConfig, me: int, box_public: bytes, adverts: tuple[KeyAdvert, ...]) -> None:
    """Refuse a roster with repeats, fewer than ``min_clients`` entries, a bad advert, or one
    that does not carry this client's own key (``me`` with ``box_public``)."""
    ids = [a.client_id for a in adverts]
    if len(set(ids)) != len(ids) or len(ids) < config.min_clients:
        raise RejectedMessage(
            None,
            f"roster has {len(ids)} entries ({len(set(ids))} distinct); need >= "
            f"{config.min_clients} distinct clients",
        )
    for advert in adverts:
        check_advert(config, advert)
    if not any(a.client_id == me and a.box_public == box_public for a in adverts):
        raise RejectedMessage(None, f"roster does not carry client {me}'s own key")


def deal_key(
    config: CKKSRoundConfig, session: SealSession, signer: SigningKey, adverts: tuple[KeyAdvert, ...]
) -> tuple[CKKSKey, KeyDistribution]:
    """Dealer side: draw the seed, build the key, seal the seed to every other advertised client.

    The caller has checked the roster (:func:`check_roster`)."""
    seed = SecretBytes(secrets.token_bytes(KEY_SEED_BYTES), label="ckks-key-seed")
    roster = roster_digest(adverts)
    boxes = tuple(
        (
            a.client_id,
            seal_to(a.box_public, seed.expose_secret_bytes(), _box_context(config, a.client_id), aad=roster),
        )
        for a in adverts
        if a.client_id != config.dealer
    )
    unsigned = KeyDistribution(config.digest(), config.dealer, roster, boxes, b"")
    signed = replace(unsigned, signature=signer.sign(unsigned.signed_part()))
    return CKKSKey(seed, session), signed


def open_key(
    config: CKKSRoundConfig,
    session: SealSession,
    me: int,
    box_keys: X25519KeyPair,
    adverts: tuple[KeyAdvert, ...],
    distribution: KeyDistribution,
) -> CKKSKey:
    """Recipient side: check the roster, the dealer's signature over it, then open this client's box."""
    check_roster(config, me, box_keys.public_bytes, adverts)
    dealer = next((a for a in adverts if a.client_id == config.dealer), None)
    if dealer is None or distribution.dealer != config.dealer:
        raise RejectedMessage(config.dealer, "key delivery does not come from the configured dealer")
    if distribution.roster != roster_digest(adverts):
        raise RejectedMessage(config.dealer, "key distribution was made for another roster")
    try:
        verify_signature(
            dealer.verify_key, distribution.signature, distribution.signed_part(), what="key distribution"
        )
        raw = open_box(box_keys, distribution.box_for(me), _box_context(config, me), aad=distribution.roster)
    except AuthenticationFailed as exc:
        raise RejectedMessage(config.dealer, str(exc)) from None
    return CKKSKey(SecretBytes(raw, label="ckks-key-seed"), session)
