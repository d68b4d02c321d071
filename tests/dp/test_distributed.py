"""Distributed Skellam noise: its variance, its headroom, its removal, its client-level epsilon.

Statistical tests use two-sided z-tests at |z| > 5.33: false-alarm rate 1e-7 per test under the
promised distribution (normal approximation of the sample mean / variance; n >= 10^5 samples).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import GaussianDpEvent, SelfComposedDpEvent, rdp

from secagg.dp import (
    DistributedNoise,
    add_noise_share,
    client_level_epsilon,
    noisy_sum_to_float,
    remove_noise_offset,
    skellam_rdp,
)
from secagg.dp.csprng import secure_normal, secure_poisson, secure_skellam, secure_uniform
from secagg.encoding import FixedPoint, quantize
from secagg.errors import InvalidParameter

Z_CRIT = 5.33  # two-sided P(|N(0,1)| > 5.33) ~= 1e-7


def _noise(**kw: object) -> DistributedNoise:
    base: dict[str, object] = dict(
        fixed_point=FixedPoint(clip=0.05, value_bits=12), l2_clip=1.0, dim=50_000,
        num_clients=8, min_clients=5, noise_multiplier=0.02, mod_bits=32,
    )
    base.update(kw)
    return DistributedNoise(**base)  # type: ignore[arg-type]


def _var_z(x: np.ndarray, var: float) -> float:
    """z-score of the sample variance against ``var`` (kurtosis of Skellam: 1 / var, ~0)."""
    n = x.size
    se = var * math.sqrt(2.0 / (n - 1) + 1.0 / (var * n))
    return (float(np.var(x, ddof=1)) - var) / se


@pytest.mark.parametrize("m", [5, 8])
def test_released_sum_noise_variance_matches_promise(m: int) -> None:
    noise = _noise()
    fp = noise.fixed_point
    rng = np.random.default_rng(0)
    updates = [rng.uniform(-0.04, 0.04, noise.dim).astype(np.float32) for _ in range(m)]
    qs = [quantize(u, fp, rng=rng) for u in updates]
    total = np.zeros(noise.dim, dtype=np.uint32)
    for q in qs:
        total += add_noise_share(q, noise)  # uint32 wraparound = the masking sum mod 2^32
    noisy = remove_noise_offset(total, noise, num_contributors=m)
    residual = noisy - np.sum([q.astype(np.int64) for q in qs], axis=0)
    var = noise.sum_variance(m)
    assert abs(float(residual.mean())) / math.sqrt(var / residual.size) < Z_CRIT
    assert abs(_var_z(residual, var)) < Z_CRIT
    # and the promise is the one asked for: std = z * sensitivity once min_clients are summed
    assert noise.sum_variance(noise.min_clients) == pytest.approx(
        (noise.noise_multiplier * noise.sensitivity_l2) ** 2)


def test_shares_stay_inside_the_checked_headroom() -> None:
    noise = _noise(mod_bits=20, fixed_point=FixedPoint(clip=0.05, value_bits=8))
    top = noise.fixed_point.levels
    q = np.full(noise.dim, top, dtype=np.uint32)
    share = add_noise_share(q, noise)
    assert int(share.max()) <= top + 2 * noise.share_bound
    assert noise.num_clients * (top + 2 * noise.share_bound) < 2**noise.mod_bits


def test_headroom_violation_is_refused_with_a_fix() -> None:
    with pytest.raises(InvalidParameter, match="mod_bits"):
        _noise(mod_bits=16)


def test_dequantised_noisy_sum_is_close_to_true_sum() -> None:
    noise = _noise(noise_multiplier=0.01)
    rng = np.random.default_rng(1)
    updates = [rng.uniform(-0.04, 0.04, noise.dim).astype(np.float32) for _ in range(6)]
    total = np.zeros(noise.dim, dtype=np.uint32)
    for u in updates:
        total += add_noise_share(quantize(u, noise.fixed_point, rng=rng), noise)
    out = noisy_sum_to_float(total, noise, num_contributors=6, total_weight=6)
    err = out - np.sum(updates, axis=0, dtype=np.float64)
    expect = math.sqrt(noise.sum_std_float(6) ** 2 + 6 * noise.fixed_point.step**2 / 4)
    assert float(np.std(err)) < 1.1 * expect


def test_fewer_contributors_than_calibrated_is_refused() -> None:
    noise = _noise()
    with pytest.raises(InvalidParameter, match="min_clients"):
        remove_noise_offset(np.zeros(noise.dim, dtype=np.uint32), noise, num_contributors=4)


@pytest.mark.parametrize(
    ("kw", "field"),
    [(dict(min_clients=9), "min_clients"), (dict(noise_multiplier=0.0), "noise_multiplier"),
     (dict(l2_clip=-1.0), "l2_clip"), (dict(dim=0), "dim")],
)
def test_bad_noise_parameters_name_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidParameter, match=field):
        _noise(**kw)


def test_wrong_vector_is_refused() -> None:
    noise = _noise()
    with pytest.raises(InvalidParameter, match="shape"):
        add_noise_share(np.zeros(3, dtype=np.uint32), noise)
    with pytest.raises(InvalidParameter, match="uint32"):
        add_noise_share(np.zeros(noise.dim, dtype=np.int64), noise)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameter, match="max_weight"):
        add_noise_share(np.full(noise.dim, 2**20, dtype=np.uint32), noise)


def test_rounding_dominated_sensitivity_warns() -> None:
    with pytest.warns(UserWarning, match="value_bits"):
        _noise(fixed_point=FixedPoint(clip=0.05, value_bits=4), dim=200_000)


def test_client_level_epsilon_tracks_gaussian_for_large_mu() -> None:
    noise = _noise(noise_multiplier=4.0)
    eps = client_level_epsilon(noise, rounds=20, delta=1e-5)
    acc = rdp.RdpAccountant()
    acc.compose(SelfComposedDpEvent(GaussianDpEvent(4.0), 20))
    gauss = acc.get_epsilon(1e-5)
    assert gauss <= eps <= gauss * 1.05  # Skellam never beats the Gaussian of its variance
    # more noise, less epsilon; more survivors, less epsilon
    assert client_level_epsilon(_noise(noise_multiplier=8.0), rounds=20, delta=1e-5) < eps
    assert client_level_epsilon(noise, rounds=20, delta=1e-5, num_contributors=8) < eps


def test_rdp_orders_are_integers_and_fractional_ones_are_refused() -> None:
    from secagg.dp.client_level import RDP_ORDERS

    assert all(isinstance(a, int) and a >= 2 for a in RDP_ORDERS)
    with pytest.raises(InvalidParameter, match="integers"):
        skellam_rdp([1.5, 2.0], l1=1.0, l2=1.0, mu=10.0)
    assert skellam_rdp([2, 3], l1=1.0, l2=1.0, mu=10.0).shape == (2,)


def test_clamp_tail_is_charged_as_one_plus_e_to_the_eps_tau() -> None:
    """The clamp's delta is (1 + e^eps) * tau, not tau: with a tail that matters the epsilon
    is the fixed point of eps = eps_rdp(delta - (1 + e^eps) * tau)."""
    from opacus.accountants.analysis.rdp import get_privacy_spent

    from secagg.dp.client_level import RDP_ORDERS, SkellamRelease, compose_client_level

    release = SkellamRelease(l1=2000.0, l2=100.0, mu=5e4, tail=1e-8)
    delta = 1e-5
    eps = compose_client_level([release], delta=delta)
    rdp_ = skellam_rdp(RDP_ORDERS, l1=2000.0, l2=100.0, mu=5e4)
    charged = (1 + math.exp(eps)) * 1e-8
    exact, _ = get_privacy_spent(orders=list(RDP_ORDERS), rdp=list(rdp_), delta=delta - charged)
    assert exact <= eps + 1e-12
    only_tau, _ = get_privacy_spent(orders=list(RDP_ORDERS), rdp=list(rdp_), delta=delta - 1e-8)
    assert eps > only_tau  # charging only tau would understate epsilon
    with pytest.raises(InvalidParameter, match="clamp"):
        compose_client_level([SkellamRelease(l1=2000.0, l2=100.0, mu=5e4, tail=2e-6)],
                             delta=delta)


def test_secure_samplers_have_the_right_moments() -> None:
    n = 400_000
    u = secure_uniform(n)
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) / math.sqrt(1 / 12 / n) < Z_CRIT
    g = secure_normal(n)
    assert abs(float(g.mean())) * math.sqrt(n) < Z_CRIT
    assert abs(_var_z(g, 1.0)) < Z_CRIT
    for lam in (0.7, 6.0, 40.0, 1e6):
        p = secure_poisson(lam, n)
        assert p.dtype == np.int64 and int(p.min()) >= 0
        assert abs(float(p.mean()) - lam) / math.sqrt(lam / n) < Z_CRIT
    s = secure_skellam(25.0, n)
    assert abs(_var_z(s.astype(np.float64), 50.0)) < Z_CRIT
    assert not np.array_equal(secure_uniform(8), secure_uniform(8))  # fresh key per call


def test_integer_sensitivity_covers_both_roundings_of_a_replaced_update() -> None:
    """Replace-one: two clipped updates x, x' (|x - x'| <= 2 * l2_clip), each stochastically
    rounded by the real quantiser; their integer difference never exceeds the sensitivity. The
    reviewer's worst case (d small, x and x' a hair apart so both roundings go opposite ways)
    exceeds the old bound 2*scale*C + sqrt(d) (positive control) but not the new one."""
    from secagg.dp.distributed import integer_sensitivity_l2

    fp = FixedPoint(clip=1.0, value_bits=8)
    l2_clip = 0.25
    rng = np.random.default_rng(11)
    for dim in (1, 4, 64):
        new = integer_sensitivity_l2(scale=fp.scale, l2_clip=l2_clip, dim=dim)
        old = 2.0 * fp.scale * l2_clip + math.sqrt(dim)
        worst = 0.0
        for _ in range(400):
            u = rng.normal(size=dim)
            x = l2_clip * u / np.linalg.norm(u)
            x2 = -x  # the farthest replacement: |x - x2| = 2 * l2_clip
            qx = quantize(x.astype(np.float32), fp, rng=rng).astype(np.float64)
            qx2 = quantize(x2.astype(np.float32), fp, rng=rng).astype(np.float64)
            worst = max(worst, float(np.linalg.norm(qx - qx2)))
        assert worst <= new, (dim, worst, new)
        if dim == 1:
            assert worst > old, (worst, old)  # the old bound was exceeded: the test can fail
