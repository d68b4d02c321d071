"""The f-DP one-run bound (secagg.dp.audit_fdp): the cheapest law is feasible and no feasible
law has a heavier tail (so the p-value is the relaxation's optimum), simulated Gaussian and
randomised-response audits stay below the truth at the stated rate, monotonicity, the limits
where it meets Steinke et al.'s bound, and the GDP <-> epsilon conversion against Opacus."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from secagg.dp.audit_bound import audit_p_value, epsilon_lower_bound
from secagg.dp.audit_fdp import (
    ApproxDPCurve,
    GaussianCurve,
    cheapest_law,
    epsilon_lower_bound_fdp,
    fdp_bound_from_scores,
    fdp_p_value,
    gdp_epsilon,
    gdp_mu,
    gdp_mu_lower_bound,
    least_mass,
)
from secagg.errors import InvalidParameter

FRACTIONS = (0.2,)  # the empirical audit's guess share (clients/audit/empirical.py)


def _violations(law: np.ndarray, m: int, k: int, curve: GaussianCurve | ApproxDPCurve) -> float:
    """The largest x_t - phi(y_{t-1}) over t = 1..k, from the law's definition (not the code's
    recursion): x_t = E[N 1{N >= t}] / m, y_t = E[(k - N) 1{N >= t}] / m."""
    j = np.arange(k + 1)
    worst = -math.inf
    for t in range(1, k + 1):
        x_t = float(np.sum(j[t:] * law[t:])) / m
        y_prev = float(np.sum((k - j[t - 1:]) * law[t - 1:])) / m
        worst = max(worst, x_t - curve.phi(y_prev))
    return worst


games = st.integers(2, 40).flatmap(
    lambda m: st.integers(1, m).flatmap(
        lambda k: st.tuples(st.just(m), st.just(k), st.integers(1, k))))


@settings(max_examples=80, deadline=None)
@given(games, st.floats(0.0, 3.0), st.floats(1e-4, 1.0))
def test_the_cheapest_law_meets_every_constraint(mkv: tuple[int, int, int], mu: float,
                                                 tail: float) -> None:
    m, k, v = mkv
    curve = GaussianCurve(mu)
    law = cheapest_law(curve, canaries=m, guesses=k, correct=v, tail=tail)
    if not np.all(np.isfinite(law)):  # needs more than all right guesses can give: impossible
        assert least_mass(curve, canaries=m, guesses=k, correct=v, tail=tail) > 1
        return
    assert law.min() >= 0 and law[v] == tail and law[v + 1:].sum() == 0
    assert law.sum() == pytest.approx(least_mass(curve, canaries=m, guesses=k, correct=v,
                                                 tail=tail) if law.sum() <= 1 else law.sum())
    assert _violations(law, m, k, curve) <= 1e-9


@settings(max_examples=120, deadline=None)
@given(games, st.floats(0.0, 3.0), st.lists(st.floats(0.0, 1.0), min_size=41, max_size=41))
def test_no_law_obeying_the_constraints_has_a_heavier_tail(mkv: tuple[int, int, int], mu: float,
                                                          weights: list[float]) -> None:
    """Any law of N obeying (*) -- a random one, mixed with N = 0 until it obeys -- has
    P[N >= v] at most the p-value: the greedy is the relaxation's optimum, not a guess."""
    m, k, v = mkv
    curve = GaussianCurve(mu)
    w = np.asarray(weights[: k + 1]) + 1e-12
    law = w / w.sum()
    zero = np.zeros(k + 1)
    zero[0] = 1.0
    low, high = 0.0, 1.0  # largest mixing weight of the random law that obeys (*)
    if _violations(law, m, k, curve) > 0:
        for _ in range(50):
            mid = 0.5 * (low + high)
            if _violations(mid * law + (1 - mid) * zero, m, k, curve) <= 0:
                low = mid
            else:
                high = mid
        law = low * law + (1 - low) * zero
    assert _violations(law, m, k, curve) <= 1e-12
    tail = float(law[v:].sum())
    assert tail <= fdp_p_value(curve, canaries=m, guesses=k, correct=v) + 1e-9


