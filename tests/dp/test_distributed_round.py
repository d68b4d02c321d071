"""Client-level DP inside the secure sum, end to end through the real ``secagg-server`` process.

The operator opens a masking round with the option ``dp_noise_multiplier`` (``dp_l2_clip``); the
server announces it in the round's config; every client clips its update to the L2 bound,
quantises it, adds its Skellam share and masks it; one client drops out; the released sum is
decoded (offset removed, dequantised) and each client records a client-level entry in its
privacy ledger. Checked here:

* the released sum's noise variance matches the theory: a two-sided chi-square test on the
  DIM residual coordinates with false-alarm rate 1e-6 (the rounding variance, in [0, m/4]
  integer units, widens the upper bound only);
* the client-level epsilon in the ledger equals an independent computation written out in this
  file: the Skellam RDP of Agarwal, Kairouz and Liu (2021, Theorem 3.5) at the integer orders
  2..128 and 256, the RDP-to-DP conversion of Balle et al. 2020 (the one Opacus implements),
  and the clamp's (1 + e^eps) * tau added to delta, with the survivors as noise shares;
* clients with a policy refuse rounds whose noise is missing or weaker, with one line, before
  sending anything.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2

from secagg.dp.client_level import DistributedDPPolicy
from secagg.dp.ledger import PrivacyLedger
from secagg.encoding import FixedPoint, clip_l2
from secagg_clients.runtime import RoundRefused, RoundResult
from secagg_server.operator import Operator
from tests.server.conftest import Federation, start_federation

N = 5
DIM = 4000
Z = 1.0
L2_CLIP = 0.5
DELTA = 1e-5
FALSE_ALARM = 1e-6
DROPPED = 4  # this client never joins: one noise share fewer in the released sum


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = start_federation(tmp_path_factory.mktemp("dp-round"), N)
    try:
        yield f
    finally:
        f.server.kill()


def _operator(fed: Federation) -> Operator:
    return Operator(fed.server.url, fed.operator, verify=False)


def _independent_epsilon(*, scale: float, l2_clip: float, dim: int, z: float, threshold: int,
                         shares: list[int], num_clients: int, delta: float) -> float:
    """Client-level epsilon of releases with ``shares`` noise shares each, composed, from the
    formulas (no secagg accounting code)."""
    d2 = 2.0 * scale * l2_clip + 2.0 * math.sqrt(dim)  # replace-one, plus both roundings
    d1 = min(d2 * d2, math.sqrt(dim) * d2)
    orders = [*range(2, 129), 256]
    rdp = [0.0] * len(orders)
    for m in shares:
        mu = (z * d2) ** 2 / (2.0 * threshold) * m  # per Poisson of the whole sum's Sk(mu, mu)
        rdp = [r + a * d2 * d2 / (4 * mu) + min(((2 * a - 1) * d2 * d2 + 6 * d1) / (16 * mu * mu),
                                                3 * d1 / (4 * mu))
               for r, a in zip(rdp, orders, strict=True)]

    def to_dp(dlt: float) -> float:  # Balle et al. 2020, Theorem 21
        return float(min(r - (math.log(dlt) + math.log(a)) / (a - 1) + math.log((a - 1) / a)
                         for a, r in zip(orders, rdp, strict=True)))

    # a clamp fires somewhere with at most this probability
    tau = len(shares) * num_clients * dim * 2.0**-64
    eps = to_dp(delta - 2 * tau)
    while True:
        nxt = to_dp(delta - (1 + math.exp(eps)) * tau)
        if nxt <= eps:
            return eps
        eps = nxt


def _run(fed: Federation, ids: list[int], ups: dict[int, np.ndarray],
         policy: DistributedDPPolicy | None = None) -> dict[int, RoundResult]:
    results: dict[int, RoundResult] = {}
    errors: dict[int, BaseException] = {}

    def one(i: int) -> None:
        try:
            with fed.runtime(i, poll_wait=2.0, retry_for=60.0, dp_policy=policy) as rt:
                results[i] = rt.run_round(ups[i], timeout=60)
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def test_skellam_round_through_the_server_noise_and_ledger(fed: Federation,
                                                           tmp_path: Path) -> None:
    with _operator(fed) as op:
        info = op.open_round("masking", {"vector_length": DIM, "clip": L2_CLIP,
                                         "dp_noise_multiplier": Z, "dp_l2_clip": L2_CLIP},
                             stage_timeout_s=4.0)
    cfg = info["config"]
    t = cfg["threshold"]
    assert cfg["distributed_dp"] == {"mechanism": "skellam", "noise_multiplier": Z,
                                     "l2_clip": L2_CLIP, "min_noise_shares": t}
    assert t <= N - 1, "the test drops one client"
    rng = np.random.default_rng(7)
    ups = {i: rng.normal(0, 0.05, DIM).astype(np.float32) for i in range(N)}
    ids = [i for i in range(N) if i != DROPPED]
    policy = DistributedDPPolicy(min_noise_multiplier=Z, delta=DELTA)
    results = _run(fed, ids, ups, policy)
    m = len(ids)
    first = results[ids[0]]
    assert sorted(first.survivors) == ids and first.noise_shares == m
    assert first.total_weight == m
    for r in results.values():  # every client decodes the same release
        np.testing.assert_array_equal(r.weighted_sum, first.weighted_sum)

    # noise variance against theory (chi-square, two-sided, false alarm FALSE_ALARM)
    fp = FixedPoint(clip=L2_CLIP, value_bits=cfg["value_bits"])
    truth = np.sum([clip_l2(ups[i], L2_CLIP)[0].astype(np.float64) for i in ids], axis=0)
    resid = first.weighted_sum - truth
    d2 = 2.0 * fp.scale * L2_CLIP + 2.0 * math.sqrt(DIM)  # both updates' rounding
    var_noise = 2.0 * ((Z * d2) ** 2 / (2.0 * t)) * m / fp.scale**2  # m shares of Sk(mu, mu)
    var_round = m / 4.0 / fp.scale**2  # stochastic rounding: at most 1/4 per client
    ss = float(np.sum(resid**2))
    assert ss / var_noise >= chi2.ppf(FALSE_ALARM / 2, DIM), (ss / DIM, var_noise)
    assert ss / (var_noise + var_round) <= chi2.ppf(1 - FALSE_ALARM / 2, DIM), (ss / DIM,
                                                                                 var_noise)
    # the noise is what was asked for: std = z * sensitivity at t shares, here more (m > t)
    assert var_noise * fp.scale**2 == pytest.approx((Z * d2) ** 2 * m / t)

    # the ledger: one client-level entry, epsilon from the actual shares, independently checked
    ledger = PrivacyLedger.open(tmp_path / "energy.ledger", enterprise="enterprise-0",
                                budget_epsilon=8.0, delta=DELTA)
    noise = first.noise
    assert noise is not None
    entry = ledger.record_client_level(noise, noise_shares=first.noise_shares,
                                       server_round_id=str(first.round_id),
                                       layout_digest=cfg.get("layout_digest", ""))
    again = PrivacyLedger.load(ledger.path)
    again.verify()
    (read,) = again.client_level_entries
    expect = _independent_epsilon(scale=fp.scale, l2_clip=L2_CLIP, dim=DIM, z=Z, threshold=t,
                                  shares=[m], num_clients=N, delta=DELTA)
    assert read.noise_shares == m and read.min_noise_shares == t
    assert read.epsilon == pytest.approx(expect, rel=1e-9)
    assert entry.epsilon == pytest.approx(expect, rel=1e-9)
    assert again.client_level_spent() == pytest.approx(expect, rel=1e-9)
    worst = _independent_epsilon(scale=fp.scale, l2_clip=L2_CLIP, dim=DIM, z=Z, threshold=t,
                                 shares=[t], num_clients=N, delta=DELTA)
    assert read.epsilon <= worst * (1 + 1e-12)  # a dropout never lowers noise below the promise
    assert again.spent() == 0.0  # the DP-SGD budget is a separate account

    # a second round, nobody drops: more shares than the threshold, less epsilon; totals compose
    with _operator(fed) as op:
        op.open_round("masking", {"vector_length": DIM, "clip": L2_CLIP,
                                  "dp_noise_multiplier": Z, "dp_l2_clip": L2_CLIP},
                      stage_timeout_s=20.0)
    second = _run(fed, list(range(N)), ups, policy)[0]
    assert second.noise_shares == N and second.noise is not None
    e2 = again.record_client_level(second.noise, noise_shares=second.noise_shares,
                                   server_round_id=str(second.round_id))
    final = PrivacyLedger.load(ledger.path)
    final.verify()
    alone = _independent_epsilon(scale=fp.scale, l2_clip=L2_CLIP, dim=DIM, z=Z, threshold=t,
                                 shares=[N], num_clients=N, delta=DELTA)
    both = _independent_epsilon(scale=fp.scale, l2_clip=L2_CLIP, dim=DIM, z=Z, threshold=t,
                                shares=[m, N], num_clients=N, delta=DELTA)
    assert e2.epsilon == pytest.approx(alone, rel=1e-9) and alone < expect
    assert [e.noise_shares for e in final.client_level_entries] == [m, N]
    assert final.client_level_spent() == pytest.approx(both, rel=1e-9)
    assert final.client_level_entries[-1].total_epsilon == pytest.approx(both, rel=1e-9)
    print(f"client-level epsilon {read.epsilon:.4f} at delta {DELTA:g} with {m} noise shares "
          f"(threshold {t}), {alone:.4f} with {N}; both rounds {both:.4f}; noise std "
          f"{math.sqrt(var_noise):.4f} per coordinate (float units)")


def test_client_refuses_weaker_or_missing_noise(fed: Federation) -> None:
    strict = DistributedDPPolicy(min_noise_multiplier=2 * Z, delta=DELTA)
    with _operator(fed) as op:
        info = op.open_round("masking", {"vector_length": 16, "dp_noise_multiplier": Z},
                             stage_timeout_s=30.0)
        try:
            with fed.runtime(0, poll_wait=1.0, dp_policy=strict) as rt:
                rnd = rt.wait_for_round(timeout=10)
                assert rnd.round_id == info["round_id"]
                with pytest.raises(RoundRefused, match="below this client's policy") as exc:
                    rt.take_part(rnd, np.zeros(16, np.float32))
                assert "\n" not in str(exc.value)
                assert fed.status(rnd.round_id)["stage"] == "advertise"  # nothing was sent
        finally:
            op.cancel(info["round_id"])
        info = op.open_round("masking", {"vector_length": 16}, stage_timeout_s=30.0)
        try:
            with fed.runtime(1, poll_wait=1.0, dp_policy=strict) as rt:
                rnd = rt.wait_for_round(after_index=info["index"] - 1, timeout=10)
                with pytest.raises(RoundRefused, match="no distributed DP noise"):
                    rt.take_part(rnd, np.zeros(16, np.float32))
        finally:
            op.cancel(info["round_id"])


def test_operator_cli_opens_a_distributed_dp_round(fed: Federation) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "SECAGG_OPERATOR_TOKEN": fed.operator}

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "secagg_server", "round", *argv,
                               "--server", fed.server.url], capture_output=True, text=True,
                              timeout=60, env=env)

    bad = cli("open", "--mode", "masking", "--option", "vector_length=8", "--option",
              "dp_noise_multiplier=-1")
    assert bad.returncode == 2
    assert "dp_noise_multiplier" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    ok = cli("open", "--mode", "masking", "--option", "vector_length=8", "--option",
             "dp_noise_multiplier=1.5", "--option", "dp_l2_clip=0.25", "--json")
    assert ok.returncode == 0, ok.stderr
    info = json.loads(ok.stdout)
    try:
        dp = info["config"]["distributed_dp"]
        assert dp == {"mechanism": "skellam", "noise_multiplier": 1.5, "l2_clip": 0.25,
                      "min_noise_shares": info["config"]["threshold"]}
    finally:
        assert cli("cancel", str(info["round_id"])).returncode == 0
