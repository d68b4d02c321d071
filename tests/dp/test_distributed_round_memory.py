"""The client side of a distributed-DP masking round, in memory with the service's own round
adapter: the released sum decodes to the clipped updates plus the noise, and a server whose
result misstates the survivors (so the offset, the noise shares and the client-level epsilon the
ledger would record) is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg.contract import ReleasedAggregate
from secagg.errors import ProtocolAbort
from secagg.masking import MaskingConfig
from secagg.masking.simulate import insecure_simulated_federation
from secagg_clients.participants import RoundInfo, _Masking
from secagg_server.modes.masking import MaskingRound

N, DIM = 5, 300


def _round() -> tuple[list[_Masking], ReleasedAggregate, bytes, list[np.ndarray]]:
    roster, identities = insecure_simulated_federation(N, corrupt_rate=0.05)
    cfg = MaskingConfig.create(num_clients=N, vector_length=DIM, clip=0.5, roster=roster,
                               dp_noise_multiplier=1.0, dp_l2_clip=0.5)
    info = [RoundInfo(1, 0, "masking", cfg.to_dict(), i) for i in range(N)]
    rng = np.random.default_rng(3)
    ups = [rng.normal(0, 0.01, DIM).astype(np.float32) for _ in range(N)]
    parties = [_Masking(info[i], ups[i], 7, identity=identities[i], roster=roster)
               for i in range(N)]
    server = MaskingRound(cfg.to_dict(), frozenset(range(N)), roster)
    outbox = {i: p.first() for i, p in enumerate(parties)}
    while not server.done:
        for i, body in outbox.items():
            server.receive(i, body)
        inbox = server.advance()
        outbox = {}
        for i, data in inbox.items():
            answer = parties[i].reply(data)
            if answer is not None:
                outbox[i] = answer
    meta, payload = server.result()
    return parties, meta, payload, ups


def test_decoded_sum_is_the_clipped_updates_plus_the_announced_noise() -> None:
    parties, meta, payload, ups = _round()
    assert meta.extra["distributed_dp"]["noise_shares"] == N
    noise = parties[0].noise
    assert noise is not None and noise.min_clients == parties[0].config.threshold
    out = parties[0].decode(meta, payload)
    assert parties[0].total_weight(meta) == N  # unweighted: the weight 7 was not used
    resid = out - np.sum([u.astype(np.float64) for u in ups], axis=0)  # norms < clip
    # 300 coordinates: the sample std is within 30 % of the theory with overwhelming odds
    assert 0.7 < float(np.std(resid)) / noise.sum_std_float(N) < 1.3


@pytest.mark.parametrize("lie", ["fewer survivors", "noise shares"])
def test_a_result_that_misstates_the_survivors_is_refused(lie: str) -> None:
    parties, meta, payload, _ = _round()
    if lie == "fewer survivors":
        forged = dataclasses.replace(meta, survivors=meta.survivors[:-1], extra={
            **meta.extra, "distributed_dp": {**meta.extra["distributed_dp"],
                                             "noise_shares": N - 1}})
        match = "this client signed"
    else:
        forged = dataclasses.replace(meta, extra={
            **meta.extra, "distributed_dp": {**meta.extra["distributed_dp"], "noise_shares": 9}})
        match = "noise shares"
    with pytest.raises(ProtocolAbort, match=match):
        parties[0].decode(forged, payload)


def test_a_client_refuses_an_invalid_or_weaker_noise_announcement() -> None:
    """Checked before anything is sent (no server is contacted here), one line each."""
    from secagg.dp.client_level import DistributedDPPolicy
    from secagg_clients.runtime import RoundRefused, RuntimeClient

    roster, identities = insecure_simulated_federation(N, corrupt_rate=0.05)
    cfg = MaskingConfig.create(num_clients=N, vector_length=DIM, clip=0.5, roster=roster,
                               dp_noise_multiplier=1.0, dp_l2_clip=0.5).to_dict()
    announced = dict(cfg["distributed_dp"])  # type: ignore[call-overload]
    cases = {
        "min_noise_shares": {**cfg, "distributed_dp": {**announced, "min_noise_shares": N}},
        "mechanism": {**cfg, "distributed_dp": {**announced, "mechanism": "gaussian"}},
        "noise_multiplier": {**cfg, "distributed_dp": {**announced, "noise_multiplier": -1.0}},
        "below this client's policy": {**cfg, "distributed_dp": {**announced,
                                                                 "noise_multiplier": 0.5}},
    }
    policy = DistributedDPPolicy(min_noise_multiplier=0.8)
    with RuntimeClient("http://127.0.0.1:9", "t", identity=identities[0], roster=roster,
                       dp_policy=policy) as rt:
        rt.check_distributed_dp(RoundInfo(1, 0, "masking", cfg, 0))  # as announced: fine
        for why, bad in cases.items():
            with pytest.raises(RoundRefused, match=why) as exc:
                rt.check_distributed_dp(RoundInfo(1, 0, "masking", bad, 0))
            assert "\n" not in str(exc.value)
        with pytest.raises(RoundRefused, match="ckks round does not add"):
            rt.check_distributed_dp(RoundInfo(1, 0, "ckks", {}, 0))
