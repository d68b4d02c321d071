"""The one-run audit analysed with trade-off curves (f-DP), after Mahloujifar, Melis and
Chaudhuri, "Auditing f-Differential Privacy in One Run" (ICML 2025, arXiv:2410.22235).

Same game as :mod:`secagg.dp.audit_bound`: ``m`` canaries, each included with probability 1/2;
from one run the auditor makes exactly ``k`` guesses (abstaining on the rest), ``v`` right.
Steinke et al. bound the guesses by the accuracy e^eps / (1 + e^eps) of every single guess; a
Gaussian mechanism is far from that worst case (it is very accurate on a few guesses, not on
all), so its one-run epsilon bound stays far below its epsilon. Here the hypothesis is that the
run is f-DP with respect to each canary, for a trade-off curve f, and the whole curve is used.

The argument (written out here because the code relies on it). Let phi(a) = 1 - f(a): concave,
increasing, the most an f-DP test can detect "in" at false-alarm rate a. N is the number of right
guesses, C_i and W_i that canary i is guessed right / wrong. For canary i, fix the others'
inclusion bits; the set A = {guess "in" for i and the others' right guesses >= t-1} is decided
by the output alone, and "i right and N >= t" is A under "i in" (plus the mirror event for "out"
guesses), while "i wrong and N >= t-1" is A under "i out". f-DP (f symmetric) gives
P[A | in] <= phi(P[A | out]); by concavity (Jensen, over the other bits, the two guess sides and
the canaries), with x_t = E[N 1{N >= t}] / m and y_t = E[(k - N) 1{N >= t}] / m::

    x_t <= phi(y_{t-1})        for t = 1..k.                                    (*)

Any law of N on 0..k obeys (*). The largest P[N >= v] among laws obeying (*) is therefore a
p-value for "the run is f-DP" given v right guesses. For a candidate tail tau, the cheapest law
(least total probability) puts tau at exactly v (more right guesses only raise x) and, going
down t = v..1, the least mass at level t-1 that makes (*) hold: mass beyond that at a level
t-1 is better spent one level lower (it buys the same y for less probability and adds less x),
and beyond the need at level 0 it buys nothing. tau is possible iff that least mass is <= 1;
the possible tails form an interval [0, tau*] (mixing with N = 0 keeps (*), phi being concave
with phi(0) >= 0), so the p-value is tau* and "reject at level alpha" is "least mass for
tau = alpha exceeds 1". This is the recursion of the paper's numerical algorithm (its h and r
are our y and x); tests/dp/test_audit_fdp.py checks it against a generic optimiser.

Curves: :class:`GaussianCurve` (mu-GDP; the exact curve of a full-batch Gaussian mechanism,
mu = sqrt(steps) / sigma) and :class:`ApproxDPCurve` (the curve of (epsilon, delta)-DP, which
every (epsilon, delta)-DP mechanism meets; a bound under it is a plain epsilon lower bound,
comparable with Steinke et al.'s). A GDP bound certifies "the run is not mu-GDP for any mu below
mu_hat"; :func:`gdp_epsilon` turns mu_hat into the epsilon a mu_hat-GDP mechanism has at the
ledger's delta. That number is an epsilon lower bound among Gaussian-shaped mechanisms (a
full-batch Gaussian with whatever noise it really adds); it is compared with the theoretical
epsilon only where the claimed mechanism is Gaussian (q = 1). The (epsilon, delta) bound needs
no such shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np
import numpy.typing as npt

from secagg.dp.accounting import check_delta
from secagg.dp.audit_bound import (
    GUESS_FRACTIONS,
    _check_confidence,
    _check_counts,
    bisect_last_true,
    check_scores,
)
from secagg.errors import InvalidParameter

__all__ = [
    "ApproxDPCurve",
    "FdpAuditBound",
    "GaussianCurve",
    "TradeOffCurve",
    "cheapest_law",
    "epsilon_lower_bound_fdp",
    "fdp_bound_from_scores",
    "fdp_p_value",
    "fdp_rejects",
    "gdp_delta",
    "gdp_epsilon",
    "gdp_mu",
    "gdp_mu_lower_bound",
    "least_mass",
]

_N = NormalDist()
#: bisection steps of the parameter searches (the interval shrinks 2^-40 of its width)
_BISECTION_STEPS = 40
#: the largest mu searched: a 40-GDP mechanism is indistinguishable from no privacy at m <= 1e6
_MU_MAX = 40.0


class TradeOffCurve(Protocol):
    """phi(a) = 1 - f(a) of a symmetric trade-off curve f, and its inverse."""

    def phi(self, alpha: float) -> float: ...

    def phi_inverse(self, x: float) -> float:
        """The least alpha with phi(alpha) >= x (math.inf when none)."""
        ...


@dataclass(frozen=True, slots=True)
class GaussianCurve:
    """mu-GDP: f(a) = Phi(Phi^-1(1 - a) - mu), so phi(a) = Phi(Phi^-1(a) + mu)."""

    mu: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mu) and self.mu >= 0):
            raise InvalidParameter(f"mu must be a finite number >= 0, found {self.mu}")

    def phi(self, alpha: float) -> float:
        if alpha <= 0.0:
            return 0.0
        if alpha >= 1.0:
            return 1.0
        return _N.cdf(_N.inv_cdf(alpha) + self.mu)

    def phi_inverse(self, x: float) -> float:
        if x <= 0.0:
            return 0.0
        if x >= 1.0:
            return 1.0 if x == 1.0 else math.inf
        return _N.cdf(_N.inv_cdf(x) - self.mu)


@dataclass(frozen=True, slots=True)
class ApproxDPCurve:
    """(epsilon, delta)-DP: phi(a) = min(1, delta + e^eps a, 1 - e^-eps (1 - delta - a))."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise InvalidParameter(f"epsilon must be a finite number >= 0, found {self.epsilon}")
        if self.delta != 0:
            check_delta(self.delta)

    def phi(self, alpha: float) -> float:
        alpha = min(max(alpha, 0.0), 1.0)
        e = math.exp(self.epsilon)
        return min(1.0, self.delta + e * alpha, 1.0 - (1.0 - self.delta - alpha) / e)

    def phi_inverse(self, x: float) -> float:
        if x > 1.0:
            return math.inf
        e = math.exp(self.epsilon)
        return max(0.0, (x - self.delta) / e, 1.0 - self.delta - e * (1.0 - x))


