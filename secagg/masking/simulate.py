"""One whole masking round in memory: the real state machines, the real wire encoding, dropouts.

This is what ``secagg simulate masking`` and the benchmarks run, and what the tests attack. Every
message crosses the same byte encoding a network transport would use; only the socket is missing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter, NotEnoughParticipants
from secagg.hazmat.signing import signing_key_from_private_bytes
from secagg.identity import Identity, Roster
from secagg.masking import messages as m
from secagg.masking import wire
from secagg.masking.client import ClientSession
from secagg.masking.config import MaskingConfig, Stage
from secagg.masking.server import ServerSession
from secagg.masking.update import Aggregate, encode_update

__all__ = ["DROP_STAGES", "SimulationResult", "insecure_simulated_federation", "plan_dropouts",
           "simulate_round", "simulated_federation_for"]

#: Stages at which a client can vanish, in protocol order.
DROP_STAGES = (Stage.ADVERTISE, Stage.SHARE, Stage.MASKED_INPUT, Stage.CONSISTENCY, Stage.UNMASK)

_REPLY_STAGE = {
    m.KeyDirectory: Stage.SHARE,
    m.ShareDelivery: Stage.MASKED_INPUT,
    m.ConsistencyRequest: Stage.CONSISTENCY,
    m.UnmaskRequest: Stage.UNMASK,
}


@dataclass
class SimulationResult:
    """What one simulated round produced, and what it cost."""

    config: MaskingConfig
    aggregate: Aggregate | None
    error: str | None
    expected_total: npt.NDArray[np.uint64]
    expected_survivors: tuple[int, ...]
    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=dict)
    upload_bytes: dict[int, int] = field(default_factory=dict)
    masked_input_bytes: int = 0

    @property
    def exact(self) -> bool:
        """The unmasked sum equals the plaintext sum of the survivors' quantised updates."""
        if self.aggregate is None:
            return False
        modulus = np.uint64(1 << self.config.mod_bits)
        want = (self.expected_total % modulus)[:-1].astype(np.uint32)
        return (self.aggregate.survivors == self.expected_survivors
                and bool(np.array_equal(self.aggregate.total, want))
                and self.aggregate.total_weight == int(self.expected_total[-1]))


@lru_cache(maxsize=32)
def insecure_simulated_federation(num_clients: int, *, corrupt_rate: float = 0.05
                                  ) -> tuple[Roster, tuple[Identity, ...]]:
    """A roster of ``num_clients`` members with identities derived from a public label.

    For in-memory simulations and tests only: anyone can recompute these private keys. Real
    enterprises create theirs with :meth:`secagg.identity.Identity.create`. ``corrupt_rate``
    is the roster's policy; 0.0 lets a test pick a deliberately small graph (to show an attack
    where disjoint groups of t clients exist) that a real policy would refuse.
    """
    identities = tuple(
        Identity(f"sim-{i}", signing_key_from_private_bytes(
            hashlib.sha256(b"secagg-insecure-simulated-identity" + i.to_bytes(4, "big")).digest()))
        for i in range(num_clients))
    return Roster.of("simulation", identities, corrupt_rate=corrupt_rate), identities


def simulated_federation_for(config: MaskingConfig) -> tuple[Roster, tuple[Identity, ...]]:
    """The :func:`insecure_simulated_federation` a config is bound to (any tested policy)."""
    for rate in (0.05, 0.0, 0.01, 0.1):
        roster, identities = insecure_simulated_federation(config.num_clients, corrupt_rate=rate)
        if roster.digest() == config.roster_digest:
            return roster, identities
    raise InvalidParameter("this config is bound to a roster that is not a simulated one; "
                           "pass roster= and identities=")


