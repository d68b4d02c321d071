"""A distributed-DP release is recorded before it can happen: each client writes its
client-level ledger entry (with the noise shares of the survivor set it signed) just before it
sends the unmask reply, so a server that unmasks the noisy sum and then withholds or forges the
result still leaves the release in every honest ledger (review finding: it used to be recorded
only once a result was accepted)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from secagg.dp.client_level import client_level_epsilon
from secagg.dp.distributed import DistributedNoise
from secagg.dp.ledger import PrivacyLedger
from secagg.errors import ProtocolAbort
from secagg.masking import MaskingConfig
from secagg.masking.simulate import insecure_simulated_federation
from secagg_clients.participants import RoundInfo, _Masking
from secagg_server.modes.masking import MaskingRound

N, DIM = 5, 300


def test_the_release_is_in_every_ledger_before_the_server_can_unmask(tmp_path: Path) -> None:
    roster, identities = insecure_simulated_federation(N, corrupt_rate=0.05)
    cfg = MaskingConfig.create(num_clients=N, vector_length=DIM, clip=0.5, roster=roster,
                               dp_noise_multiplier=1.0, dp_l2_clip=0.5)
    rng = np.random.default_rng(5)
    ups = [rng.normal(0, 0.01, DIM).astype(np.float32) for _ in range(N)]
    ledgers = [PrivacyLedger.open(tmp_path / f"e{i}.ledger.json", enterprise=f"e{i}",
                                  budget_epsilon=50.0, delta=1e-5) for i in range(N)]
    server = MaskingRound(cfg.to_dict(), frozenset(range(N)), roster)
    seen_at: list[str] = []

    def hook(i: int):  # type: ignore[no-untyped-def]
        def released(noise: DistributedNoise, shares: int) -> None:
            seen_at.append(server.stage)  # the server is still waiting for unmask replies
            ledgers[i].record_client_level(noise, noise_shares=shares, server_round_id="r1")
        return released

    parties = [_Masking(RoundInfo(1, 0, "masking", cfg.to_dict(), i), ups[i], 1,
                        identity=identities[i], roster=roster) for i in range(N)]
    for i, p in enumerate(parties):
        p.on_release = hook(i)
    outbox = {i: p.first() for i, p in enumerate(parties)}
    while not server.done:
        for i, body in outbox.items():
            server.receive(i, body)
        outbox = {}
        for i, data in server.advance().items():
            answer = parties[i].reply(data)
            if answer is not None:
                outbox[i] = answer
    assert seen_at == ["unmask"] * N
    want = client_level_epsilon(parties[0].noise, rounds=1, delta=1e-5, num_contributors=N)
    # the server now holds the noisy sum; it hands every client a result they must refuse
    meta, payload = server.result()
    forged = dataclasses.replace(meta, survivors=meta.survivors[:-1])
    for p in parties:
        with pytest.raises(ProtocolAbort):
            p.decode(forged, payload)
    for i in range(N):  # yet every ledger, read back from disk, holds the release
        back = PrivacyLedger.open(tmp_path / f"e{i}.ledger.json", enterprise=f"e{i}",
                                  budget_epsilon=50.0, delta=1e-5)
        (entry,) = back.client_level_entries
        assert entry.noise_shares == N and entry.server_round_id == "r1"
        assert entry.epsilon == pytest.approx(want, rel=1e-9)