def least_mass(curve: TradeOffCurve, *, canaries: int, guesses: int, correct: int,
               tail: float) -> float:
    """The least total probability of a law of N on 0..guesses obeying (*) with
    P[N >= correct] = tail (see the module docstring); > 1 means that tail is impossible.
    Stops early (returning a value > 1) once the mass passes 1."""
    m, k, v = canaries, guesses, correct
    x, y, mass = v * tail / m, (k - v) * tail / m, tail
    for t in range(v, 0, -1):  # constraint (*) at t, paid for by mass at level t - 1
        need = curve.phi_inverse(x) - y
        if need > 0.0:
            p = need * m / (k - t + 1)
            mass += p
            if mass > 1.0:
                return mass
            x += (t - 1) * p / m
            y += (k - t + 1) * p / m
    return mass


def cheapest_law(curve: TradeOffCurve, *, canaries: int, guesses: int, correct: int,
                 tail: float) -> npt.NDArray[np.float64]:
    """The law of N behind :func:`least_mass` (P[N = j] for j = 0..guesses, summing to the
    least mass, not to 1): for tests and plots."""
    m, k, v = canaries, guesses, correct
    law = np.zeros(k + 1)
    law[v] = tail
    x, y = v * tail / m, (k - v) * tail / m
    for t in range(v, 0, -1):
        need = curve.phi_inverse(x) - y
        if need > 0.0:
            p = need * m / (k - t + 1)
            law[t - 1] = p
            x += (t - 1) * p / m
            y += (k - t + 1) * p / m
    return law


def fdp_rejects(curve: TradeOffCurve, *, canaries: int, guesses: int, correct: int,
                level: float) -> bool:
    """Whether ``correct`` right guesses out of ``guesses`` reject "f-DP" at ``level``."""
    _check_counts(canaries, guesses, correct)
    if correct == 0:
        return False
    return least_mass(curve, canaries=canaries, guesses=guesses, correct=correct,
                      tail=level) > 1.0


