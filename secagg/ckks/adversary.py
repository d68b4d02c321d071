"""Attacks on a CKKS round that you can run, each with the defence that stops it.

``secagg simulate ckks --adversary NAME`` and :func:`run_attack` play one round in memory with the
real sessions and real TenSEAL/`cryptography` objects, with one party malicious:

``swap-keys``
    A malicious server substitutes its own X25519 key for a victim's in the key request the
    dealer deals from, opens the victim's key box, re-seals it to the victim so that no one
    notices, and decrypts the victim's individual upload. Defence: the dealer verifies every
    advert against the pinned roster (check ``advert-signature``); recipients verify the dealer's
    signed distribution (``key-distribution-signature``) and that their box names their own key.
``forge-aggregate``
    A malicious server returns one client's upload, added to itself once per contributor so the
    decrypted contributor count still matches (variant ``replay``), a sum that leaves one
    contributor out and counts another twice (``drop-one``), the honest sum plus an encoding of
    ``delta`` in its first value (``shift``: a small, plausible change), or the honest sum with one
    raw coefficient moved by ``delta`` (``tweak``), always with every contributor's genuine signed
    receipt. Defence: the sketch check (``sketch-check``, :mod:`secagg.ckks.sketch`).
``low-order-key``
    A malicious enterprise advertises a low-order X25519 key (all zero), signed with its real
    identity, hoping to crash the dealer (or, with a library that did not refuse it, to make its
    box readable by anyone). Defence: the server session refuses the advert (``box-key``), and a
    dealer that is relayed one anyway leaves that member out.
``garbage-shares``
    A malicious enterprise uploads garbage ciphertexts under its own valid signature (variant
    ``enterprise``, the main run), or a malicious dealer signs a garbage key box for one peer
    (``dealer``). Defence: the server checks each upload completely before it touches the sum
    (``ciphertext``): the enterprise is a dropout and the round completes; the peer of a
    malicious dealer stops with a clear error (``key-box``) while the others complete.

The report (:class:`AttackReport`, the JSON of the command) says whether the attack succeeded
(swap-keys: the server decrypted an individual upload with what it obtained; forge-aggregate: an
honest client accepted an aggregate that is not the sum of its announced contributors; the
enterprise attacks: the honest clients did not get the correct sum of the honest uploads), whether
every honest client either released the correct sum or refused cleanly with a named check, which
check stopped the attack, and whether the honest release equals the plaintext sum within the
preset's error bound (null when no honest client released).

``insecure_disable_defence=True`` switches the named defence off, **for tests only**: it is the
positive control that shows the attack is real (the same attack then succeeds). It is reachable
only from this module, never from the command line or the sessions' constructors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.ckks.attack_parties import (
    _BoxKeyBlindServer,
    _ForgingServer,
    _GarbageBoxDealer,
    _GarbageUploader,
    _insecure_client_class,
    _KeySwappingServer,
    _LazyServer,
    _LowOrderClient,
    tweak_coefficient,
)
from secagg.ckks.checks import Check, CheckFailed, MessageRefused
from secagg.ckks.client import ClientSession, session_for
from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.keys import CKKSKey
from secagg.ckks.layout import Layout
from secagg.ckks.messages import (
    Upload,
)
from secagg.ckks.presets import Preset
from secagg.ckks.release import Release
from secagg.ckks.server import ServerSession
from secagg.ckks.simulate import Federation, federation_for, make_config
from secagg.errors import InvalidParameter, ProtocolAbort, RejectedMessage, SecAggError
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.seal_codec import CiphertextRejected

__all__ = ["ATTACKS", "VARIANTS", "AttackReport", "run_attack", "tweak_coefficient"]

ATTACKS = ("swap-keys", "forge-aggregate", "low-order-key", "garbage-shares")
VARIANTS: dict[str, tuple[str, ...]] = {
    "swap-keys": ("dealer-view",),
    "forge-aggregate": ("replay", "drop-one", "shift", "tweak"),
    "low-order-key": ("enterprise", "relayed"),
    "garbage-shares": ("enterprise", "dealer"),
}


@dataclass(slots=True)
class AttackReport:
    """The outcome of one attack round (the keys of ``secagg simulate ckks --adversary``)."""

    adversary: str
    attack_succeeded: bool
    honest_completed: bool
    detected_by: str | None
    exact: bool | None
    variant: str
    defence: bool
    clients: int
    params: int
    detail: str
    round_ended: str | None = None
    #: honest client -> the check it refused on; "server: <check>" for messages the server refused
    refusals: dict[int, str] = field(default_factory=dict)
    contributors: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["refusals"] = {str(k): v for k, v in self.refusals.items()}
        return out


# ---- the harness -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Setup:
    config: CKKSRoundConfig
    federation: Federation
    updates: dict[int, npt.NDArray[np.float32]]
    weights: dict[int, float]


def _setup(clients: int, params: int, preset: str, seed: int) -> _Setup:
    if clients < 3:
        raise InvalidParameter(f"an attack round needs --clients >= 3 (one may be malicious or left "
                               f"out and min_clients is 2), found {clients}")
    if params < 1:
        raise InvalidParameter(f"--params must be >= 1, found {params}")
    rng = np.random.default_rng(seed)  # simulation data, not secret
    config = make_config(Preset.from_name(preset).params, update_size=params, num_clients=clients,
                         min_clients=2, value_bound=1.0, weight_bound=8.0)
    updates = {i: np.clip(rng.normal(0, 0.1, params), -1, 1).astype(np.float32) for i in config.client_ids}
    weights = {i: float(rng.integers(1, 9)) for i in config.client_ids}
    return _Setup(config, federation_for(config), updates, weights)


@dataclass(slots=True)
class _Play:
    """One round driven by the harness; records what every client ended with."""

    outcome: dict[int, Release | SecAggError] = field(default_factory=dict)
    server_error: SecAggError | None = None
    refused_at_server: dict[int, str] = field(default_factory=dict)


def _play(s: _Setup, server: ServerSession, sessions: Mapping[int, ClientSession]) -> _Play:
    """Adverts -> key request -> distribution -> deliveries -> uploads -> aggregate, as bytes."""
    play = _Play()

    def client_step(i: int, data: bytes) -> bytes | None:
        if i in play.outcome:  # that client already stopped; it takes no further part
            return None
        try:
            return sessions[i].handle_bytes(data)
        except SecAggError as exc:
            play.outcome[i] = exc
            return None

    def server_take(i: int, data: bytes) -> None:
        try:
            server.receive(data)
        except RejectedMessage as exc:
            play.refused_at_server[i] = str(exc.check) if isinstance(exc, MessageRefused) else exc.reason

    try:
        for i, c in sessions.items():
            server_take(i, c.start())
        for i, msg in server.advance().items():
            reply = client_step(i, msg)
            if reply is not None:
                server_take(i, reply)
        for i, msg in server.advance().items():
            reply = client_step(i, msg)
            if reply is not None:
                server_take(i, reply)
        for i, msg in server.advance().items():
            if i not in play.outcome:
                client_step(i, msg)
            if i not in play.outcome:
                play.outcome[i] = sessions[i].result
    except (SecAggError, CiphertextRejected) as exc:
        play.server_error = exc
    return play


def _sessions(s: _Setup, factory: Callable[[int], type[ClientSession]]) -> dict[int, ClientSession]:
    fed = s.federation
    return {i: factory(i)(s.config, i, s.updates[i], weight=s.weights[i], identity=fed.identities[i],
                          roster=fed.roster) for i in s.config.client_ids}


def _judge(s: _Setup, play: _Play, honest: Sequence[int]) -> tuple[bool, bool | None, str | None]:
    """(honest_completed, exact, first check that refused something)."""
    quantum = s.config.params.release_quantum
    completed, exact, released = True, True, False
    check: str | None = None
    for i in honest:
        got = play.outcome.get(i)
        if isinstance(got, Release):
            released = True
            expected = sum(s.weights[j] * s.updates[j].astype(np.float64) for j in got.contributors)
            if np.max(np.abs(got.weighted_sum - expected)) > quantum:
                completed = exact = False
        elif isinstance(got, CheckFailed):
            check = check or str(got.check)
        elif got is not None:  # a crash, not a named refusal
            completed = False
    if play.server_error is not None and not isinstance(play.server_error, ProtocolAbort):
        completed = False
    if check is None and play.refused_at_server:
        check = next(iter(play.refused_at_server.values()))
    return completed, (exact if released else None), check


def _honest_sum_released(s: _Setup, play: _Play, readers: Sequence[int],
                         allowed: Sequence[int] | None = None) -> bool:
    """Did every one of ``readers`` release the correct sum of uploads from ``allowed`` only?"""
    quantum = s.config.params.release_quantum
    got = [play.outcome.get(i) for i in readers]
    releases = [r for r in got if isinstance(r, Release)]
    if len(releases) != len(readers):
        return False
    for r in releases:
        if not set(r.contributors) <= set(readers if allowed is None else allowed):
            return False
        expected = sum(s.weights[j] * s.updates[j].astype(np.float64) for j in r.contributors)
        if np.max(np.abs(r.weighted_sum - expected)) > quantum:
            return False
    return True


def _decrypts(s: _Setup, seed: SecretBytes, upload: bytes, victim: int) -> bool:
    """Can ``seed`` decrypt the victim's individual upload? (What the key-swapping server tries.)"""
    seal = session_for(s.config)
    key = CKKSKey(seed, seal)
    layout = Layout(s.config.update_size, seal.slots)
    plain = [key.seal.decrypt_exact(seal.load(b, what="stolen")) for b in Upload.from_bytes(upload).chunks]
    weighted, weight, _ = layout.unpack(plain)
    expected = s.weights[victim] * s.updates[victim].astype(np.float64)
    return bool(np.max(np.abs(weighted - expected)) < 1e-3 and abs(weight - s.weights[victim]) < 1e-3)


