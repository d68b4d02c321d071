"""Rebuilding the secrets a masking server needs at the unmask stage, robustly.

The server holds, per client ("owner"), the shares its holders revealed: seed shares if it
survived, mask-key shares if it dropped, each with the salt of the commitment the owner made to
that holder's shares at the share stage. :class:`SecretRecovery` rebuilds each secret and checks
it against the owner's public commitment (the seed commitment in its signed advert, or its
advertised mask key); :func:`unmask_masks` turns the rebuilt secrets into the masks to strip
from the sum.

Every holder checked its shares against the owner's commitment when it received them (a box
that failed was reported, and the owner dropped). So if the first t revealed shares do not
rebuild the committed secret, each revealed share is checked against its commitment: a holder
whose share does not match is named a liar and left out, exactly, however many there are; and
if t matching shares still do not rebuild the secret, the owner dealt shares inconsistent with
its own commitments and is named as the culprit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from secagg.errors import InvalidParameter, NotEnoughParticipants, ProtocolAbort
from secagg.hazmat import shamir
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.masking import keys
from secagg.masking import messages as m
from secagg.masking.config import MaskingConfig, Stage
from secagg.masking.graph import holders_of

__all__ = ["SecretRecovery", "pair_key_masks", "shared_subsets", "unmask_masks"]

_WHAT = {"seed": "self-mask seed", "key": "mask key"}
_NONE: frozenset[int] = frozenset()


class SecretRecovery:
    """Rebuilds secrets for one round; remembers the holders caught lying (``liars``)."""

    def __init__(self, config: MaskingConfig) -> None:
        self.threshold = config.threshold
        self.digest = config.digest()
        self.round = config.round
        self.liars: set[int] = set()

    def rebuild(self, owner: int, kind: keys.ShareKind, revealed: Mapping[int, bytes],
                commitments: Mapping[int, bytes], valid: Callable[[SecretBytes], bool], *,
                prefer: frozenset[int] | None = None) -> SecretBytes:
        """One secret from the shares its holders revealed (holder -> share || salt).

        ``commitments`` maps each holder to the owner's commitment to its shares. The first t
        shares (known liars last; or the t holders ``prefer`` names, if all revealed and none a
        known liar) are tried as they are; only if they do not rebuild a secret that ``valid``
        accepts is each share checked against its commitment.
        """
        t = self.threshold
        if len(revealed) < t:
            raise NotEnoughParticipants(Stage.UNMASK.value, len(revealed), t,
                                        f"share holders of client {owner}")
        if prefer is not None and len(prefer) == t and prefer.issubset(revealed) \
                and prefer.isdisjoint(self.liars):
            first = sorted(prefer)
        else:
            first = sorted(revealed, key=lambda h: (h in self.liars, h))[:t]
        secret = self._combine(first, revealed, valid)
        if secret is not None:
            return secret
        order = sorted(revealed, key=lambda h: (h in self.liars, h))
        honest = [h for h in order if keys.revealed_share_ok(
            kind, revealed[h], commitments.get(h, b""), owner, h, self.digest, self.round)]
        self.liars.update(set(order) - set(honest))
        if len(honest) < t:
            raise NotEnoughParticipants(Stage.UNMASK.value, len(honest), t,
                                        f"holders of client {owner} whose revealed shares match "
                                        "its commitments")
        secret = self._combine(honest[:t], revealed, valid)
        if secret is None:
            raise ProtocolAbort(Stage.UNMASK.value, f"client {owner} dealt inconsistent shares: "
                                f"{t} of its holders revealed exactly the shares it committed "
                                f"to them, and they do not rebuild its committed {_WHAT[kind]}",
                                culprit=owner)
        return secret

    def _combine(self, holders: list[int], revealed: Mapping[int, bytes],
                 valid: Callable[[SecretBytes], bool]) -> SecretBytes | None:
        shares = {h + 1: SecretBytes(revealed[h][: shamir.SHARE_BYTES], label="shamir-share")
                  for h in holders}
        try:
            secret = shamir.combine(shares, threshold=self.threshold, secret_bytes=32,
                                    stage=Stage.UNMASK.value)
        except InvalidParameter:
            return None
        return secret if valid(secret) else None


def unmask_masks(recovery: SecretRecovery, config: MaskingConfig, *,
                 graph: Mapping[int, frozenset[int]], shared: frozenset[int],
                 survivors: frozenset[int], answered: frozenset[int],
                 excluded_by: Mapping[int, frozenset[int]],
                 adverts: Mapping[int, m.AdvertiseKeys],
                 commitments: Mapping[int, m.ShareKeys],
                 replies: Mapping[int, m.UnmaskShares]) -> list[tuple[SecretBytes, bool]]:
    """Every ``(key, subtract)`` mask to apply to the survivors' sum to unmask it.

    For a survivor: its self mask, from its rebuilt seed. For a dropout some survivor masked
    with: that survivor's pairwise mask with it, from the dropout's rebuilt mask key (pairs a
    survivor excluded, because the dropout's share box failed, carry no mask); if the key cannot
    be rebuilt (too many of its holders reported it, dropped or lied, or it dealt inconsistent
    shares), from the pair keys those survivors revealed, provided all of them answered.
    Revealing a pair key with a client outside the signed survivor set tells the server no more
    than the dropout's rebuilt mask key would.
    """
    digest = recovery.digest
    masks: list[tuple[SecretBytes, bool]] = []
    revealed_by: dict[int, tuple[Mapping[int, bytes], Mapping[int, bytes]]] = {
        v: (replies[v].seed_shares, replies[v].mask_key_shares) for v in answered}
    todo: dict[int, tuple[set[int], dict[int, bytes]]] = {}  # owner -> (masked_with, revealed)
    for owner in sorted(shared):
        masked_with = {v for v in graph[owner] & survivors if owner not in excluded_by[v]}
        if owner not in survivors and not masked_with:
            continue  # a dropout no survivor masked with: nothing of it to remove
        kind = 0 if owner in survivors else 1  # seed shares if it survived, else key shares
        todo[owner] = masked_with, {
            v: revealed_by[v][kind][owner] for v in holders_of(graph, owner) & answered
            if owner not in excluded_by.get(v, _NONE)}
    prefer = shared_subsets(graph, {o: frozenset(r) for o, (_, r) in todo.items()},
                            recovery.threshold)
    for owner, (masked_with, revealed) in todo.items():
        committed = commitments[owner].commitments
        advert = adverts[owner]

        def seed_ok(secret: SecretBytes, o: int = owner, a: m.AdvertiseKeys = advert) -> bool:
            return keys.seed_commitment(secret, o, digest, config.round) == a.seed_commitment

        def key_ok(secret: SecretBytes, a: m.AdvertiseKeys = advert) -> bool:
            return X25519KeyPair.from_private_bytes(secret).public_bytes == a.mask_public

        if owner in survivors:
            secret = recovery.rebuild(owner, "seed", revealed, committed, seed_ok,
                                      prefer=prefer.get(owner))
            masks.append((keys.self_mask_key(secret, owner, digest, config.round), True))
            continue
        try:
            dropped = X25519KeyPair.from_private_bytes(
                recovery.rebuild(owner, "key", revealed, committed, key_ok,
                                 prefer=prefer.get(owner)))
        except ProtocolAbort:  # too few holders (reported, silent or lying), or a bad dealer
            masks.extend(pair_key_masks(owner, masked_with, answered, replies))
            continue
        for v in sorted(masked_with):
            k = keys.pairwise_mask_key(dropped, adverts[v].mask_public, owner, v, digest,
                                       config.round)
            masks.append((k, v < owner))  # undo v's +/- mask with the dropout
    return masks


def shared_subsets(graph: Mapping[int, frozenset[int]], eligible: Mapping[int, frozenset[int]],
                   threshold: int) -> dict[int, frozenset[int]]:
    """For each owner, ``threshold`` of its ``eligible`` holders to rebuild it from, chosen so
    that owners close on the graph's ring pick the same ones.

    Any t valid shares rebuild the same secret, so the choice changes nothing but the cost:
    every distinct set of t x-coordinates needs its own Lagrange coefficients (O(t^2) big-integer
    work, the largest part of a rebuild). On a Harary graph an owner's holders are the clients
    within k/2 places of it on the ring; walking the owners in ring order and taking the t
    eligible holders furthest ahead, a set serves every following owner whose holders still
    contain it (about k - t + 1 of them), so n owners need about n / (k - t + 1) sets instead of
    n. Graphs without a ring (none is built here) get no preference: ids in order, as before.
    """
    ring: tuple[int, ...] = getattr(graph, "ring", ())
    pos = {v: i for i, v in enumerate(ring)}
    if not ring or not pos.keys() >= eligible.keys():
        return {}
    n, half = len(ring), len(ring) // 2
    chosen: dict[int, frozenset[int]] = {}
    current: frozenset[int] = frozenset()
    for owner in sorted(eligible, key=pos.__getitem__):
        holders = eligible[owner]
        if len(holders) < threshold:
            continue  # rebuild() names the shortfall
        if len(current) != threshold or not current <= holders:
            here = pos[owner]
            ahead = sorted(holders, key=lambda v: (pos.get(v, here) - here + half) % n)
            current = frozenset(ahead[-threshold:])
        chosen[owner] = current
    return chosen


def pair_key_masks(owner: int, masked_with: set[int], answered: frozenset[int],
                   replies: Mapping[int, m.UnmaskShares]) -> list[tuple[SecretBytes, bool]]:
    """A dropout's masks from the pair keys its maskers revealed (each survivor that masked
    with it revealed that one pair's key); all of them must have answered."""
    if not masked_with <= answered:
        missing = sorted(masked_with - answered)
        raise NotEnoughParticipants(Stage.UNMASK.value, len(masked_with & answered),
                                    len(masked_with), f"survivors that masked with dropped client "
                                    f"{owner} and must reveal that pair's key; silent: "
                                    f"{missing[:5]}")
    return [(SecretBytes(replies[v].pair_keys[owner], label="pair-key"), v < owner)
            for v in sorted(masked_with)]
