"""Shared helpers for the CKKS tests: small rounds with real TenSEAL ciphertexts and real keys."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from secagg.ckks import CKKSRoundConfig, ClientSession, Preset, ServerSession, simulate
from secagg.ckks.presets import CKKSParams
from secagg.ckks.simulate import Federation, federation_for


def make_config(
    params: CKKSParams = Preset.COMPACT.params,
    *,
    size: int = 1000,
    n: int = 3,
    min_clients: int = 2,
    round: int = 0,
    weight_bound: float = 4.0,
    federation: Federation | None = None,
) -> CKKSRoundConfig:
    """Test defaults on top of :func:`secagg.ckks.simulate.make_config` (dealer = client 1)."""
    return simulate.make_config(
        params,
        update_size=size,
        num_clients=n,
        min_clients=min_clients,
        round=round,
        weight_bound=weight_bound,
        federation=federation,
    )


def updates_for(config: CKKSRoundConfig, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-1, 1, config.update_size).astype(np.float32) for i in config.client_ids}


@dataclass
class Parts:
    """One round driven by hand: the sessions, and the messages of the last stage closed."""

    config: CKKSRoundConfig
    federation: Federation
    server: ServerSession
    clients: dict[int, ClientSession]
    updates: dict[int, np.ndarray]
    deliveries: dict[int, bytes] = field(default_factory=dict)

    def uploads(self, ids: tuple[int, ...] | None = None) -> dict[int, bytes]:
        """Each client's answer to its key delivery (its upload), not yet sent to the server."""
        out = {}
        for i in ids if ids is not None else tuple(self.deliveries):
            reply = self.clients[i].handle_bytes(self.deliveries[i])
            assert reply is not None
            out[i] = reply
        return out

    def aggregate(self, uploads: dict[int, bytes]) -> dict[int, bytes]:
        for blob in uploads.values():
            self.server.receive(blob)
        return self.server.advance()


def keyed_round(
    config: CKKSRoundConfig | None = None, *, seed: int = 0, weights: dict[int, float] | None = None
) -> Parts:
    """A round through the key ceremony: adverts, key request, the dealer's distribution."""
    config = config or make_config()
    fed = federation_for(config)
    updates = updates_for(config, seed)
    server = ServerSession(config, roster=fed.roster)
    clients = {
        i: ClientSession(config, i, updates[i], weight=(weights or {}).get(i, 1.0),
                         identity=fed.identities[i], roster=fed.roster)
        for i in config.client_ids
    }
    for c in clients.values():
        server.receive(c.start())
    for i, request in server.advance().items():
        reply = clients[i].handle_bytes(request)
        if reply is not None:
            server.receive(reply)
    parts = Parts(config, fed, server, clients, updates)
    parts.deliveries = server.advance()
    return parts


@pytest.fixture
def keyed() -> Parts:
    return keyed_round()
