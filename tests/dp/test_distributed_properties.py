"""Properties of the client-level accounting and of the round option, over varied inputs.

* more noise, or more noise shares in the sum, never costs more epsilon; more rounds never
  cost less;
* the Skellam RDP is never below the Gaussian RDP of the same variance (Skellam is no better);
* a config's distributed-DP fields survive the wire and bind the digest; the noise is never
  calibrated for more shares than the masking threshold; a client policy refuses exactly the
  weaker rounds.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.dp import DistributedNoise
from secagg.dp.client_level import (
    RDP_ORDERS,
    DistributedDPPolicy,
    SkellamRelease,
    client_level_epsilon,
    compose_client_level,
    skellam_rdp,
)
from secagg.dp.distributed import round_noise
from secagg.encoding import FixedPoint
from secagg.errors import InvalidParameter
from secagg.masking import MaskingConfig

DELTA = 1e-5
FAST = settings(max_examples=40, deadline=None)


def _eps(noise: DistributedNoise, **kw: object) -> float:
    """The epsilon, or infinity where it is refused: at a large epsilon the clamp's tail,
    charged as (1 + e^eps) * tau, no longer fits in delta."""
    try:
        return client_level_epsilon(noise, delta=DELTA, **kw)  # type: ignore[arg-type]
    except InvalidParameter as exc:
        assert "clamp" in str(exc)
        return math.inf


def _noise(z: float, *, n: int = 10, t: int = 6, dim: int = 500) -> DistributedNoise:
    return DistributedNoise(fixed_point=FixedPoint(clip=1.0, value_bits=14), l2_clip=1.0,
                            dim=dim, num_clients=n, min_clients=t, noise_multiplier=z,
                            mod_bits=32)


@FAST
@given(z=st.floats(0.8, 20.0), factor=st.floats(1.0, 4.0), rounds=st.integers(1, 30))
def test_more_noise_never_costs_more(z: float, factor: float, rounds: int) -> None:
    low = _eps(_noise(z), rounds=rounds)
    high = _eps(_noise(z * factor), rounds=rounds)
    assert high <= low * (1 + 1e-12)


@FAST
@given(z=st.floats(0.8, 10.0), t=st.integers(2, 10), extra=st.integers(0, 8),
       rounds=st.integers(1, 20))
def test_more_shares_never_cost_more_and_more_rounds_never_less(z: float, t: int, extra: int,
                                                                rounds: int) -> None:
    noise = _noise(z, n=t + 8, t=t)
    at_t = _eps(noise, rounds=rounds)
    more = _eps(noise, rounds=rounds, num_contributors=t + extra)
    assert more <= at_t * (1 + 1e-12)
    later = _eps(noise, rounds=rounds + 1)
    assert later >= at_t


@FAST
@given(shares=st.lists(st.integers(4, 10), min_size=1, max_size=6))
def test_composition_is_monotone_in_releases(shares: list[int]) -> None:
    noise = _noise(2.0)
    releases = [SkellamRelease.of(noise, m) for m in shares]
    totals = [compose_client_level(releases[: k + 1], delta=DELTA) for k in range(len(shares))]
    assert all(b >= a for a, b in itertools.pairwise(totals))


@FAST
@given(l2=st.floats(1.0, 1e4), mu=st.floats(1.0, 1e12), ratio=st.floats(0.0, 1.0))
def test_skellam_rdp_is_at_least_the_gaussian_of_its_variance(l2: float, mu: float,
                                                               ratio: float) -> None:
    l1 = l2 + ratio * (l2 * l2 - l2)  # any L1 in [L2, L2^2] (integer vectors)
    rdp = skellam_rdp(RDP_ORDERS, l1=l1, l2=l2, mu=mu)
    gauss = [a * l2 * l2 / (2 * (2 * mu)) for a in RDP_ORDERS]  # sigma^2 = 2 mu
    assert all(r >= g for r, g in zip(rdp, gauss, strict=True))


@FAST
@given(z=st.floats(0.3, 5.0), l2=st.floats(0.05, 2.0), n=st.integers(3, 12),
       bits=st.integers(8, 16))
def test_round_option_survives_the_wire_and_ties_to_the_threshold(z: float, l2: float, n: int,
                                                                  bits: int) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = MaskingConfig.create(num_clients=n, vector_length=64, clip=2.0, value_bits=bits,
                                   dp_noise_multiplier=z, dp_l2_clip=l2, session=b"\x01" * 16)
        plain = MaskingConfig.create(num_clients=n, vector_length=64, clip=2.0,
                                     value_bits=bits, session=b"\x01" * 16,
                                     neighbours=cfg.neighbours, threshold=cfg.threshold)
        back = MaskingConfig.from_dict(cfg.to_dict())
        noise = round_noise(back)
    assert back == cfg and back.digest() == cfg.digest() != plain.digest()
    assert "distributed_dp" not in plain.to_dict()
    assert noise is not None and noise.min_clients == cfg.threshold
    assert cfg.noise_headroom >= 2 * noise.share_bound * n
    # calibrated for more shares than the threshold: a sum of fewer could be unmasked
    if cfg.threshold < n:
        announced = dict(cfg.to_dict()["distributed_dp"])  # type: ignore[call-overload]
        bad = {**cfg.to_dict(), "distributed_dp": {**announced,
                                                   "min_noise_shares": cfg.threshold + 1}}
        with pytest.raises(InvalidParameter, match="threshold"):
            MaskingConfig.from_dict(bad)
    policy = DistributedDPPolicy(min_noise_multiplier=z, delta=DELTA)
    assert policy.refusal(noise, threshold=cfg.threshold) is None
    stricter = DistributedDPPolicy(min_noise_multiplier=z * 1.01, delta=DELTA)
    assert "below this client's policy" in str(stricter.refusal(noise, threshold=cfg.threshold))
    assert "no distributed DP noise" in str(policy.refusal(None, threshold=cfg.threshold))


def test_policy_limits_on_clip_and_round_epsilon() -> None:
    noise = _noise(1.0)
    eps = client_level_epsilon(noise, rounds=1, delta=DELTA)
    assert math.isfinite(eps)
    tight = DistributedDPPolicy(min_noise_multiplier=0.5, max_round_epsilon=eps * 0.9)
    assert "client-level epsilon" in str(tight.refusal(noise, threshold=6))
    assert DistributedDPPolicy(min_noise_multiplier=0.5, max_round_epsilon=eps * 1.1
                               ).refusal(noise, threshold=6) is None
    assert "L2 clip" in str(DistributedDPPolicy(min_noise_multiplier=0.5, max_l2_clip=0.5
                                                ).refusal(noise, threshold=6))
    assert "calibrated for 6 shares" in str(DistributedDPPolicy(min_noise_multiplier=0.5
                                                                ).refusal(noise, threshold=5))
    optional = DistributedDPPolicy(min_noise_multiplier=0.5, require=False)
    assert optional.refusal(None, threshold=6) is None
    with pytest.raises(InvalidParameter):
        DistributedDPPolicy(min_noise_multiplier=0.0)
