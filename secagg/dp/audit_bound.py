"""The one-run auditing lower bound on epsilon (Steinke, Nasr and Jagielski 2023).

"Privacy Auditing with One (1) Training Run" (NeurIPS 2023, arXiv:2305.08846), Theorem 3.1 and
the procedure of its Appendix D. An auditor inserts ``m`` canaries into one training run, each
independently with probability 1/2, then guesses for ``r`` of them (abstaining on the rest)
whether it was included; ``v`` guesses are correct. If the training run is (epsilon, delta)-DP
with respect to each canary, the number ``W`` of correct guesses satisfies, for every ``v``::

    P[W >= v] <= f(v) + 2 m delta * max_{i in 1..m} (f(v - i) - f(v)) / i,
    f(k) = P[Binomial(r, e^eps / (1 + e^eps)) >= k].

The right-hand side is the p-value :func:`audit_p_value` of "the run is (epsilon, delta)-DP"
given ``v`` correct guesses. :func:`epsilon_lower_bound` returns the largest epsilon that this
test rejects at the asked confidence: with that confidence the run is *not* (epsilon', delta)-DP
for any epsilon' below it. It is a lower bound on the true epsilon, never an estimate of it:
a correct pipeline can score far below its theoretical epsilon, and a bound above the
accountant's epsilon means the implementation does not do what its accounting assumes.

Only :func:`epsilon_lower_bound_from_scores` chooses guesses from data; it tries a fixed grid of
guess counts and splits the confidence between them (Bonferroni), so the bound it returns holds
at the stated confidence although the best count was picked after seeing the scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secagg.dp.accounting import check_delta
from secagg.errors import InvalidParameter

__all__ = [
    "GUESS_FRACTIONS",
    "AuditBound",
    "audit_p_value",
    "epsilon_lower_bound",
    "epsilon_lower_bound_from_scores",
    "trivial_upper_limit",
]

#: the share of canaries guessed (half "in" from the top scores, half "out" from the bottom)
GUESS_FRACTIONS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
#: bisection steps for the epsilon search (the interval shrinks 2^-40 of its width)
_BISECTION_STEPS = 40


def _check_counts(canaries: int, guesses: int, correct: int) -> None:
    for name, value in (("canaries", canaries), ("guesses", guesses), ("correct", correct)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise InvalidParameter(f"{name} must be an integer >= 0, found {value!r}")
    if canaries < 1:
        raise InvalidParameter(f"canaries must be >= 1, found {canaries}; an audit needs canaries")
    if not correct <= guesses <= canaries:
        raise InvalidParameter(
            f"need 0 <= correct <= guesses <= canaries, found correct={correct}, "
            f"guesses={guesses}, canaries={canaries}; count only the guesses made (no abstentions)"
        )


def check_scores(scores: npt.ArrayLike, included: npt.ArrayLike
                 ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """The canaries' scores and inclusion bits as arrays, checked: non-empty, 1-d, one length,
    finite scores."""
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included, dtype=bool)
    if s.ndim != 1 or s.shape != inc.shape or s.size == 0:
        raise InvalidParameter(
            f"scores and included must be non-empty 1-d and of one length, found shapes "
            f"{s.shape} and {inc.shape}"
        )
    if not np.all(np.isfinite(s)):
        raise InvalidParameter("scores must be finite; a NaN score means the scoring failed")
    return s, inc


def _check_confidence(confidence: float) -> None:
    if not (math.isfinite(confidence) and 0 < confidence < 1):
        raise InvalidParameter(
            f"confidence must be in (0, 1), found {confidence}; 0.95 is the usual choice"
        )


def audit_p_value(*, canaries: int, guesses: int, correct: int, epsilon: float,
                  delta: float) -> float:
    """P[at least ``correct`` of ``guesses`` right] if the run is (epsilon, delta)-DP (Thm 3.1)."""
    _check_counts(canaries, guesses, correct)
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise InvalidParameter(f"epsilon must be a finite number >= 0, found {epsilon}")
    if delta != 0:
        check_delta(delta)
    if correct == 0:
        return 1.0
    from scipy.stats import binom

    p_right = 1.0 / (1.0 + math.exp(-epsilon))  # accuracy of epsilon-DP randomised response
    tail = float(binom.sf(correct - 1, guesses, p_right))  # f(v) = P[Binomial >= v]
    # f(v - i) - f(v) = P[v - i <= Binomial < v]; for i > v it stays P[Binomial < v] while i grows,
    # so the maximum over i in 1..m is reached at some i <= v
    below = binom.pmf(np.arange(correct - 1, -1, -1), guesses, p_right)  # pmf(v-1), ..., pmf(0)
    ratio = float(np.max(np.cumsum(below) / np.arange(1, correct + 1)))
    return min(1.0, tail + 2.0 * canaries * delta * ratio)


def epsilon_lower_bound(*, canaries: int, guesses: int, correct: int, delta: float,
                        confidence: float = 0.95) -> float:
    """The largest epsilon that ``correct`` right guesses out of ``guesses`` refute at
    ``confidence`` (0.0 when they refute nothing): the run is not (epsilon, delta)-DP below it."""
    _check_counts(canaries, guesses, correct)
    _check_confidence(confidence)
    level = 1.0 - confidence

    def rejected(eps: float) -> bool:
        return audit_p_value(canaries=canaries, guesses=guesses, correct=correct,
                             epsilon=eps, delta=delta) < level

    if not rejected(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while rejected(high):  # p-value -> 1 as epsilon grows: this ends
        low, high = high, 2.0 * high
    return bisect_last_true(rejected, low, high)


def bisect_last_true(fn: Callable[[float], bool], low: float, high: float) -> float:
    """For ``fn`` true at ``low`` and false at ``high`` (true below one point, false above):
    that point, from below, to 2^-40 of the interval."""
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (low + high)
        if fn(mid):
            low = mid
        else:
            high = mid
    return low


def trivial_upper_limit(*, guesses: int, confidence: float = 0.95) -> float:
    """No outcome with ``guesses`` guesses certifies more than this: even all of them right
    leave P[Binomial(r, p) >= r] = p^r, which is below 1 - confidence only for
    logit(p) < logit((1 - confidence)^(1/r))."""
    _check_confidence(confidence)
    if not (isinstance(guesses, int) and guesses >= 1):
        raise InvalidParameter(f"guesses must be an integer >= 1, found {guesses!r}")
    p = (1.0 - confidence) ** (1.0 / guesses)
    return max(0.0, math.log(p / (1.0 - p)))


@dataclass(frozen=True, slots=True)
class AuditBound:
    """The best bound over the guess grid, and the guesses behind it."""

    epsilon: float
    canaries: int
    guesses: int
    correct: int
    delta: float
    confidence: float
    #: guess count -> its bound at the Bonferroni-split confidence (for the report's plot)
    by_guesses: tuple[tuple[int, int, float], ...]


def epsilon_lower_bound_from_scores(
    scores: Sequence[float] | npt.NDArray[np.float64],
    included: Sequence[bool] | npt.NDArray[np.bool_],
    *,
    delta: float,
    confidence: float = 0.95,
    fractions: Sequence[float] = GUESS_FRACTIONS,
) -> AuditBound:
    """Guess "in" for the highest scores and "out" for the lowest, for each guess share in
    ``fractions``; each share is tested at confidence ``1 - (1 - confidence) / len(fractions)``.

    A higher score must mean "more likely included". Ties are broken by canary order.
    """
    s, inc = check_scores(scores, included)
    _check_confidence(confidence)
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise InvalidParameter(f"fractions must be non-empty, each in (0, 1], found {fractions}")
    m = int(s.size)
    per_test = 1.0 - (1.0 - confidence) / len(fractions)
    order = np.argsort(-s, kind="stable")  # most likely "in" first
    rows: list[tuple[int, int, float]] = []
    for f in fractions:
        k = max(1, round(f * m / 2))
        k_in, k_out = min(k, m), min(k, m - min(k, m))
        right = int(inc[order[:k_in]].sum()) + int((~inc[order[m - k_out:]]).sum()) if k_out \
            else int(inc[order[:k_in]].sum())
        r = k_in + k_out
        rows.append((r, right, epsilon_lower_bound(canaries=m, guesses=r, correct=right,
                                                   delta=delta, confidence=per_test)))
    best = max(rows, key=lambda row: row[2])
    return AuditBound(epsilon=best[2], canaries=m, guesses=best[0], correct=best[1], delta=delta,
                      confidence=confidence, by_guesses=tuple(rows))