def _wrong_releases(s: _Setup, play: _Play) -> list[int]:
    """Clients that released something other than the sum of their announced contributors."""
    out = []
    for i, r in play.outcome.items():
        if isinstance(r, Release):
            expected = sum(s.weights[j] * s.updates[j].astype(np.float64) for j in r.contributors)
            if np.max(np.abs(r.weighted_sum - expected)) > s.config.params.release_quantum:
                out.append(i)
    return out


@dataclass(slots=True)
class _Played:
    play: _Play
    sessions: dict[int, ClientSession]
    honest: Sequence[int]
    succeeded: bool
    detail: str


def _swap_keys(s: _Setup, off: bool) -> _Played:
    cfg, fed = s.config, s.federation
    victim = cfg.client_ids[-1]
    insecure = _insecure_client_class(["roster"] if off else [])
    server = _KeySwappingServer(cfg, roster=fed.roster, victim=victim)
    sessions = _sessions(s, lambda _i: insecure)
    play = _play(s, server, sessions)
    seed, upload = server.stolen_seed, server.victim_upload
    stolen = seed is not None and upload is not None and _decrypts(s, seed, upload, victim)
    detail = (f"the server obtained the round key and decrypted client {victim}'s upload" if stolen
              else "the server obtained no key and decrypted nothing")
    return _Played(play, sessions, cfg.client_ids, stolen, detail)