def fdp_p_value(curve: TradeOffCurve, *, canaries: int, guesses: int, correct: int) -> float:
    """The largest P[N >= correct] any run f-DP in each canary can have (a p-value)."""
    _check_counts(canaries, guesses, correct)
    if correct == 0:
        return 1.0
    low, high = 0.0, 1.0
    if least_mass(curve, canaries=canaries, guesses=guesses, correct=correct, tail=1.0) <= 1.0:
        return 1.0
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (low + high)
        if least_mass(curve, canaries=canaries, guesses=guesses, correct=correct,
                      tail=mid) <= 1.0:
            low = mid
        else:
            high = mid
    return high


def _largest_rejected(fn: Callable[[float], bool], upper: float) -> float:
    """The largest parameter in [0, upper] that ``fn`` (true below a point, false above)
    calls rejected, to 2^-40 of ``upper``; 0.0 when even 0 is not rejected."""
    if not fn(0.0):
        return 0.0
    if fn(upper):
        return upper
    return bisect_last_true(fn, 0.0, upper)


def gdp_mu_lower_bound(*, canaries: int, guesses: int, correct: int,
                       confidence: float = 0.95) -> float:
    """The largest mu such that the guesses reject mu-GDP at ``confidence`` (0.0 if none):
    with that confidence the run is not mu'-GDP for any mu' below it."""
    _check_counts(canaries, guesses, correct)
    _check_confidence(confidence)
    level = 1.0 - confidence
    return _largest_rejected(
        lambda mu: fdp_rejects(GaussianCurve(mu), canaries=canaries, guesses=guesses,
                               correct=correct, level=level), _MU_MAX)


def epsilon_lower_bound_fdp(*, canaries: int, guesses: int, correct: int, delta: float,
                            confidence: float = 0.95) -> float:
    """The largest epsilon such that the guesses reject (epsilon, delta)-DP at ``confidence``,
    by the f-DP analysis with the (epsilon, delta) curve (no shape assumed)."""
    _check_counts(canaries, guesses, correct)
    _check_confidence(confidence)
    if delta != 0:
        check_delta(delta)
    level = 1.0 - confidence
    return _largest_rejected(
        lambda eps: fdp_rejects(ApproxDPCurve(eps, delta), canaries=canaries, guesses=guesses,
                                correct=correct, level=level), 2.0 * _MU_MAX)


def _log_delta_terms(mu: float, eps: float) -> tuple[float, float]:
    from scipy.special import log_ndtr

    return (float(log_ndtr(-eps / mu + mu / 2)), eps + float(log_ndtr(-eps / mu - mu / 2)))


def gdp_delta(mu: float, eps: float) -> float:
    """delta(eps) of mu-GDP: Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)."""
    if mu <= 0:
        return 0.0
    a, b = _log_delta_terms(mu, eps)
    return max(0.0, math.exp(a) - math.exp(b)) if b < a else 0.0


def gdp_epsilon(mu: float, delta: float) -> float:
    """The epsilon of mu-GDP at ``delta`` (0.0 when delta already covers it)."""
    if not (math.isfinite(mu) and mu >= 0):
        raise InvalidParameter(f"mu must be a finite number >= 0, found {mu}")
    check_delta(delta)
    if gdp_delta(mu, 0.0) <= delta:
        return 0.0
    low, high = 0.0, 1.0
    while gdp_delta(mu, high) > delta:
        low, high = high, 2.0 * high
    for _ in range(60):
        mid = 0.5 * (low + high)
        if gdp_delta(mu, mid) > delta:
            low = mid
        else:
            high = mid
    return high


def gdp_mu(epsilon: float, delta: float) -> float:
    """The mu whose GDP curve has ``epsilon`` at ``delta`` (inverse of :func:`gdp_epsilon`)."""
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise InvalidParameter(f"epsilon must be a finite number >= 0, found {epsilon}")
    check_delta(delta)
    low, high = 0.0, 1.0
    while gdp_epsilon(high, delta) < epsilon:
        low, high = high, 2.0 * high
    for _ in range(60):
        mid = 0.5 * (low + high)
        if gdp_epsilon(mid, delta) < epsilon:
            low = mid
        else:
            high = mid
    return low


