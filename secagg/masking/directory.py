"""What a client checks in the key directory before it shares anything.

Every advert must decode, carry 32-byte X25519 keys (low-order points are refused by the
exchanges the client runs next), be for this round and config, be signed by the identity the
pinned roster gives its sender (active mode), and repeat no key already advertised. In active
mode the directory's transcript (every advert's hash) must list exactly the adverts delivered,
this client's own included: its fresh advert makes the transcript, and so every consistency
signature bound to it, unique to this round. A failed check raises :class:`ProtocolAbort`; the
session turns it into its own abort (which also wipes its secrets).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from secagg.errors import AuthenticationFailed, InvalidParameter, ProtocolAbort
from secagg.hazmat.agreement import validate_public_key
from secagg.identity import Roster
from secagg.masking import keys, wire
from secagg.masking import messages as m
from secagg.masking.config import MaskingConfig

__all__ = ["parse_adverts", "transcript_of"]


def _refuse(reason: str) -> ProtocolAbort:
    return ProtocolAbort("client", reason)


def parse_adverts(config: MaskingConfig, digest: bytes, raw_adverts: Mapping[int, bytes],
                  roster: Roster | None) -> dict[int, m.AdvertiseKeys]:
    """The directory's adverts, each checked (see the module docstring)."""
    adverts: dict[int, m.AdvertiseKeys] = {}
    seen: set[bytes] = set()
    for party, raw in raw_adverts.items():
        try:
            adv: m.AdvertiseKeys = wire.decode(raw, expect=m.AdvertiseKeys, max_bytes=4096)
            validate_public_key(adv.cipher_public, probe_low_order=False)
            validate_public_key(adv.mask_public, probe_low_order=False)
        except InvalidParameter as exc:
            raise _refuse(f"advertisement of client {party} is malformed: {exc}") from None
        if adv.party != party or adv.digest != digest or adv.round != config.round:
            raise _refuse(f"advertisement of client {party} is for another party, config or round")
        if config.active:
            assert roster is not None
            try:
                roster.verify(party, adv.signature, keys.advert_bytes(adv),
                              what="key advertisement")
            except AuthenticationFailed:
                raise _refuse(f"advertisement of client {party} is not signed by the identity "
                              "the pinned roster gives it (keys swapped or forged)") from None
        for key in (adv.cipher_public, adv.mask_public):
            if key in seen:
                raise _refuse(f"advertisement of client {party} repeats a key already advertised "
                              "(a replayed key)")
            seen.add(key)
        adverts[party] = adv
    return adverts


def transcript_of(config: MaskingConfig, digest: bytes, directory: m.KeyDirectory) -> bytes:
    """The round's advert transcript, once the directory lists every advert it delivered."""
    for party, raw in directory.adverts.items():
        listed = directory.advert_hashes.get(party)
        if listed is None or not hmac.compare_digest(listed, keys.advert_hash(raw)):
            raise _refuse(f"the key directory's transcript does not list the advert of client "
                          f"{party} that it delivered")
    if any(len(h) != 32 for h in directory.advert_hashes.values()):
        raise _refuse("the key directory's transcript holds malformed hashes")
    return keys.advert_transcript(digest, config.round, directory.advert_hashes)
