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
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as sealapi

from secagg.ckks.checks import Check, CheckFailed, MessageRefused
from secagg.ckks.client import ClientSession, session_for
from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.keys import CKKSKey, box_aad, box_context
from secagg.ckks.layout import Layout
from secagg.ckks.messages import (
    Aggregate,
    KeyAdvert,
    KeyBox,
    KeyDelivery,
    KeyDistribution,
    KeyRequest,
    Receipt,
    Upload,
)
from secagg.ckks.presets import Preset
from secagg.ckks.release import Release
from secagg.ckks.server import ServerSession
from secagg.ckks.simulate import Federation, federation_for, make_config
from secagg.errors import InvalidParameter, ProtocolAbort, RejectedMessage, SecAggError
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.seal_codec import _HEADER, CiphertextRejected, SealSession, _Zstd
from secagg.hazmat.sealed_box import open_box, seal_to

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


# ---- positive controls: the sessions with a defence switched off (tests only) --------------------


class _InsecureClient(ClientSession):
    """A client with the named checks switched off. Positive controls only."""

    insecure_skip: frozenset[str] = frozenset()

    def _verify_advert(self, advert: KeyAdvert) -> None:
        if "roster" not in self.insecure_skip:
            super()._verify_advert(advert)

    def _verify_distribution(self, dist: KeyDistribution) -> None:
        if "roster" not in self.insecure_skip:
            super()._verify_distribution(dist)

    def _check_box_key(self, public: bytes) -> None:
        if "box-key" not in self.insecure_skip:
            super()._check_box_key(public)

    def _check_sketch(self, key: CKKSKey, msg: Aggregate, cts: list[Any]) -> None:
        if "sketch" not in self.insecure_skip:
            super()._check_sketch(key, msg, cts)


def _insecure_client_class(skip: Sequence[str]) -> type[ClientSession]:
    return type("InsecureClientSession", (_InsecureClient,), {"insecure_skip": frozenset(skip)})


class _BoxKeyBlindServer(ServerSession):
    """An honest server except that it does not check X25519 box keys (a buggy or lax relay)."""

    def _check_box_key(self, advert: KeyAdvert) -> None:
        return None


