"""Shared helpers for the CKKS tests: small rounds with real TenSEAL ciphertexts."""

from __future__ import annotations

import numpy as np
import pytest

from secagg.ckks import CKKSClient, CKKSRoundConfig, CKKSServer, Preset, simulate
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
    """Test defaults on top of :func:`secagg.ckks.simulate.make_config` (dealer = client 1)."""
    return simulate.make_config(
        params,
        update_size=size,
        num_clients=n,
        min_clients=min_clients,
        round=round,
        weight_bound=weight_bound,
    )


def ceremony(config: CKKSRoundConfig) -> tuple[CKKSServer, dict[int, CKKSClient]]:
    """Run the key ceremony through the server; every client ends up keyed."""
    server = CKKSServer(config)
    clients = {i: CKKSClient(config, i) for i in config.client_ids}
    simulate.key_ceremony(server, clients)
    return server, clients


def updates_for(config: CKKSRoundConfig, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-1, 1, config.update_size).astype(np.float32) for i in config.client_ids}


@pytest.fixture
def small_round() -> tuple[CKKSRoundConfig, CKKSServer, dict[int, CKKSClient]]:
    config = make_config()
    server, clients = ceremony(config)
    return config, server, clients