def _mu_hat(scores: np.ndarray, inc: np.ndarray) -> float:
    b = fdp_bound_from_scores(scores, inc, delta=1e-5, fractions=FRACTIONS)
    assert b.mu is not None
    return b.mu


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_simulated_gaussian_audits_stay_below_the_true_mu(mu: float) -> None:
    """200 one-run audits of a mu-GDP Gaussian (200 canaries, each its own coordinate): the
    bound may exceed mu in at most 5 % of runs (with these seeds: 2 of 200 at mu = 0.5, none
    at 1 and 2; small mu is where the analysis is tightest). The count is checked against
    Binomial(200, 0.05)'s one-in-a-million upper quantile, so a correct bound fails this test
    once in a million runs."""
    rng = np.random.default_rng(int(mu * 1000))
    runs, above, ratios = 200, 0, []
    for _ in range(runs):
        inc = rng.random(200) < 0.5
        hat = _mu_hat(rng.standard_normal(200) + mu * inc, inc)
        above += hat > mu
        ratios.append(hat / mu)
    assert above <= binom.ppf(1 - 1e-6, runs, 0.05)
    assert np.mean(ratios) > 0.2  # and it is not vacuous


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_simulated_randomised_response_stays_below_its_epsilon(eps: float) -> None:
    """Randomised response is the worst case of eps-DP; its (eps, 0)-curve bound exceeds eps
    in at most 5 % of 200 runs (checked as above)."""
    rng = np.random.default_rng(int(eps * 100))
    runs, above = 200, 0
    for _ in range(runs):
        inc = rng.random(200) < 0.5
        keep = rng.random(200) < math.exp(eps) / (1 + math.exp(eps))
        answer = np.where(keep, inc, ~inc).astype(float) + 1e-3 * rng.random(200)  # tie-break
        b = fdp_bound_from_scores(answer, inc, delta=0.0, gaussian=False, fractions=FRACTIONS)
        above += b.epsilon > eps
    assert above <= binom.ppf(1 - 1e-6, runs, 0.05)


def test_a_gaussian_with_epsilon_8_certifies_half_of_it_with_1000_canaries() -> None:
    """The done-when of issue 13 in simulation: mu-GDP with epsilon 8 at delta 1e-5 (full-batch
    DP-SGD), m = 1000: the f-DP bound converted to epsilon passes 4 in most runs, where the
    epsilon analysis (Steinke et al.) stays below 3."""
    from secagg.dp.audit_bound import epsilon_lower_bound_from_scores

    mu = gdp_mu(8.0, 1e-5)
    rng = np.random.default_rng(8)
    fdp, steinke = [], []
    for _ in range(10):
        inc = rng.random(1000) < 0.5
        s = rng.standard_normal(1000) + mu * inc
        b = fdp_bound_from_scores(s, inc, delta=1e-5, fractions=FRACTIONS)
        assert b.epsilon_gdp is not None
        fdp.append(b.epsilon_gdp)
        steinke.append(epsilon_lower_bound_from_scores(s, inc, delta=1e-5).epsilon)
    assert max(fdp) <= 8.0 and max(steinke) < 3.2
    assert np.median(fdp) >= 4.0


@settings(max_examples=30, deadline=None)
@given(st.integers(10, 300).flatmap(lambda m: st.tuples(st.just(m), st.integers(1, m))),
       st.sampled_from([0.9, 0.95, 0.99]))