def _forge_aggregate(s: _Setup, off: bool, variant: str, position: int, delta: int) -> _Played:
    cfg, fed = s.config, s.federation
    insecure = _insecure_client_class(["sketch"] if off else [])
    server = _ForgingServer(cfg, roster=fed.roster, victim=cfg.client_ids[-1], variant=variant,
                            position=position, delta=delta)
    sessions = _sessions(s, lambda _i: insecure)
    play = _play(s, server, sessions)
    wrong = _wrong_releases(s, play)
    detail = (f"client(s) {wrong} accepted a forged aggregate ({variant})" if wrong
              else f"no client accepted the forged aggregate ({variant})")
    return _Played(play, sessions, cfg.client_ids, bool(wrong), detail)


def _low_order_key(s: _Setup, off: bool, variant: str) -> _Played:
    cfg, fed = s.config, s.federation
    evil = cfg.client_ids[-1]
    insecure = _insecure_client_class(["box-key"] if off else [])
    lax = off or variant == "relayed"  # "relayed": a server that does not check keys relays it
    server = (_BoxKeyBlindServer if lax else ServerSession)(cfg, roster=fed.roster)
    bad = type("LowOrderClient", (_LowOrderClient, insecure), {})
    sessions = _sessions(s, lambda i: bad if i == evil else insecure)
    play = _play(s, server, sessions)
    honest = [i for i in cfg.client_ids if i != evil]
    failed = not _honest_sum_released(s, play, honest)
    detail = ("the malicious enterprise stopped the round for the honest clients" if failed
              else "the malicious enterprise was left out; the honest clients got their sum")
    return _Played(play, sessions, honest, failed, detail)


