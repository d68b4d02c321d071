"""Rebuilding the secrets a masking server needs at the unmask stage, robustly.

The server holds, per client ("owner"), the shares its holders revealed: seed shares if it
survived, mask-key shares if it dropped. :class:`SecretRecovery` rebuilds each secret and checks
it against the owner's public commitment (the seed commitment in its signed advert, or its
advertised mask key); :func:`unmask_masks` turns the rebuilt secrets into the masks to strip
from the sum. A holder that sent a corrupted share is outvoted and named; an owner whose shares
fit no commitment is named as the likely culprit.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence

from secagg.errors import InvalidParameter, NotEnoughParticipants, ProtocolAbort
from secagg.hazmat import shamir
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.masking import keys
from secagg.masking import messages as m
from secagg.masking.config import MaskingConfig, Stage

__all__ = ["SecretRecovery", "unmask_masks"]

_MAX_SUBSETS = 400  # random t-subsets tried when corrupted shares are present


class SecretRecovery:
    """Rebuilds secrets for one round; remembers the holders caught lying (``liars``)."""

    def __init__(self, config: MaskingConfig) -> None:
        self.threshold = config.threshold
        self.digest = config.digest()
        self.liars: set[int] = set()

    def rebuild(self, owner: int, what: str, shares: Mapping[int, SecretBytes],
                valid: Callable[[SecretBytes], bool]) -> SecretBytes:
        """One secret from the shares keyed by x = holder + 1, even if some were corrupted.

        If the first t shares do not match the commitment, random t-subsets that avoid known
        liars are tried (seeded by the config digest and owner, so a restarted server replays
        the same choice); the holders whose shares disagree with the recovered secret are added
        to :attr:`liars`.
        """
        t = self.threshold
        trusted = {x: sh for x, sh in shares.items() if x - 1 not in self.liars}
        xs = sorted(trusted)
        if len(xs) < t:
            raise NotEnoughParticipants(Stage.UNMASK.value, len(xs), t,
                                        f"honest share holders of client {owner}")

        def attempt(subset: Sequence[int]) -> SecretBytes | None:
            try:
                secret = shamir.combine({x: trusted[x] for x in subset}, threshold=t,
                                        secret_bytes=32, stage=Stage.UNMASK.value)
                return secret if valid(secret) else None
            except InvalidParameter:
                return None

        first = attempt(xs[:t])
        if first is not None:
            return first
        rng = random.Random(hashlib.sha256(self.digest + owner.to_bytes(4, "big")).digest())
        for _ in range(_MAX_SUBSETS):
            subset = sorted(rng.sample(xs, t))
            secret = attempt(subset)
            if secret is None:
                continue
            for x in xs:  # name every holder whose share disagrees with the recovered secret
                if x not in subset and attempt([*subset[1:], x]) is None:
                    self.liars.add(x - 1)
            return secret
        raise ProtocolAbort(Stage.UNMASK.value, f"could not rebuild the {what} of client {owner} "
                            f"from its {len(xs)} holders' shares: either client {owner} dealt "
                            "shares inconsistent with its signed commitment, or several of its "
                            "holders sent corrupted shares (the search tried "
                            f"{_MAX_SUBSETS} random {t}-subsets); the shares alone cannot tell "
                            "which")


def unmask_masks(recovery: SecretRecovery, config: MaskingConfig, *,
                 graph: Mapping[int, frozenset[int]], shared: frozenset[int],
                 survivors: frozenset[int], answered: frozenset[int],
                 excluded_by: Mapping[int, frozenset[int]],
                 adverts: Mapping[int, m.AdvertiseKeys],
                 replies: Mapping[int, m.UnmaskShares]) -> list[tuple[SecretBytes, bool]]:
    """Every ``(key, subtract)`` mask to apply to the survivors' sum to unmask it.

    For a survivor: its self mask, from its rebuilt seed. For a dropout some survivor masked
    with: that survivor's pairwise mask with it, from the dropout's rebuilt mask key (pairs a
    survivor excluded, because the dropout's share box failed, carry no mask).
    """
    digest = recovery.digest
    masks: list[tuple[SecretBytes, bool]] = []
    for owner in sorted(shared):
        masked_with = {v for v in graph[owner] & survivors if owner not in excluded_by[v]}
        if owner not in survivors and not masked_with:
            continue  # a dropout no survivor masked with: nothing of it to remove
        field = "seed_shares" if owner in survivors else "mask_key_shares"
        shares = {v + 1: SecretBytes(getattr(replies[v], field)[owner], label="shamir-share")
                  for v in (graph[owner] | {owner}) & answered
                  if owner not in excluded_by.get(v, frozenset())}
        advert = adverts[owner]

        def seed_ok(secret: SecretBytes, o: int = owner, a: m.AdvertiseKeys = advert) -> bool:
            return keys.seed_commitment(secret, o, digest, config.round) == a.seed_commitment

        def key_ok(secret: SecretBytes, a: m.AdvertiseKeys = advert) -> bool:
            return X25519KeyPair.from_private_bytes(secret).public_bytes == a.mask_public

        if owner in survivors:
            secret = recovery.rebuild(owner, "self-mask seed", shares, seed_ok)
            masks.append((keys.self_mask_key(secret, owner, digest, config.round), True))
            continue
        dropped = X25519KeyPair.from_private_bytes(recovery.rebuild(owner, "mask key", shares,
                                                                    key_ok))
        for v in sorted(masked_with):
            k = keys.pairwise_mask_key(dropped, adverts[v].mask_public, owner, v, digest,
                                       config.round)
            masks.append((k, v < owner))  # undo v's +/- mask with the dropout
    return masks