class _LazyServer(ServerSession):
    """Positive control for garbage uploads: takes signed uploads unchecked, sums at the end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: list[Upload] = []

    def _receive_upload(self, data: bytes) -> None:
        upload = Upload.from_bytes(data)
        self.roster.verify(upload.client_id, upload.signature, upload.signed_bytes(), what="upload")
        self.pending.append(upload)

    def _close_uploads(self) -> dict[int, bytes]:
        for upload in self.pending:  # garbage fails here, after the stage: the round is lost
            cts = [self._seal.load(b, what="ciphertext") for b in upload.chunks]
            if self._sums is None:
                self._sums = cts
            else:
                for acc, ct in zip(self._sums, cts, strict=True):
                    self._seal.add_inplace(acc, ct)
            self._receipts[upload.client_id] = Receipt(
                upload.client_id, upload.chunks_digest(), upload.sealed_sketch, upload.signature
            )
        return super()._close_uploads()


# ---- malicious servers -------------------------------------------------------------------------


class _KeySwappingServer(ServerSession):
    """Relays the dealer a key request with its own X25519 key in place of the victim's."""

    def __init__(self, *args: Any, victim: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.victim = victim
        self.attacker = X25519KeyPair.generate()
        self.stolen_seed: SecretBytes | None = None
        self.victim_upload: bytes | None = None
        self._dealt: KeyDistribution | None = None

    def _close_adverts(self) -> dict[int, bytes]:
        out = super()._close_adverts()
        request = KeyRequest.from_bytes(next(iter(out.values())))
        swapped = tuple(
            dataclasses.replace(a, box_public=self.attacker.public_bytes) if a.client_id == self.victim else a
            for a in request.adverts
        )
        out[self.config.dealer] = KeyRequest(request.config_digest, swapped).to_bytes()
        return out  # the others see the genuine adverts: only the dealer's view is forged

    def _receive_distribution(self, data: bytes) -> None:
        # No checks: the server is malicious. Open the victim's box, re-seal it to the victim.
        dist = KeyDistribution.from_bytes(data)
        self._dealt = dist
        box = dist.box_for(self.victim)
        if box is None or box.box_public != self.attacker.public_bytes:
            self._distribution = dist
            return
        cfg = self.config
        raw = open_box(self.attacker, box.sealed, box_context(cfg, self.victim),
                       aad=box_aad(cfg, self.victim, self.attacker.public_bytes))
        self.stolen_seed = SecretBytes(raw, label="stolen-seed")
        real = self._adverts[self.victim].box_public
        resealed = seal_to(real, raw, box_context(cfg, self.victim), aad=box_aad(cfg, self.victim, real))
        boxes = tuple(KeyBox(self.victim, real, resealed) if b.recipient == self.victim else b
                      for b in dist.boxes)
        self._distribution = dataclasses.replace(dist, boxes=boxes)  # the dealer's signature breaks

    def _close_keys(self) -> dict[int, bytes]:
        out = super()._close_keys()
        if self._dealt is not None:  # the dealer gets its own distribution back: it notices nothing
            out[self.config.dealer] = KeyDelivery(self._digest, self._dealt).to_bytes()
        return out

    def _receive_upload(self, data: bytes) -> None:
        super()._receive_upload(data)
        if Upload.from_bytes(data).client_id == self.victim:
            self.victim_upload = data


class _ForgingServer(ServerSession):
    """Sums honestly, then hands out a forged aggregate with the genuine receipts."""

    def __init__(self, *args: Any, victim: int, variant: str, position: int = 0, delta: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.victim, self.variant = victim, variant
        self.position, self.delta = position, delta
        self.uploads: dict[int, Upload] = {}

    def _receive_upload(self, data: bytes) -> None:
        super()._receive_upload(data)
        upload = Upload.from_bytes(data)
        self.uploads[upload.client_id] = upload

    def _close_uploads(self) -> dict[int, bytes]:
        out = super()._close_uploads()
        honest = Aggregate.from_bytes(self.result.aggregate)
        contributors = honest.contributors
        seal = self._seal
        if self.variant == "tweak":
            tweaked = tweak_coefficient(seal, honest.chunks[0], self.position, self.delta)
            chunks = (tweaked, *honest.chunks[1:])
        elif self.variant == "shift":  # + delta on the first released value, a plausible change
            ct = seal.load(honest.chunks[0], what="forged")
            shift = np.zeros(seal.slots, dtype=np.complex128)
            shift[0] = float(self.delta)
            plain = sealapi.Plaintext()
            seal.encoder.encode(shift.tolist(), seal.parms_id, seal.scale, plain)
            seal.evaluator.add_plain_inplace(ct, plain)
            chunks = (seal.dump(ct), *honest.chunks[1:])
        else:
            if self.variant == "replay":  # the victim's upload once per contributor
                parts = [self.victim] * len(contributors)
            else:  # drop-one: leave the last contributor out, count the first one twice
                parts = [*contributors[:-1], contributors[0]]
            sums = [seal.load(b, what="forged") for b in self.uploads[parts[0]].chunks]
            for who in parts[1:]:
                for acc, blob in zip(sums, self.uploads[who].chunks, strict=True):
                    seal.add_inplace(acc, seal.load(blob, what="forged"))
            chunks = tuple(seal.dump(ct) for ct in sums)
        forged = Aggregate(honest.config_digest, honest.round, honest.receipts, chunks).to_bytes()
        return dict.fromkeys(out, forged)


# ---- malicious enterprises -------------------------------------------------------------------


class _LowOrderClient(ClientSession):
    """Advertises the all-zero X25519 key (a low-order point), signed with its real identity."""

    def start(self) -> bytes:
        honest = KeyAdvert.from_bytes(super().start())
        bad = KeyAdvert(honest.config_digest, honest.client_id, bytes(32), b"")
        return KeyAdvert(bad.config_digest, bad.client_id, bad.box_public,
                         self._identity.signing_key.sign(bad.signed_part())).to_bytes()


class _GarbageUploader(ClientSession):
    """Uploads random bytes as ciphertexts, under its own valid identity signature."""

    def _upload(self) -> bytes:
        honest = Upload.from_bytes(super()._upload())
        junk = tuple(os.urandom(len(c)) for c in honest.chunks)
        unsigned = dataclasses.replace(honest, chunks=junk, signature=b"")
        signature = self._identity.signing_key.sign(unsigned.signed_bytes())
        return dataclasses.replace(unsigned, signature=signature).to_bytes()


class _GarbageBoxDealer(ClientSession):
    """A malicious dealer: signs a distribution whose box for ``victim`` is random bytes."""

    victim: int = -1

    def _on_key_request(self, data: bytes) -> bytes | None:
        reply = super()._on_key_request(data)
        if reply is None:
            return None
        dist = KeyDistribution.from_bytes(reply)
        boxes = tuple(dataclasses.replace(b, sealed=os.urandom(len(b.sealed))) if b.recipient == self.victim
                      else b for b in dist.boxes)
        unsigned = dataclasses.replace(dist, boxes=boxes, signature=b"")
        signature = self._identity.signing_key.sign(unsigned.signed_part())
        signed = dataclasses.replace(unsigned, signature=signature)
        self._distribution = signed.to_bytes()
        return self._distribution


# ---- tampering helper --------------------------------------------------------------------------


def tweak_coefficient(session: SealSession, blob: bytes, position: int, delta: int) -> bytes:
    """``blob`` (one ciphertext) with coefficient ``position`` of its ``(2, L, N)`` data moved by
    ``delta`` modulo its prime, re-serialised uncompressed (SEAL loads that too)."""
    ct = session.load(blob, what="ciphertext to tweak")
    coeffs = session.coefficients(ct)
    count = coeffs.size
    if not 0 <= position < count:
        raise InvalidParameter(f"position must be in [0, {count}), found {position}")
    raw = session.dump(ct)
    magic, hsize, major, minor, _, reserved, _ = _HEADER.unpack_from(raw)
    body = np.empty(count * 8 + 4096, dtype=np.uint8)
    body = body[: _Zstd.decompress_into(raw[_HEADER.size :], body, what="ciphertext to tweak")].copy()
    start = body.size - count * 8
    values = body[start:].view("<u8")
    q = session.level_moduli[(position // session.n) % len(session.level_moduli)]
    values[position] = (int(values[position]) + delta) % q
    payload = body.tobytes()
    header = _HEADER.pack(magic, hsize, major, minor, 0, reserved, _HEADER.size + len(payload))
    return header + payload


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
