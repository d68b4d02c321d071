"""Drive one whole CKKS round in memory with the real sessions and the real wire bytes.

The loop here is the transport: it passes bytes between :class:`~secagg.ckks.client.ClientSession`
and :class:`~secagg.ckks.server.ServerSession` exactly as the HTTP service does, and times each
party's work: the sessions read no clock, so the calls are timed here and the client sessions'
named phases (:mod:`secagg.ckks.phases`) by a :class:`PhaseTimer` each. Used by ``secagg
simulate ckks``, ``secagg bench ckks``, the adversary harness and the tests.

A simulated federation (:class:`Federation`) is a roster of throwaway in-memory identities.
:func:`make_config` makes one when none is given and remembers it by its roster digest, so
:func:`run_round` finds the identities for the config it is handed; pass ``federation=`` to
either to use your own.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from secagg.ckks.client import ClientSession
from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.presets import CKKSParams
from secagg.ckks.release import Release
from secagg.ckks.server import ServerSession
from secagg.errors import InvalidParameter, RejectedMessage
from secagg.identity import Identity, Roster

__all__ = ["Federation", "PhaseTimer", "RoundResult", "federation_for", "make_config", "run_round"]

_REMEMBERED = 64  # simulated federations kept for run_round (throwaway keys, tests and benches)
_SIMULATED: dict[bytes, Federation] = {}


@dataclass(frozen=True, slots=True, eq=False)
class Federation:
    """A roster and the private identities behind it: a simulation's enterprises, in memory."""

    roster: Roster
    identities: Mapping[int, Identity]

    @classmethod
    def generate(cls, client_ids: Sequence[int], *, name: str = "simulated-ckks") -> Federation:
        """Fresh identities ``enterprise-<id>`` for ``client_ids`` and their roster."""
        identities = {i: Identity.generate(f"enterprise-{i}") for i in client_ids}
        roster = Roster(name, tuple(ident.member(i) for i, ident in identities.items()))
        return cls(roster, identities)

    def __repr__(self) -> str:
        return f"<Federation {self.roster.federation} members={len(self.roster)} identities=redacted>"


def federation_for(config: CKKSRoundConfig) -> Federation:
    """The simulated federation :func:`make_config` made for ``config`` (by its roster digest)."""
    fed = _SIMULATED.get(config.roster_digest)
    if fed is None:
        raise InvalidParameter(
            "this config's roster is not a simulated federation made by make_config; pass "
            "federation= (its roster and identities)"
        )
    return fed