def test_monotone_in_correct_guesses_and_in_mu(mk: tuple[int, int], confidence: float) -> None:
    m, k = mk
    vs = list(range(0, k + 1, max(1, k // 8)))
    mus = [gdp_mu_lower_bound(canaries=m, guesses=k, correct=v, confidence=confidence)
           for v in vs]
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(mus))
    v = max(1, (3 * k) // 4)
    ps = [fdp_p_value(GaussianCurve(mu), canaries=m, guesses=k, correct=v)
          for mu in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a <= b + 1e-9 for a, b in itertools.pairwise(ps))


def test_all_right_under_the_epsilon_curve_is_randomised_responses_tail() -> None:
    """All k guesses right under (eps, 0): the p-value is p^k, p = e^eps / (1 + e^eps), which
    is also Steinke et al.'s value; so the epsilon bounds agree there."""
    for k, eps in ((20, 0.5), (20, 2.0), (50, 1.0)):
        p = math.exp(eps) / (1 + math.exp(eps))
        got = fdp_p_value(ApproxDPCurve(eps, 0.0), canaries=100, guesses=k, correct=k)
        assert got == pytest.approx(p**k, rel=1e-6)
        assert got == pytest.approx(audit_p_value(canaries=100, guesses=k, correct=k,
                                                  epsilon=eps, delta=0.0), rel=1e-6)
    ours = epsilon_lower_bound_fdp(canaries=100, guesses=20, correct=20, delta=1e-5)
    theirs = epsilon_lower_bound(canaries=100, guesses=20, correct=20, delta=1e-5)
    assert ours == pytest.approx(theirs, abs=0.01)


@settings(max_examples=40, deadline=None)
@given(games, st.sampled_from([0.5, 1.0, 2.0]))
def test_never_below_steinke_under_the_epsilon_curve(mkv: tuple[int, int, int],
                                                    eps: float) -> None:
    """For pure eps-DP the relaxation is never tighter than Steinke et al.'s theorem (which is
    sharp for randomised response): its p-value is at least theirs."""
    m, k, v = mkv
    ours = fdp_p_value(ApproxDPCurve(eps, 0.0), canaries=m, guesses=k, correct=v)
    theirs = audit_p_value(canaries=m, guesses=k, correct=v, epsilon=eps, delta=0.0)
    assert ours >= theirs * (1 - 1e-6) - 1e-9


@pytest.mark.parametrize("k", [10, 40, 100])
def test_at_mu_zero_the_p_value_covers_fair_coin_guesses(k: int) -> None:
    """mu = 0: the output says nothing, N ~ Binomial(k, 1/2) exactly; a valid p-value is at
    least that tail."""
    for v in range(1, k + 1):
        assert fdp_p_value(GaussianCurve(0.0), canaries=k, guesses=k, correct=v) >= \
            binom.sf(v - 1, k, 0.5) - 1e-9


@pytest.mark.parametrize(("sigma", "steps"), [(0.6, 1), (1.0, 1), (2.0, 2), (4.0, 1)])
def test_gdp_epsilon_matches_opacus_prv_for_full_batches(sigma: float, steps: int) -> None:
    from secagg.dp import epsilon

    mu = math.sqrt(steps) / sigma
    prv = epsilon(sample_rate=1.0, noise_multiplier=sigma, steps=steps, delta=1e-5,
                  accountant="prv")
    exact = gdp_epsilon(mu, 1e-5)
    assert exact <= prv + 1e-9 and prv - exact < 0.02  # PRV rounds up, by its eps_error
    assert gdp_mu(exact, 1e-5) == pytest.approx(mu, rel=1e-6)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InvalidParameter, match="mu"):
        GaussianCurve(-1.0)
    with pytest.raises(InvalidParameter, match="epsilon"):
        ApproxDPCurve(float("nan"), 1e-5)
    with pytest.raises(InvalidParameter, match="correct"):
        gdp_mu_lower_bound(canaries=10, guesses=5, correct=6)
    with pytest.raises(InvalidParameter, match="confidence"):
        gdp_mu_lower_bound(canaries=10, guesses=5, correct=5, confidence=1.0)
    with pytest.raises(InvalidParameter, match="one length"):
        fdp_bound_from_scores([1.0, 2.0], [True], delta=1e-5)
    with pytest.raises(InvalidParameter, match="finite"):
        fdp_bound_from_scores([1.0, float("nan")], [True, False], delta=1e-5)
    assert gdp_mu_lower_bound(canaries=1000, guesses=1000, correct=500) == 0.0
    assert fdp_p_value(GaussianCurve(1.0), canaries=10, guesses=0, correct=0) == 1.0