def _garbage_shares(s: _Setup, off: bool, variant: str) -> _Played:
    cfg, fed = s.config, s.federation
    ids, dealer, last = cfg.client_ids, cfg.dealer, cfg.client_ids[-1]
    if variant == "dealer":
        evil = type("GarbageBoxDealer", (_GarbageBoxDealer,), {"victim": last})
        server = ServerSession(cfg, roster=fed.roster)
        sessions = _sessions(s, lambda i: evil if i == dealer else ClientSession)
        play = _play(s, server, sessions)
        honest = [i for i in ids if i != dealer]
        rest = [i for i in honest if i != last]
        clean = isinstance(play.outcome.get(last), CheckFailed)
        ok = clean and _honest_sum_released(s, play, rest, [i for i in ids if i != last])
        detail = (f"client {last} stopped with a clear error naming the dealer; the others completed"
                  if ok else "the malicious dealer's garbage box was not handled cleanly")
        return _Played(play, sessions, honest, not ok, detail)
    server = (_LazyServer if off else ServerSession)(cfg, roster=fed.roster)
    sessions = _sessions(s, lambda i: _GarbageUploader if i == last else ClientSession)
    play = _play(s, server, sessions)
    honest = [i for i in ids if i != last]
    failed = not _honest_sum_released(s, play, honest)
    detail = ("the garbage upload stopped the round for the honest clients" if failed else
              "the garbage upload was refused; its sender is a dropout and the honest clients got "
              "their sum")
    return _Played(play, sessions, honest, failed, detail)


def run_attack(
    name: str,
    *,
    clients: int = 4,
    params: int = 2000,
    preset: str = "compact",
    seed: int = 0,
    variant: str | None = None,
    position: int = 0,
    delta: int = 1,
    insecure_disable_defence: bool = False,
) -> AttackReport:
    """Play attack ``name`` (one of :data:`ATTACKS`) in one in-memory round and judge it.

    ``variant`` picks one of :data:`VARIANTS` (default: the first, the main run);
    ``position``/``delta`` pick what the ``forge-aggregate`` ``tweak`` and ``shift`` variants
    change. ``insecure_disable_defence`` switches the defence off (tests' positive controls only).
    """
    if name not in ATTACKS:
        raise InvalidParameter(f"unknown adversary {name!r}; choose one of {list(ATTACKS)}")
    variant = variant or VARIANTS[name][0]
    if variant not in VARIANTS[name]:
        raise InvalidParameter(f"unknown variant {variant!r} of {name}; choose one of "
                               f"{list(VARIANTS[name])}")
    s = _setup(clients, params, preset, seed)
    off = insecure_disable_defence
    if name == "swap-keys":
        played = _swap_keys(s, off)
    elif name == "forge-aggregate":
        played = _forge_aggregate(s, off, variant, position, delta)
    elif name == "low-order-key":
        played = _low_order_key(s, off, variant)
    else:
        played = _garbage_shares(s, off, variant)
    play = played.play
    completed, exact, check = _judge(s, play, played.honest)
    if check is None and any(x.excluded for x in played.sessions.values()):
        check = str(Check.BOX_KEY)  # the dealer left a member with an unusable key out
    refusals = {i: str(r.check) for i, r in play.outcome.items()
                if isinstance(r, CheckFailed) and i in played.honest}
    refusals.update({i: f"server: {c}" for i, c in play.refused_at_server.items()})
    releases = [r for r in play.outcome.values() if isinstance(r, Release)]
    return AttackReport(
        adversary=name,
        attack_succeeded=played.succeeded,
        honest_completed=completed,
        detected_by=None if played.succeeded else check,
        exact=exact,
        variant=variant,
        defence=not off,
        clients=clients,
        params=params,
        detail=played.detail,
        round_ended=None if play.server_error is None else str(play.server_error),
        refusals=refusals,
        contributors=list(releases[0].contributors) if releases else [],
    )