def make_config(
    params: CKKSParams,
    *,
    update_size: int,
    num_clients: int,
    min_clients: int | None = None,
    value_bound: float = 1.0,
    weight_bound: float = 1.0,
    round: int = 0,
    federation: Federation | None = None,
) -> CKKSRoundConfig:
    """A round over clients ``1..num_clients`` (the dealer is client 1), bound to a roster."""
    ids = tuple(range(1, num_clients + 1))
    if federation is None:
        federation = Federation.generate(ids)
    digest = federation.roster.digest()
    if len(_SIMULATED) >= _REMEMBERED and digest not in _SIMULATED:
        del _SIMULATED[next(iter(_SIMULATED))]
    _SIMULATED[digest] = federation
    return CKKSRoundConfig(
        params=params,
        update_size=update_size,
        client_ids=ids,
        dealer=ids[0],
        min_clients=min_clients if min_clients is not None else max(2, num_clients // 2 + 1),
        round=round,
        session=secrets.token_bytes(32),
        roster_digest=digest,
        value_bound=value_bound,
        weight_bound=weight_bound,
    )


class PhaseTimer:
    """A :data:`~secagg.ckks.phases.PhaseListener` that sums the seconds a session spends in each
    named phase (``seconds["encrypt"]``, ...): the driver's clock, passed as ``on_phase``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def __call__(self, phase: str, started: bool) -> None:
        now = time.perf_counter()
        if started:
            self._started[phase] = now
            return
        begun = self._started.pop(phase, None)
        if begun is not None:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + now - begun

    def __repr__(self) -> str:
        return f"<PhaseTimer {', '.join(f'{k}={v:.4f}s' for k, v in self.seconds.items())}>"


@dataclass(slots=True)
class RoundResult:
    """What happened in a simulated round, with per-party timings in seconds."""

    release: Release
    upload_bytes: dict[int, int]
    aggregate_bytes: int
    ceremony_s: float
    client_encrypt_s: dict[int, float]
    server_sum_s: float
    client_decrypt_s: float
    client_sketch_s: dict[int, float] = field(default_factory=dict)
    client_verify_s: float = 0.0
    rejected: dict[int, str] = field(default_factory=dict)
    server: ServerSession | None = None
    clients: dict[int, ClientSession] = field(default_factory=dict)
    #: each client's seconds per named phase (see :class:`PhaseTimer`)
    client_phases: dict[int, dict[str, float]] = field(default_factory=dict)


def run_round(
    config: CKKSRoundConfig,
    updates: Mapping[int, npt.NDArray[np.floating]],
    *,
    weights: Mapping[int, float] | None = None,
    drop: Sequence[int] = (),
    tamper: Mapping[int, Callable[[bytes], bytes]] | None = None,
    on_client_done: Callable[[int], None] | None = None,
    federation: Federation | None = None,
    decrypt_at: Sequence[int] | None = None,
) -> RoundResult:
    """One round through the two sessions.

    ``drop`` clients vanish after the key ceremony (they never upload); ``tamper`` rewrites a
    client's upload in transit (the server refuses it: that client is a dropout). The aggregate
    is verified and decrypted by ``decrypt_at`` (default: the first contributor), whose release
    is returned. Raises :class:`~secagg.errors.NotEnoughParticipants` when too few remain.
    """
    fed = federation if federation is not None else federation_for(config)
    server = ServerSession(config, roster=fed.roster)
    timers = {i: PhaseTimer() for i in config.client_ids}
    clients = {
        i: ClientSession(config, i, updates[i], weight=1.0 if weights is None else weights[i],
                         identity=fed.identities[i], roster=fed.roster, on_phase=timers[i])
        for i in config.client_ids
    }
    t0 = time.perf_counter()
    for client in clients.values():
        server.receive(client.start())
    for i, request in server.advance().items():
        reply = clients[i].handle_bytes(request)
        if reply is not None:
            server.receive(reply)
    deliveries = server.advance()
    ceremony = time.perf_counter() - t0

    uploads: dict[int, bytes] = {}
    enc_s: dict[int, float] = {}
    sketch_s: dict[int, float] = {}
    for i, delivery in deliveries.items():
        if i in drop:
            continue
        t = time.perf_counter()
        upload = clients[i].handle_bytes(delivery)
        enc_s[i] = time.perf_counter() - t
        assert upload is not None  # a key delivery is always answered with the upload
        sketch_s[i] = timers[i].seconds.get("sketch", 0.0)
        uploads[i] = tamper[i](upload) if tamper and i in tamper else upload
        if on_client_done is not None:
            on_client_done(i)
    opened = [timers[i].seconds.get("open key", 0.0) for i in deliveries if i in enc_s]
    ceremony += float(np.mean(opened)) if opened else 0.0

    rejected: dict[int, str] = {}
    t = time.perf_counter()
    for i, blob in uploads.items():
        try:
            server.receive(blob)
        except RejectedMessage as exc:
            rejected[i] = exc.reason
    aggregates = server.advance()
    server_s = time.perf_counter() - t

    readers = list(decrypt_at) if decrypt_at is not None else [next(iter(aggregates))]
    if not readers or not set(readers) <= set(aggregates):
        raise InvalidParameter(f"decrypt_at must name contributors of the round {sorted(aggregates)}, "
                               f"found {readers}")
    dec_s = verify_s = 0.0
    for n, i in enumerate(readers):
        t = time.perf_counter()
        clients[i].handle_bytes(aggregates[i])
        if n == 0:
            dec_s = time.perf_counter() - t
            verify_s = timers[i].seconds.get("verify aggregate", 0.0)
    return RoundResult(
        release=clients[readers[0]].result,
        upload_bytes={i: len(b) for i, b in uploads.items()},
        aggregate_bytes=len(next(iter(aggregates.values()))),
        ceremony_s=ceremony,
        client_encrypt_s=enc_s,
        server_sum_s=server_s,
        client_decrypt_s=dec_s,
        client_sketch_s=sketch_s,
        client_verify_s=verify_s,
        rejected=rejected,
        server=server,
        clients=clients,
        client_phases={i: dict(t.seconds) for i, t in timers.items()},
    )
