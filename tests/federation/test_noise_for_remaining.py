"""Noise calibration across a multi-round run: the history plus the rounds left fit the budget."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.dp import GaussianSteps, epsilon_of_history, noise_for_remaining_rounds, noise_multiplier
from secagg.errors import InvalidParameter

DELTA = 1e-5


@settings(max_examples=5, deadline=None)
@given(budget=st.floats(1.0, 16.0), q=st.floats(0.02, 0.2), steps=st.integers(5, 60),
       rounds=st.integers(1, 4))
def test_rounds_fit_the_budget_and_use_most_of_it(budget: float, q: float, steps: int, rounds: int) -> None:
    sigma = noise_for_remaining_rounds([], budget_epsilon=budget, sample_rate=q, steps=steps,
                                       rounds=rounds, delta=DELTA)
    run = [GaussianSteps(q, sigma, steps)] * rounds
    spent = epsilon_of_history(run, delta=DELTA)
    assert spent <= budget
    # a little less noise would overspend: the calibration is tight, not merely safe
    less = [GaussianSteps(q, sigma - 0.01, steps)] * rounds
    assert sigma - 0.01 < 0.3 or epsilon_of_history(less, delta=DELTA) > budget


def test_no_history_matches_calibrating_the_whole_run_at_once() -> None:
    sigma = noise_for_remaining_rounds([], budget_epsilon=8.0, sample_rate=0.1, steps=30,
                                       rounds=2, delta=DELTA)
    whole = noise_multiplier(target_epsilon=8.0, sample_rate=0.1, steps=60, delta=DELTA)
    assert sigma == pytest.approx(whole, abs=0.02)


def test_an_extra_round_in_the_history_raises_the_noise_of_the_rest() -> None:
    base = noise_for_remaining_rounds([], budget_epsilon=8.0, sample_rate=0.1, steps=30,
                                      rounds=3, delta=DELTA)
    history = [GaussianSteps(0.1, base, 30)] * 2  # a restart repeated a round: 2 spent, 2 left
    after = noise_for_remaining_rounds(history, budget_epsilon=8.0, sample_rate=0.1, steps=30,
                                       rounds=2, delta=DELTA)
    assert after > base
    total = epsilon_of_history(history + [GaussianSteps(0.1, after, 30)] * 2, delta=DELTA)
    assert total <= 8.0


def test_spent_budget_is_a_clear_error() -> None:
    history = [GaussianSteps(0.5, 0.5, 200)]
    with pytest.raises(InvalidParameter, match=r"budget epsilon=1 is already spent"):
        noise_for_remaining_rounds(history, budget_epsilon=1.0, sample_rate=0.1, steps=10,
                                   rounds=1, delta=DELTA)
    with pytest.raises(InvalidParameter, match=r"rounds must be an integer >= 1, found 0"):
        noise_for_remaining_rounds([], budget_epsilon=1.0, sample_rate=0.1, steps=10, rounds=0,
                                   delta=DELTA)
