"""Whole rounds: exact sums under dropouts at every stage, and clean failure below threshold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.masking import DROP_STAGES, Stage, simulate_round
from tests.masking.conftest import make_config, random_updates


def _survivor_count_ok(n: int, t: int, drops: dict[int, Stage]) -> bool:
    """Full graph: the round must complete iff every stage keeps >= t clients."""
    order = [s for s in DROP_STAGES]
    alive = n
    for stage in order:
        alive -= sum(1 for s in drops.values() if s is stage)
        if alive < t:
            return False
    return True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 9),
    active=st.booleans(),
    data=st.data(),
)
def test_sum_is_exact_under_any_dropout_set_or_fails_cleanly(
    n: int, active: bool, data: st.DataObject
) -> None:
    config = make_config(n, 33, active=active, full_graph=True)
    stages = [s for s in DROP_STAGES if active or s is not Stage.CONSISTENCY]
    drops = data.draw(st.dictionaries(st.integers(0, n - 1), st.sampled_from(stages), max_size=n))
    result = simulate_round(config, random_updates(n, 33, seed=n), dropouts=drops,
                            rng=np.random.default_rng(0))
    if _survivor_count_ok(n, config.threshold, drops):
        assert result.error is None
        assert result.exact
        uploaded = {i for i in range(n)
                    if drops.get(i) not in (Stage.ADVERTISE, Stage.SHARE, Stage.MASKED_INPUT)}
        assert set(result.aggregate.survivors) == uploaded  # type: ignore[union-attr]
    else:
        assert result.aggregate is None
        assert result.error is not None and "threshold" in result.error


@pytest.mark.parametrize("stage", [s for s in DROP_STAGES if s is not Stage.CONSISTENCY])
def test_sparse_graph_exact_with_dropouts_at_each_stage(stage: Stage) -> None:
    n = 30
    config = make_config(n, 500, dropout_rate=0.1, neighbours=14, threshold=9)
    assert not config.full_graph  # a SecAgg+ Harary graph
    drops = {3: stage, 17: stage, 25: stage}
    result = simulate_round(config, random_updates(n, 500), dropouts=drops,
                            rng=np.random.default_rng(1))
    assert result.error is None and result.exact


def test_active_mode_with_dropout_at_consistency() -> None:
    config = make_config(8, 100, active=True, full_graph=True)
    result = simulate_round(config, random_updates(8, 100), dropouts={2: Stage.CONSISTENCY},
                            rng=np.random.default_rng(2))
    assert result.exact
    assert 2 in result.aggregate.survivors  # type: ignore[union-attr]  # its input was uploaded


def test_weighted_mean_matches_numpy() -> None:
    n, length = 6, 2000
    config = make_config(n, length, max_weight=50, clip=1.0, value_bits=16)
    updates = random_updates(n, length, seed=5)
    weights = [1, 7, 50, 3, 20, 9]
    result = simulate_round(config, updates, weights=weights, dropouts={4: Stage.MASKED_INPUT},
                            rng=np.random.default_rng(3))
    assert result.exact
    survivors = [i for i in range(n) if i != 4]
    want = sum(weights[i] * updates[i].astype(np.float64) for i in survivors) / sum(
        weights[i] for i in survivors)
    agg = result.aggregate
    assert agg is not None and agg.total_weight == sum(weights[i] for i in survivors)
    step = config.fixed_point.step
    assert np.max(np.abs(agg.mean() - want)) <= step  # at most one step from rounding


def test_too_few_survivors_is_a_clear_error_not_a_wrong_sum() -> None:
    config = make_config(6, 50, full_graph=True)
    t = config.threshold
    drops = {i: Stage.MASKED_INPUT for i in range(6 - t + 1)}
    result = simulate_round(config, random_updates(6, 50), dropouts=drops)
    assert result.aggregate is None
    assert "masked-input" in (result.error or "")
    assert f"threshold is {t}" in (result.error or "")
