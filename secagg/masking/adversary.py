"""Named attacks on a masking round, played in memory against the real state machines.

Each attack is the one a deviating server (or a malicious enterprise) would mount; it runs over
the real :class:`ClientSession` objects and the real wire encoding, and is scored by what the
coalition (the server plus any colluding clients) can actually compute afterwards: the victim's
update is "recovered" only if stripping every mask the coalition can rebuild yields its exact
quantised input. ``secagg simulate masking --adversary NAME`` runs these, and the tests run each
one twice: with the defences (attack fails, honest clients finish or refuse cleanly) and with the
defence switched off (``insecure=True``: the attack must succeed, so the test can fail).

What ``insecure=True`` switches off, per attack:

* ``swap-keys``, ``rig-graph``, ``tailored-survivors``: the round runs in the honest-but-curious
  mode (no roster: unsigned adverts, a graph derived from what the server relays, global
  survivor checks), which is what the library did before the malicious-server work;
* ``split-survivors``: active mode, but with the old global checks (t signatures from anyone);
* ``low-order-key``: the server's refusal of low-order keys (the key then reaches the
  clients, whose exchanges with it fail);
* ``garbage-shares``: treating the sender of an unreadable share box as a dropout (the old code
  aborted the whole round for the recipient);
* ``lying-holders``: the server's check of each revealed share against its dealer's commitment
  (every share is taken as matching: the liars then sink the round and frame the victim);
* ``inconsistent-dealer``: the same check, with no share verifiable (the abort names nobody).

This is attack code for tests and demonstrations: it reads colluding clients' secrets, and the
coalition's knowledge of which masks the victim applied is read from the victim's session (the
server knows it anyway: it chose the victim's view).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.errors import (
    InvalidParameter,
    ProtocolAbort,
)
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.masking import messages as m
from secagg.masking import wire
from secagg.masking.attack_arena import (
    Arena,
    clean_refusals,
    colluder_keys,
    forge_box,
    honest_exact,
    open_box,
    victim_recovered,
)
from secagg.masking.config import MaskingConfig
from secagg.masking.peer_attacks import play_peer_attack
from secagg.masking.simulate import insecure_simulated_federation, simulated_federation_for

__all__ = ["ADVERSARIES", "AttackReport", "run_adversary"]

ADVERSARIES: dict[str, str] = {
    "swap-keys": "the server replaces the victim's view of its peers' public keys with its own",
    "rig-graph": "the server shows the victim a key directory of its colluders only, so that its "
                 "neighbours are the colluders (t - 1 of them)",
    "tailored-survivors": "the server shows each client a different survivor set: the victim "
                          "alive to some, its neighbours dropped to others",
    "split-survivors": "tailored survivor sets, each shown to a group of at least t clients so "
                       "that every view gathers t consistency signatures",
    "low-order-key": "a malicious enterprise advertises an all-zero (low-order) X25519 key",
    "garbage-shares": "a malicious enterprise sends random bytes as its sealed share boxes",
    "lying-holders": "colluding enterprises (all but t of the victim's share holders) reveal "
                     "well-formed but wrong shares at the unmask stage",
    "inconsistent-dealer": "a malicious enterprise deals shares of a seed other than the one its "
                           "signed advert commits to (each share matching what it committed to "
                           "its holder)",
}



@dataclass
class AttackReport:
    """The outcome of one attack, with the keys of ``secagg simulate masking --adversary``."""

    adversary: str
    attack_succeeded: bool
    honest_completed: bool
    detected_by: str | None
    exact: bool
    victim: int
    colluders: tuple[int, ...]
    insecure: bool
    aborts: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    excluded: tuple[int, ...] = ()
    culprit: int | None = None  # the client a round abort names with proof, if any

    def to_dict(self) -> dict[str, Any]:
        return {"adversary": self.adversary, "attack_succeeded": self.attack_succeeded,
                "honest_completed": self.honest_completed, "detected_by": self.detected_by,
                "exact": self.exact, "victim": self.victim, "colluders": list(self.colluders),
                "insecure": self.insecure,
                "aborts": {str(k): v for k, v in sorted(self.aborts.items())},
                "refused_by_server": {str(k): v for k, v in sorted(self.refused.items())},
                "excluded": list(self.excluded), "culprit": self.culprit}


# ---- the attacks ------------------------------------------------------------------------------

def _swap_keys(arena: Arena, victim: int) -> bool:
    cfg, digest = arena.config, arena.digest
    fakes: dict[int, tuple[X25519KeyPair, X25519KeyPair]] = {}
    opened: dict[int, dict[int, tuple[SecretBytes, SecretBytes]]] = {}

    def to_client(i: int, data: bytes) -> bytes | None:
        if i != victim:
            return data
        msg = wire.decode(data)
        if isinstance(msg, m.KeyDirectory):
            adverts = dict(msg.adverts)
            for p, raw in msg.adverts.items():
                if p == victim:
                    continue
                cipher, mask = X25519KeyPair.generate(), X25519KeyPair.generate()
                fakes[p] = (cipher, mask)
                real = wire.decode(raw)
                adverts[p] = wire.encode(dataclasses.replace(
                    real, cipher_public=cipher.public_bytes, mask_public=mask.public_bytes))
            return wire.encode(dataclasses.replace(msg, adverts=adverts))
        if isinstance(msg, m.ShareDelivery):  # boxes the server forges under its own keys
            me = arena.clients[victim]
            forged = {p: forge_box(fakes[p][0], me._cipher.public_bytes, p, victim, digest,
                                   cfg.round) for p in msg.sealed_shares}
            return wire.encode(dataclasses.replace(
                msg, sealed_shares={p: f[0] for p, f in forged.items()},
                commitments={p: f[1] for p, f in forged.items()}))
        return data

    def from_client(i: int, data: bytes) -> bytes | None:
        if i != victim or wire.peek_type(data) is m.AdvertiseKeys:
            return data
        if wire.peek_type(data) is m.ShareKeys:  # from here the server plays the victim's round
            msg: m.ShareKeys = wire.decode(data)
            me_public = wire.decode(arena.sent[victim][0]).cipher_public
            for p, box in msg.sealed_shares.items():
                got = open_box(fakes[p][0], me_public, victim, p, box, digest, cfg.round)
                if got is not None:
                    opened.setdefault(p, {})[victim] = got
            shared = tuple(sorted(set(msg.sealed_shares) | {victim}))
            arena.pending[victim] = wire.encode(m.ShareDelivery(
                digest=digest, round=cfg.round, party=victim, shared=shared,
                sealed_shares=dict.fromkeys(msg.sealed_shares, b""),
                commitments=dict.fromkeys(msg.sealed_shares, b"")))
        return None

    arena.on_server, arena.on_client = to_client, from_client
    arena.run()
    known = {mask.public_bytes: mask for _, mask in fakes.values()}
    return victim_recovered(arena, victim, (), known, opened)


def _rig_graph(arena: Arena, victim: int, colluders: Sequence[int]) -> bool:
    cfg, digest = arena.config, arena.digest
    keep = set(colluders) | {victim}

    def to_client(i: int, data: bytes) -> bytes | None:
        if i != victim:
            return data
        msg = wire.decode(data)
        if isinstance(msg, m.KeyDirectory):  # only the colluders' adverts: they become the graph
            return wire.encode(dataclasses.replace(
                msg, adverts={p: r for p, r in msg.adverts.items() if p in keep}))
        if isinstance(msg, m.ShareDelivery):  # colluders "share" with the victim
            me = arena.clients[victim]
            forged = {c: forge_box(arena.clients[c]._cipher, me._cipher.public_bytes, c, victim,
                                   digest, cfg.round) for c in sorted(me._neighbours)}
            return wire.encode(dataclasses.replace(
                msg, shared=tuple(sorted(keep)), sealed_shares={c: f[0] for c, f in forged.items()},
                commitments={c: f[1] for c, f in forged.items()}))
        if isinstance(msg, (m.ConsistencyRequest, m.UnmaskRequest)):
            return wire.encode(dataclasses.replace(msg, survivors=tuple(sorted(keep))))
        return data

    opened: dict[int, dict[int, tuple[SecretBytes, SecretBytes]]] = {}

    def from_client(i: int, data: bytes) -> bytes | None:
        if i != victim:
            return data
        kind = wire.peek_type(data)
        if kind is m.AdvertiseKeys:
            return data
        survivors = tuple(sorted(keep))
        if kind is m.ShareKeys:  # from here the server plays the victim's (rigged) round
            msg: m.ShareKeys = wire.decode(data)
            me_public = arena.clients[victim]._cipher.public_bytes
            for c, box in msg.sealed_shares.items():
                got = open_box(arena.clients[c]._cipher, me_public, victim, c, box, digest,
                                cfg.round)
                if got is not None:
                    opened.setdefault(c, {})[victim] = got
            arena.pending[victim] = wire.encode(m.ShareDelivery(
                digest=digest, round=cfg.round, party=victim, shared=survivors,
                sealed_shares=dict.fromkeys(msg.sealed_shares, b""),
                commitments=dict.fromkeys(msg.sealed_shares, b"")))
        elif kind is m.MaskedInput:
            arena.pending[victim] = wire.encode(
                m.ConsistencyRequest(digest=digest, round=cfg.round, party=victim,
                                     survivors=survivors) if cfg.active
                else m.UnmaskRequest(digest=digest, round=cfg.round, party=victim,
                                     survivors=survivors))
        elif kind is m.ConsistencySignature:
            arena.pending[victim] = wire.encode(m.UnmaskRequest(
                digest=digest, round=cfg.round, party=victim, survivors=survivors,
                signatures={victim: wire.decode(data).signature}))
        return None

    arena.on_server, arena.on_client = to_client, from_client
    arena.run()
    return victim_recovered(arena, victim, colluders, colluder_keys(arena, colluders), opened)


def _views(arena: Arena, victim: int, survivors: frozenset[int], group_fill: bool
           ) -> dict[int, tuple[int, ...]]:
    """Per-client survivor sets: the victim alive, its neighbours dropped to everyone but
    themselves; with ``group_fill``, each neighbour's view is also shown to t - 1 far clients
    so that every view can gather t signatures under a global-quorum rule."""
    graph = arena.server._graph
    nbrs = graph[victim] & survivors
    base = survivors - nbrs
    views = {i: base | ({i} if i in nbrs else set()) for i in survivors}
    if group_fill:
        t = arena.config.threshold
        far = sorted(survivors - nbrs - {victim})
        for j in sorted(nbrs):
            fillers = [c for c in far if j not in graph[c]][: t - 1]
            if len(far) - len(fillers) < t - 1:
                break  # keep t signers on the common view
            for c in fillers:
                far.remove(c)
                views[c] = base | {j}
    return {i: tuple(sorted(v)) for i, v in views.items()}


def _survivor_split(arena: Arena, victim: int, group_fill: bool) -> bool:
    cfg = arena.config
    views: dict[int, tuple[int, ...]] = {}
    sigs: dict[int, tuple[tuple[int, ...], bytes]] = {}

    def to_client(i: int, data: bytes) -> bytes | None:
        msg = wire.decode(data)
        if isinstance(msg, (m.ConsistencyRequest, m.UnmaskRequest)):
            if not views:
                views.update(_views(arena, victim, frozenset(msg.survivors), group_fill))
            if i not in views:
                return data
            view = views[i]
            if isinstance(msg, m.UnmaskRequest):
                same = {p: s for p, (v, s) in sigs.items() if v == view}
                return wire.encode(dataclasses.replace(msg, survivors=view, signatures=same))
            return wire.encode(dataclasses.replace(msg, survivors=view))
        return data

    def from_client(i: int, data: bytes) -> bytes | None:
        if wire.peek_type(data) is m.ConsistencySignature:
            sigs[i] = (views[i], wire.decode(data).signature)
            return None  # the honest server would refuse signatures over a tailored set
        if wire.peek_type(data) is m.UnmaskShares:
            return None
        return data

    unmask_sent: list[bool] = [False]

    def extra() -> dict[int, bytes]:
        # After the consistency stage the adversary itself sends the unmask requests (the
        # honest server, which got no signatures over its own set, has given up).
        if cfg.active and sigs and not unmask_sent[0]:
            unmask_sent[0] = True
            return {i: wire.encode(m.UnmaskRequest(digest=arena.digest, round=cfg.round, party=i,
                                                   survivors=views[i]))
                    for i in sigs if i not in arena.aborts}
        return {}

    arena.on_server, arena.on_client = to_client, from_client
    arena.extra_messages = extra  # type: ignore[method-assign]
    arena.run()
    return victim_recovered(arena, victim, (), {})


def run_adversary(
    name: str,
    config: MaskingConfig,
    updates: Sequence[npt.ArrayLike],
    *,
    victim: int = 0,
    colluders: Sequence[int] | None = None,
    insecure: bool = False,
    rng: np.random.Generator | None = None,
) -> AttackReport:
    """Play attack ``name`` on one round of ``config``; see the module docstring.

    ``config`` is the round the defender runs (active, over the insecure simulated roster of its
    size). With ``insecure=True`` the defence the attack targets is switched off, which for the
    server attacks means running the same round in the honest-but-curious mode.
    """
    if name not in ADVERSARIES:
        raise InvalidParameter(f"unknown adversary {name!r}; choose from {sorted(ADVERSARIES)}")
    n = config.num_clients
    rng = rng if rng is not None else np.random.default_rng(0)
    roster, identities = simulated_federation_for(config) if config.roster_digest \
        else insecure_simulated_federation(n)
    server_attack = name in ("swap-keys", "rig-graph", "tailored-survivors", "split-survivors")
    if insecure and name != "split-survivors" and server_attack:
        config = dataclasses.replace(config, active=False, roster_digest=b"")
    use_roster = bool(config.roster_digest)
    insecure_checks = insecure and name in ("split-survivors", "tailored-survivors")
    if name == "rig-graph" and colluders is None:
        others = [i for i in range(n) if i != victim]
        colluders = [int(c) for c in rng.choice(others, size=config.threshold - 1, replace=False)]
    colluders = tuple(colluders or ())
    arena = Arena(config, updates, roster=roster if use_roster else None,
                   identities=identities if use_roster else None, rng=rng,
                   insecure_checks=insecure_checks)
    attacker = n - 1 if victim != n - 1 else 0
    if name == "swap-keys":
        learned = _swap_keys(arena, victim)
    elif name == "rig-graph":
        learned = _rig_graph(arena, victim, colluders)
    elif name in ("tailored-survivors", "split-survivors"):
        learned = _survivor_split(arena, victim, group_fill=name == "split-survivors")
    else:  # a malicious enterprise: secagg/masking/peer_attacks.py
        colluders = play_peer_attack(name, arena, attacker=attacker, victim=victim,
                                     insecure=insecure) or colluders
        learned = False
    if name == "lying-holders":
        completed, exact = honest_exact(arena, set())  # the liars' own inputs count
    elif server_attack:
        honest = set(arena.clients) - set(colluders)
        completed = clean_refusals(arena, honest)
        _, exact = honest_exact(arena, set(colluders))
    else:
        completed, exact = honest_exact(arena, {attacker})
    try:
        excluded = arena.server.result.excluded
    except ProtocolAbort:
        excluded = ()
    return AttackReport(
        adversary=name, attack_succeeded=learned, honest_completed=completed,
        detected_by=arena.detected_by(), exact=exact, victim=victim, colluders=colluders,
        insecure=insecure, aborts=dict(arena.aborts), refused=dict(arena.refused),
        excluded=excluded, culprit=arena.culprit)
