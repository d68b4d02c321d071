"""The arena the named masking attacks are played in, and what the coalition can compute.

:class:`Arena` runs one round over the real sessions and wire encoding with hooks on every message
in both directions; :func:`victim_recovered` decides, from everything the coalition (server plus
colluding clients) holds, whether it can strip every mask off the victim's upload. Used by
:mod:`secagg.masking.adversary`; attack code for tests and demonstrations, never for a deployment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.encoding.packing import unpack_bits
from secagg.errors import (
    AuthenticationFailed,
    InvalidParameter,
    NotEnoughParticipants,
    ProtocolAbort,
    RejectedMessage,
)
from secagg.hazmat import shamir
from secagg.hazmat.aead import open_sealed, seal
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.prg import MaskExpander
from secagg.identity import Identity, Roster
from secagg.masking import keys, wire
from secagg.masking import messages as m
from secagg.masking.client import ClientSession
from secagg.masking.config import MaskingConfig, Stage
from secagg.masking.server import ServerSession
from secagg.masking.update import encode_update

__all__ = ["Arena", "clean_refusals", "colluder_keys", "honest_exact", "open_box",
           "victim_recovered"]

#: abort / refusal wording -> the name of the check that stopped the attack
_CHECKS = (
    ("not signed by the identity", "roster signature on key adverts"),
    ("share holders advertised keys", "per-neighbourhood holder check (key directory)"),
    ("not this client's neighbours in the roster", "roster-derived neighbour graph"),
    ("survivor set keeps only", "per-neighbourhood survivor check"),
    ("confirmed the survivor set", "per-neighbourhood consistency quorum"),
    ("does not verify against the pinned roster", "roster-verified consistency signatures"),
    ("different survivor sets", "consistency check"),
    ("low-order point", "low-order key refused at advertise"),
    ("share box as invalid", "invalid share box: sender treated as a dropout"),
    ("dealt inconsistent shares", "share commitments: the dealer is named"),
)


ClientHook = Callable[[int, bytes], bytes | None]
ServerHook = Callable[[int, bytes], bytes | None]


class Arena:
    """A round over the real sessions, with hooks on every message in both directions."""

    def __init__(self, config: MaskingConfig, updates: Sequence[npt.ArrayLike], *,
                 roster: Roster | None, identities: Sequence[Identity] | None,
                 rng: np.random.Generator, insecure_checks: bool = False,
                 skip: frozenset[int] = frozenset()) -> None:
        n = config.num_clients
        self.config = config
        self.digest = config.digest()
        self.values = {i: encode_update(config, updates[i], rng=rng) for i in range(n)}
        self.clients = {
            i: ClientSession(config, i, self.values[i], roster=roster,
                             identity=identities[i] if identities is not None else None,
                             insecure_global_survivor_checks=insecure_checks)
            for i in range(n) if i not in skip}
        self.server = ServerSession(config, roster=roster)
        self.sent: dict[int, list[bytes]] = {i: [] for i in range(n)}
        self.aborts: dict[int, str] = {}
        self.refused: dict[int, str] = {}
        self.crashed: dict[int, str] = {}
        self.finished: set[int] = set()
        self.round_error: str | None = None
        self.culprit: int | None = None  # the client a round abort names, if it names one
        self.on_client: ClientHook = lambda i, data: data
        self.on_server: ServerHook = lambda i, data: data
        self.before_advance: Callable[[], None] = lambda: None
        self.pending: dict[int, bytes] = {}

    def run(self, outbox: dict[int, bytes] | None = None) -> None:
        if outbox is None:
            outbox = {i: wire.encode(c.start()) for i, c in self.clients.items()}
        while True:
            for i, data in outbox.items():
                self.sent[i].append(data)
                relayed = self.on_client(i, data)
                if relayed is None:
                    continue
                try:
                    self.server.receive(relayed)
                except RejectedMessage as exc:
                    self.refused[i] = exc.reason
            self.before_advance()
            try:
                inbox = self.server.advance_bytes()
            except (NotEnoughParticipants, ProtocolAbort) as exc:
                self.round_error = str(exc)
                self.culprit = exc.culprit
                inbox = {}
            extra = self.extra_messages()
            inbox.update(extra)
            if not inbox:
                return
            outbox = {}
            for i, data in sorted(inbox.items()):
                if i in self.aborts or i not in self.clients:
                    continue
                delivered = self.on_server(i, data)
                if delivered is None:
                    continue
                try:
                    outbox[i] = self.clients[i].handle_bytes(delivered)
                except ProtocolAbort as exc:
                    self.aborts[i] = exc.reason
                except Exception as exc:  # a crash is what the test must never see
                    self.crashed[i] = f"{type(exc).__name__}: {exc}"
                if self.clients[i].stage is Stage.DONE and i not in self.aborts:
                    self.finished.add(i)

    def extra_messages(self) -> dict[int, bytes]:
        """Messages the adversary sends on its own (beyond the honest server's)."""
        out, self.pending = self.pending, {}
        return out

    def messages(self, sender: int, kind: type[Any]) -> list[Any]:
        out = []
        for data in self.sent[sender]:
            if wire.peek_type(data) is kind:
                out.append(wire.decode(data))
        return out

    def detected_by(self) -> str | None:
        if self.round_error is None and self.server.stage is Stage.DONE \
                and self.server.result.corrupt_shares:
            return "share commitments: lying holders named and outvoted"
        for reason in [*self.aborts.values(), *self.refused.values(), self.round_error or ""]:
            for needle, name in _CHECKS:
                if needle in reason:
                    return name
        return None


# ---- what the coalition can compute ---------------------------------------------------------

def open_box(receiver: X25519KeyPair, sender_cipher_public: bytes, src: int, dst: int,
              box: bytes, digest: bytes, round_: int) -> tuple[SecretBytes, SecretBytes] | None:
    k = keys.share_key(receiver, sender_cipher_public, src, dst, digest, round_)
    try:
        plain = open_sealed(k, box, keys.share_associated_data(digest, round_, src, dst),
                            what="share box")
    except AuthenticationFailed:
        return None
    n = shamir.SHARE_BYTES
    return (SecretBytes(plain[:n]), SecretBytes(plain[n : 2 * n]))


def forge_box(sender: X25519KeyPair, receiver_cipher_public: bytes, src: int, dst: int,
              digest: bytes, round_: int) -> tuple[bytes, bytes]:
    """A share box of random shares that ``dst`` will open as if ``src`` sealed it (the
    attacker holds ``sender``, the cipher key ``dst`` believes is ``src``'s), and the matching
    share commitment: what a server that swapped keys must hand the victim."""
    n = shamir.SHARE_BYTES
    key_share, seed_share = SecretBytes(bytes(1) + os.urandom(n - 1)), \
        SecretBytes(bytes(1) + os.urandom(n - 1))
    key_salt, seed_salt = os.urandom(keys.SALT_BYTES), os.urandom(keys.SALT_BYTES)
    k = keys.share_key(sender, receiver_cipher_public, src, dst, digest, round_)
    box = seal(k, keys.share_box_plaintext(key_share, seed_share, key_salt, seed_salt),
               keys.share_associated_data(digest, round_, src, dst))
    return box, keys.share_commitments(key_share, seed_share, key_salt, seed_salt, src, dst,
                                       digest, round_)


def victim_recovered(arena: Arena, victim: int, colluders: Sequence[int],
                      known_keys: Mapping[bytes, X25519KeyPair],
                      extra_shares: Mapping[int, Mapping[int, tuple[SecretBytes, SecretBytes]]]
                      = {},
                      ) -> bool:
    """Can the coalition strip every mask off the victim's upload and read its exact input?"""
    cfg, digest = arena.config, arena.digest
    uploads = arena.messages(victim, m.MaskedInput)
    adverts = arena.messages(victim, m.AdvertiseKeys)
    if not uploads or not adverts:
        return False
    upload, advert = uploads[0], adverts[0]
    # every share the coalition holds: owner -> kind -> {x: share}
    shares: dict[int, dict[str, dict[int, SecretBytes]]] = {}

    def add(owner: int, holder: int, key_share: SecretBytes | None,
            seed_share: SecretBytes | None) -> None:
        slot = shares.setdefault(owner, {"key": {}, "seed": {}})
        if key_share is not None:
            slot["key"][holder + 1] = key_share
        if seed_share is not None:
            slot["seed"][holder + 1] = seed_share

    for sender in arena.sent:
        for reply in arena.messages(sender, m.UnmaskShares):
            for owner, raw in reply.seed_shares.items():
                add(owner, sender, None, SecretBytes(raw[: shamir.SHARE_BYTES]))
            for owner, raw in reply.mask_key_shares.items():
                add(owner, sender, SecretBytes(raw[: shamir.SHARE_BYTES]), None)
    for c in colluders:
        for owner, mine in arena.clients[c]._held.items():
            add(owner, c, mine[0], mine[1])
    for holder, held in extra_shares.items():
        for owner, (key_share, seed_share) in held.items():
            add(owner, holder, key_share, seed_share)

    def rebuild(owner: int, kind: str) -> SecretBytes | None:
        got = shares.get(owner, {}).get(kind, {})
        if len(got) < cfg.threshold:
            return None
        try:
            return shamir.combine(dict(list(got.items())[: cfg.threshold]),
                                  threshold=cfg.threshold, secret_bytes=32)
        except (InvalidParameter, NotEnoughParticipants):
            return None

    seed = rebuild(victim, "seed")
    if seed is None or keys.seed_commitment(seed, victim, digest, cfg.round) != advert.seed_commitment:
        return False
    y = unpack_bits(upload.payload, cfg.mod_bits, cfg.wire_length)
    MaskExpander().apply(y, keys.self_mask_key(seed, victim, digest, cfg.round), subtract=True)
    victim_key = rebuild(victim, "key")
    own = None
    if victim_key is not None:
        own = X25519KeyPair.from_private_bytes(victim_key)
        if own.public_bytes != advert.mask_public:
            own = None
    session = arena.clients[victim]
    for j in sorted(session._included):  # the victim's view: chosen or relayed by the server
        peer_public = session._adverts[j].mask_public
        if own is not None:
            k = keys.pairwise_mask_key(own, peer_public, victim, j, digest, cfg.round)
        else:
            peer = known_keys.get(peer_public)
            if peer is None:
                rebuilt = rebuild(j, "key")
                if rebuilt is not None:
                    candidate = X25519KeyPair.from_private_bytes(rebuilt)
                    peer = candidate if candidate.public_bytes == peer_public else None
            if peer is None:
                return False
            k = keys.pairwise_mask_key(peer, advert.mask_public, j, victim, digest, cfg.round)
        MaskExpander().apply(y, k, subtract=victim < j)  # undo the +/- the victim applied
    y &= np.uint32((1 << cfg.mod_bits) - 1)
    return bool(np.array_equal(y, arena.values[victim]))


def colluder_keys(arena: Arena, colluders: Sequence[int]) -> dict[bytes, X25519KeyPair]:
    return {arena.clients[c]._mask.public_bytes: arena.clients[c]._mask for c in colluders}


def honest_exact(arena: Arena, bad: set[int]) -> tuple[bool, bool]:
    """(honest_completed, exact) for a round whose server is honest."""
    if arena.crashed:
        return False, False
    if arena.round_error is not None:
        return False, False
    try:
        result = arena.server.result
    except ProtocolAbort:
        return False, False
    modulus = np.uint64(1 << arena.config.mod_bits)
    want = np.zeros(arena.config.wire_length, dtype=np.uint64)
    for i in result.survivors:
        want += arena.values[i]
    want %= modulus
    exact = bool(np.array_equal(result.total, want[:-1].astype(np.uint32))
                 and result.total_weight == int(want[-1]))
    honest_survived = set(result.survivors) >= (set(arena.clients) - bad - set(arena.aborts))
    return honest_survived and exact, exact


def clean_refusals(arena: Arena, honest: set[int]) -> bool:
    """Under a malicious server: every honest client finished or refused with a reason."""
    return not arena.crashed and all(i in arena.finished or i in arena.aborts for i in honest)


