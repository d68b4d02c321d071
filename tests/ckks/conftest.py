"""Shared helpers for the CKKS tests: small rounds with real TenSEAL ciphertexts."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

from secagg.ckks import CKKSClient, CKKSRoundConfig, CKKSServer, Preset
from secagg.ckks.presets import CKKSParams


def make_config(
    params: CKKSParams = Preset.COMPACT.params,
    *,
    size: int = 1000,
    n: int = 3,
    min_clients: int = 2,
    round: int = 0,
    weight_bound: float = 4.0,
) -> CKKSRoundConfig:
    ids = tuple(range(1, n + 1))
    return CKKSRoundConfig(
        params=params,
        update_size=size,
        client_ids=ids,
        dealer=1,
        min_clients=min_clients,
        round=round,
        session=secrets.token_bytes(32),
        value_bound=1.0,
        weight_bound=weight_bound,
    )


def ceremony(config: CKKSRoundConfig) -> tuple[CKKSServer, dict[int, CKKSClient]]:
    """Run the key ceremony through the server; every client ends up keyed."""
    server = CKKSServer(config)
    clients = {i: CKKSClient(config, i) for i in config.client_ids}
    for c in clients.values():
        server.receive_advert(c.advertise())
    server.receive_key_distribution(clients[config.dealer].deal(server.key_request()))
    for i, c in clients.items():
        if i != config.dealer:
            c.receive_key(server.key_delivery(i))
    return server, clients


def updates_for(config: CKKSRoundConfig, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-1, 1, config.update_size).astype(np.float32) for i in config.client_ids}


@pytest.fixture
def small_round() -> tuple[CKKSRoundConfig, CKKSServer, dict[int, CKKSClient]]:
    config = make_config()
    server, clients = ceremony(config)
    return config, server, clients
