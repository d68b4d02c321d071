"""End to end: weighted and unweighted sums match numpy within the preset's promise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.ckks import Preset
from secagg.ckks.simulate import run_round
from secagg.errors import NotEnoughParticipants
from tests.ckks.conftest import make_config, updates_for

SLOTS_REALS = Preset.COMPACT.params.reals_per_ciphertext  # 8192 reals per ciphertext


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.one_of(
        st.integers(1, 300),
        st.sampled_from([SLOTS_REALS - 2, SLOTS_REALS - 1, SLOTS_REALS, 2 * SLOTS_REALS + 1]),
        st.integers(1, 3 * SLOTS_REALS),
    ),
    n=st.integers(2, 4),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sum_matches_numpy_within_promise(size: int, n: int, weighted: bool, seed: int) -> None:
    config = make_config(size=size, n=n, min_clients=2)
    updates = updates_for(config, seed)
    rng = np.random.default_rng(seed)
    weights = {i: float(rng.uniform(0.5, 4.0)) if weighted else 1.0 for i in config.client_ids}
    result = run_round(config, updates, weights=weights)
    expected = sum(weights[i] * updates[i].astype(np.float64) for i in config.client_ids)
    quantum = config.params.release_quantum
    assert np.max(np.abs(result.release.weighted_sum - expected)) <= quantum
    assert abs(result.release.total_weight - sum(weights.values())) <= quantum
    mean = expected / sum(weights.values())
    assert np.max(np.abs(result.release.mean() - mean)) <= quantum
    assert result.release.contributors == config.client_ids


def test_precise_preset_is_more_precise() -> None:
    config = make_config(Preset.PRECISE.params, size=3000, n=3)
    updates = updates_for(config, 7)
    result = run_round(config, updates, weights={1: 1.5, 2: 3.0, 3: 0.25})
    u = {i: v.astype(np.float64) for i, v in updates.items()}
    expected = 1.5 * u[1] + 3.0 * u[2] + 0.25 * u[3]
    assert np.max(np.abs(result.release.weighted_sum - expected)) <= 2.0**-32


def test_dropouts_are_left_out_of_the_sum() -> None:
    config = make_config(size=500, n=4, min_clients=2)
    updates = updates_for(config, 3)
    result = run_round(config, updates, drop=[2, 4])
    expected = updates[1].astype(np.float64) + updates[3]
    assert result.release.contributors == (1, 3)
    assert np.max(np.abs(result.release.weighted_sum - expected)) <= config.params.release_quantum
    assert result.release.total_weight == 2.0


def test_too_many_dropouts_abort_cleanly() -> None:
    config = make_config(size=100, n=3, min_clients=3)
    with pytest.raises(NotEnoughParticipants, match="2 participant"):
        run_round(config, updates_for(config), drop=[3])


def test_upload_is_about_twice_float32() -> None:
    size = 20 * SLOTS_REALS - 2
    config = make_config(size=size, n=2)
    result = run_round(config, updates_for(config))
    ratio = result.upload_bytes[1] / (4 * size)
    assert 2.0 < ratio <= 2.1, ratio