@dataclass(frozen=True, slots=True)
class FdpAuditBound:
    """The f-DP bounds of one set of scores, at their best guess counts.

    ``mu``/``epsilon_gdp`` are None when the Gaussian curve was not asked for."""

    epsilon: float  #: (epsilon, delta)-curve bound: a plain epsilon lower bound
    guesses: int
    correct: int
    mu: float | None  #: GDP bound: the run is not mu'-GDP for mu' < mu
    epsilon_gdp: float | None  #: gdp_epsilon(mu, delta)
    gdp_guesses: int | None
    gdp_correct: int | None
    canaries: int
    delta: float
    confidence: float
    #: (guesses, correct, epsilon bound, mu bound or None) per guess count, at the split level
    by_guesses: tuple[tuple[int, int, float, float | None], ...]


def _guess_counts(s: npt.NDArray[np.float64], inc: npt.NDArray[np.bool_],
                  fractions: Sequence[float]) -> list[tuple[int, int]]:
    m = int(s.size)
    order = np.argsort(-s, kind="stable")  # most likely "in" first
    rows = []
    for f in fractions:
        k = max(1, round(f * m / 2))
        k_in = min(k, m)
        k_out = min(k, m - k_in)
        right = int(inc[order[:k_in]].sum())
        if k_out:
            right += int((~inc[order[m - k_out:]]).sum())
        rows.append((k_in + k_out, right))
    return rows


def fdp_bound_from_scores(
    scores: Sequence[float] | npt.NDArray[np.float64],
    included: Sequence[bool] | npt.NDArray[np.bool_],
    *,
    delta: float,
    confidence: float = 0.95,
    gaussian: bool = True,
    fractions: Sequence[float] = GUESS_FRACTIONS,
) -> FdpAuditBound:
    """Guess as :func:`secagg.dp.audit_bound.epsilon_lower_bound_from_scores` does (top scores
    "in", bottom "out", for each share in ``fractions``) and bound each guess count at
    confidence ``1 - (1 - confidence) / len(fractions)`` (Bonferroni over the guess counts), so
    each bound returned holds at ``confidence`` although its best count was picked after seeing
    the scores. The (epsilon, delta)-curve bound and, when ``gaussian``, the GDP bound are two
    claims, each at ``confidence`` (not jointly)."""
    s, inc = check_scores(scores, included)
    _check_confidence(confidence)
    if delta != 0:
        check_delta(delta)
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise InvalidParameter(f"fractions must be non-empty, each in (0, 1], found {fractions}")
    m = int(s.size)
    per_test = 1.0 - (1.0 - confidence) / len(fractions)
    rows: list[tuple[int, int, float, float | None]] = []
    for r, right in _guess_counts(s, inc, fractions):
        eps = epsilon_lower_bound_fdp(canaries=m, guesses=r, correct=right, delta=delta,
                                      confidence=per_test)
        mu = gdp_mu_lower_bound(canaries=m, guesses=r, correct=right,
                                confidence=per_test) if gaussian else None
        rows.append((r, right, eps, mu))
    best = max(rows, key=lambda row: row[2])
    if gaussian:
        best_mu = max(rows, key=lambda row: row[3] or 0.0)
        mu_hat = best_mu[3] or 0.0
        return FdpAuditBound(
            epsilon=best[2], guesses=best[0], correct=best[1], mu=mu_hat,
            epsilon_gdp=gdp_epsilon(mu_hat, delta) if delta else None,
            gdp_guesses=best_mu[0], gdp_correct=best_mu[1], canaries=m, delta=delta,
            confidence=confidence, by_guesses=tuple(rows))
    return FdpAuditBound(epsilon=best[2], guesses=best[0], correct=best[1], mu=None,
                         epsilon_gdp=None, gdp_guesses=None, gdp_correct=None, canaries=m,
                         delta=delta, confidence=confidence, by_guesses=tuple(rows))
