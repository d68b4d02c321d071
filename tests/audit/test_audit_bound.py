"""The one-run lower bound (secagg.dp.audit_bound): properties, a brute-force cross-check from
Theorem 3.1's statement with exact binomials (math.comb), and every bad argument refused."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.dp.audit_bound import (
    audit_p_value,
    epsilon_lower_bound,
    epsilon_lower_bound_from_scores,
    trivial_upper_limit,
)
from secagg.errors import InvalidParameter


def _brute_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Theorem 3.1 as stated: f(v) + 2 m delta max_{i=1..m} (f(v-i) - f(v)) / i, exact tails."""
    p = math.exp(eps) / (1 + math.exp(eps))

    def f(k: int) -> float:  # P[Binomial(r, p) >= k]
        return sum(math.comb(r, j) * p**j * (1 - p) ** (r - j) for j in range(max(k, 0), r + 1))

    return min(1.0, f(v) + 2 * m * delta * max((f(v - i) - f(v)) / i for i in range(1, m + 1)))


def _brute_bound(m: int, r: int, v: int, delta: float, level: float) -> float:
    """The largest eps on a 0.001 grid whose p-value is below ``level``, by scanning."""
    best = 0.0
    for n in range(0, 12001):
        if _brute_p_value(m, r, v, n / 1000, delta) < level:
            best = n / 1000
    return best


counts = st.integers(1, 30).flatmap(
    lambda m: st.integers(0, m).flatmap(lambda r: st.tuples(st.just(m), st.just(r),
                                                            st.integers(0, r))))


@settings(max_examples=60, deadline=None)
@given(counts, st.sampled_from([0.0, 1e-5, 1e-3]), st.floats(0, 6))
def test_p_value_matches_the_theorem_computed_exactly(mrv: tuple[int, int, int], delta: float,
                                                      eps: float) -> None:
    m, r, v = mrv
    got = audit_p_value(canaries=m, guesses=r, correct=v, epsilon=eps, delta=delta)
    assert got == pytest.approx(_brute_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("m", "r", "v", "delta"), [(10, 10, 10, 0.0), (20, 12, 11, 1e-5),
                                                    (30, 30, 27, 1e-3), (16, 8, 8, 1e-3)])
def test_bound_matches_a_brute_force_scan(m: int, r: int, v: int, delta: float) -> None:
    got = epsilon_lower_bound(canaries=m, guesses=r, correct=v, delta=delta, confidence=0.95)
    assert got > 0
    assert got == pytest.approx(_brute_bound(m, r, v, delta, 0.05), abs=2e-3)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200).flatmap(lambda m: st.tuples(st.just(m), st.integers(1, m))),
       st.sampled_from([0.0, 1e-6, 1e-5]), st.sampled_from([0.9, 0.95, 0.99]))
def test_monotone_in_correct_and_never_above_the_trivial_limit(mr: tuple[int, int], delta: float,
                                                               confidence: float) -> None:
    m, r = mr
    bounds = [epsilon_lower_bound(canaries=m, guesses=r, correct=v, delta=delta,
                                  confidence=confidence) for v in range(0, r + 1, max(1, r // 12))]
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(bounds))
    top = epsilon_lower_bound(canaries=m, guesses=r, correct=r, delta=delta, confidence=confidence)
    assert top <= trivial_upper_limit(guesses=r, confidence=confidence) + 1e-9


def test_chance_level_guessing_certifies_nothing() -> None:
    assert epsilon_lower_bound(canaries=1000, guesses=1000, correct=500, delta=1e-5) == 0.0
    assert epsilon_lower_bound(canaries=1000, guesses=0, correct=0, delta=1e-5) == 0.0


def test_known_value_all_right_without_delta() -> None:
    # delta = 0, all r right: p-value p^r, so the bound is logit(0.05^(1/r)) exactly
    r = 100
    want = trivial_upper_limit(guesses=r)
    assert epsilon_lower_bound(canaries=r, guesses=r, correct=r, delta=0.0) == pytest.approx(want,
                                                                                             abs=1e-6)
    assert want == pytest.approx(3.4930, abs=1e-3)


def test_delta_weakens_the_bound() -> None:
    kw = dict(canaries=1000, guesses=200, correct=180, confidence=0.95)
    assert epsilon_lower_bound(delta=1e-3, **kw) < epsilon_lower_bound(delta=1e-6, **kw)


def test_scores_perfectly_separated_and_random() -> None:
    rng = np.random.default_rng(0)
    inc = rng.random(400) < 0.5
    perfect = epsilon_lower_bound_from_scores(inc.astype(float), inc, delta=1e-5)
    assert perfect.epsilon > 3 and perfect.correct == perfect.guesses
    noise = epsilon_lower_bound_from_scores(rng.standard_normal(400), inc, delta=1e-5)
    assert noise.epsilon < 0.5
    flipped = epsilon_lower_bound_from_scores(-inc.astype(float), inc, delta=1e-5)
    assert flipped.epsilon == 0.0  # scores pointing the wrong way certify nothing


@pytest.mark.parametrize(("kwargs", "field"), [
    (dict(canaries=0, guesses=0, correct=0), "canaries"),
    (dict(canaries=10, guesses=11, correct=1), "guesses"),
    (dict(canaries=10, guesses=5, correct=6), "correct"),
    (dict(canaries=10, guesses=5, correct=-1), "correct"),
    (dict(canaries=10.0, guesses=5, correct=1), "canaries"),
])
def test_bad_counts_are_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidParameter, match=field):
        epsilon_lower_bound(delta=1e-5, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "field"), [
    (dict(delta=1.5), "delta"), (dict(delta=1e-5, confidence=1.0), "confidence"),
    (dict(delta=1e-5, confidence=0.0), "confidence"),
])
def test_bad_delta_and_confidence_are_refused(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidParameter, match=field):
        epsilon_lower_bound(canaries=10, guesses=5, correct=5, **kwargs)


def test_bad_scores_are_refused() -> None:
    with pytest.raises(InvalidParameter, match="one length"):
        epsilon_lower_bound_from_scores([1.0, 2.0], [True], delta=1e-5)
    with pytest.raises(InvalidParameter, match="finite"):
        epsilon_lower_bound_from_scores([1.0, float("nan")], [True, False], delta=1e-5)
    with pytest.raises(InvalidParameter, match="epsilon"):
        audit_p_value(canaries=3, guesses=2, correct=1, epsilon=-1.0, delta=1e-5)