def plan_dropouts(num_clients: int, fraction: float, stage: Stage | str, *, active: bool,
                  rng: np.random.Generator) -> dict[int, Stage]:
    """Choose round(fraction * n) clients to drop at ``stage`` ("random": each at a random one)."""
    count = round(fraction * num_clients)
    victims: list[int] = [int(v) for v in rng.choice(num_clients, size=count, replace=False)]
    stages = [s for s in DROP_STAGES if active or s is not Stage.CONSISTENCY]
    plan = {}
    for v in victims:
        plan[int(v)] = stages[int(rng.integers(len(stages)))] if stage == "random" \
            else Stage(stage)
    return plan


def simulate_round(
    config: MaskingConfig,
    updates: Sequence[npt.ArrayLike],
    *,
    weights: Sequence[int] | None = None,
    dropouts: Mapping[int, Stage] | None = None,
    rng: np.random.Generator | None = None,
    identities: Sequence[Identity] | None = None,
    roster: Roster | None = None,
) -> SimulationResult:
    """Run one round; ``dropouts`` maps a client to the stage at which it stops answering.

    Active configs need the federation's ``roster`` and each client's identity; by default the
    :func:`insecure_simulated_federation` of the config's size is used.
    """
    n = config.num_clients
    rng = rng if rng is not None else np.random.default_rng()
    drops = dict(dropouts or {})
    weights = list(weights) if weights is not None else [1] * n
    if config.roster_digest and roster is None:
        roster, identities = simulated_federation_for(config)
    client_seconds = {i: 0.0 for i in range(n)}
    values = {}
    for i in range(n):
        t0 = time.perf_counter()
        values[i] = encode_update(config, updates[i], weight=weights[i], rng=rng)
        client_seconds[i] += time.perf_counter() - t0
    clients = {i: ClientSession(config, i, values[i],
                                identity=identities[i] if identities is not None else None,
                                roster=roster) for i in range(n)}
    server = ServerSession(config, roster=roster)
    upload = {i: 0 for i in range(n)}
    outbox: dict[int, bytes] = {}
    for i, client in clients.items():
        if drops.get(i) is Stage.ADVERTISE:
            continue
        t0 = time.perf_counter()
        outbox[i] = wire.encode(client.start())
        client_seconds[i] += time.perf_counter() - t0
    gone = {i for i, s in drops.items() if s is Stage.ADVERTISE}
    masked_bytes = 0
    expected = np.zeros(config.wire_length, dtype=np.uint64)  # the uploaders' plaintext sum
    error: str | None = None
    uploaded = set()
    server_seconds: dict[str, float] = {}  # the driver measures; sessions read no clocks

    def timed(stage: Stage, t0: float) -> None:
        server_seconds[stage.value] = server_seconds.get(stage.value, 0.0) + \
            time.perf_counter() - t0

    while True:
        for i, data in outbox.items():
            upload[i] += len(data)
            if wire.peek_type(data) is m.MaskedInput:
                masked_bytes = len(data)
                uploaded.add(i)
                expected += values.pop(i)  # the plaintext this upload adds; not needed again
            stage, t0 = server.stage, time.perf_counter()
            server.receive(data)
            timed(stage, t0)
        stage, t0 = server.stage, time.perf_counter()
        try:
            outgoing = server.advance_bytes()
        except NotEnoughParticipants as exc:
            error = str(exc)
            break
        finally:
            timed(stage, t0)
        if server.stage is Stage.DONE:
            break
        outbox = {}
        for i, data in outgoing.items():
            if i in gone:
                continue
            t0 = time.perf_counter()
            msg = wire.decode(data)
            if drops.get(i) is _REPLY_STAGE[type(msg)]:
                gone.add(i)
                continue
            outbox[i] = wire.encode(clients[i].handle(msg))
            client_seconds[i] += time.perf_counter() - t0
    return SimulationResult(
        config=config,
        aggregate=server.result if error is None else None,
        error=error,
        expected_total=expected,
        expected_survivors=tuple(sorted(uploaded)),
        client_seconds=client_seconds,
        server_seconds=server_seconds,
        upload_bytes=upload,
        masked_input_bytes=masked_bytes,
    )
