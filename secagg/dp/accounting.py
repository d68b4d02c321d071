"""Sample-level (epsilon, delta) accounting for DP-SGD: thin wrappers over Opacus's accountants.

We write no accountant of our own. :func:`epsilon` and :func:`noise_multiplier` validate their
arguments (every message names the field, the rule, the value and a fix), then hand a history of
Poisson-subsampled Gaussian mechanisms to Opacus's RDP accountant (Mironov et al. 2019) or its PRV
accountant (Gopi et al. 2021; tighter). The tests cross-check both against Google's dp_accounting as
an independent implementation (RDP within 1 %, PRV against its PLD accountant within 2 %).

Opacus imports torch at package load, so it is imported inside the functions: ``import secagg.dp``
stays light.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from secagg.errors import InvalidParameter

__all__ = [
    "Accountant",
    "GaussianSteps",
    "PrivacySpend",
    "check_delta",
    "epsilon",
    "epsilon_of_history",
    "noise_multiplier",
]

#: Absolute epsilon accuracy asked of the PRV accountant (its discretisation error bound).
PRV_EPS_ERROR = 1e-3


_E = TypeVar("_E", bound=enum.Enum)


class Accountant(enum.Enum):
    """Which Opacus accountant turns a history into epsilon."""

    RDP = "rdp"
    PRV = "prv"

    @classmethod
    def parse(cls, value: str | Accountant) -> Accountant:
        return parse_choice(cls, value, "accountant", "use 'rdp' (classic, matches most "
                            "papers) or 'prv' (tighter)")


def parse_choice(cls: type[_E], value: object, what: str, hint: str = "") -> _E:
    """A member of the string enum ``cls`` from itself or its (case-insensitive) value; an
    unknown one is refused naming the choices."""
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).lower())
    except ValueError:
        raise InvalidParameter(f"{what} must be one of {[m.value for m in cls]}, found "
                               f"{value!r}" + (f"; {hint}" if hint else "")) from None


@dataclass(frozen=True, slots=True)
class GaussianSteps:
    """``steps`` DP-SGD steps at one ``sample_rate`` (Poisson) and ``noise_multiplier``."""

    sample_rate: float
    noise_multiplier: float
    steps: int

    def __post_init__(self) -> None:
        _check_sample_rate(self.sample_rate)
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise InvalidParameter(
                f"noise_multiplier must be a finite number > 0, found {self.noise_multiplier}; "
                "sigma = 0 gives no privacy (epsilon is infinite)"
            )
        if not (isinstance(self.steps, int) and self.steps >= 0):
            raise InvalidParameter(f"steps must be an integer >= 0, found {self.steps!r}")


@dataclass(frozen=True, slots=True)
class PrivacySpend:
    """What one DP-SGD run spent: its mechanism, its delta and its epsilon by RDP and by PRV.

    The common record of a training report and of a ledger entry (which extend it).
    """

    sample_rate: float
    noise_multiplier: float
    steps: int
    delta: float
    epsilon_rdp: float
    epsilon_prv: float

    @property
    def gaussian_steps(self) -> GaussianSteps:
        return GaussianSteps(self.sample_rate, self.noise_multiplier, self.steps)


def _check_sample_rate(q: float) -> None:
    if not (math.isfinite(q) and 0 < q <= 1):
        raise InvalidParameter(
            f"sample_rate must be in (0, 1], found {q}; it is batch_size / dataset_size"
        )


def check_delta(delta: float) -> None:
    """Refuse a delta outside (0, 1), naming the field."""
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise InvalidParameter(
            f"delta must be in (0, 1), found {delta}; a common choice is below 1 / dataset_size"
        )


def epsilon_of_history(
    history: Sequence[GaussianSteps], *, delta: float, accountant: Accountant | str = Accountant.RDP
) -> float:
    """Epsilon of the composition of every entry of ``history`` at ``delta``."""
    check_delta(delta)
    acc_kind = Accountant.parse(accountant)
    entries = [(h.noise_multiplier, h.sample_rate, h.steps) for h in history if h.steps > 0]
    if not entries:
        return 0.0
    from opacus.accountants import PRVAccountant, RDPAccountant

    if acc_kind is Accountant.RDP:
        rdp = RDPAccountant()
        rdp.history = list(entries)
        return float(rdp.get_epsilon(delta))
    prv = PRVAccountant()
    prv.history = list(entries)
    return float(prv.get_epsilon(delta, eps_error=PRV_EPS_ERROR))


def epsilon(
    *,
    sample_rate: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    accountant: Accountant | str = Accountant.RDP,
) -> float:
    """Epsilon after ``steps`` Poisson-subsampled Gaussian steps (the DP-SGD guarantee).

    Guarantee: (epsilon, delta)-DP under add/remove-one-example neighbouring, for any per-example
    gradient clip norm C, when each step adds N(0, (noise_multiplier * C)^2) to the clipped sum.
    """
    return epsilon_of_history(
        [GaussianSteps(sample_rate, noise_multiplier, steps)], delta=delta, accountant=accountant
    )


def noise_multiplier(
    *,
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: Accountant | str = Accountant.RDP,
) -> float:
    """The smallest sigma (to Opacus's 0.01 epsilon tolerance) reaching ``target_epsilon``."""
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise InvalidParameter(
            f"target_epsilon must be a finite number > 0, found {target_epsilon}"
        )
    _check_sample_rate(sample_rate)
    check_delta(delta)
    if not (isinstance(steps, int) and steps >= 1):
        raise InvalidParameter(f"steps must be an integer >= 1, found {steps!r}")
    acc_kind = Accountant.parse(accountant)
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sigma = get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=acc_kind.value,
            )
        except ValueError as exc:
            raise InvalidParameter(
                f"no noise multiplier reaches target_epsilon={target_epsilon} with "
                f"sample_rate={sample_rate}, steps={steps}, delta={delta} ({exc}); raise "
                "target_epsilon or lower steps/sample_rate"
            ) from None
    return float(sigma)


def noise_for_remaining_rounds(
    history: Sequence[GaussianSteps],
    *,
    budget_epsilon: float,
    sample_rate: float,
    steps: int,
    rounds: int,
    delta: float,
    accountant: Accountant | str = Accountant.RDP,
    tolerance: float = 1e-3,
) -> float:
    """The smallest sigma (within ``tolerance``) such that ``history`` plus ``rounds`` more
    rounds of ``steps`` steps at ``sample_rate`` stay within ``budget_epsilon``.

    What a multi-round client needs: the same noise every round when nothing goes wrong, and a
    fair re-split of what is left after a restart that cost an extra round of training.
    Bisection on sigma over the accountant's own composition (epsilon falls as sigma grows).
    """
    if not (math.isfinite(budget_epsilon) and budget_epsilon > 0):
        raise InvalidParameter(f"budget_epsilon must be a finite number > 0, found {budget_epsilon}")
    if not (isinstance(rounds, int) and rounds >= 1):
        raise InvalidParameter(f"rounds must be an integer >= 1, found {rounds!r}")
    spent = epsilon_of_history(history, delta=delta, accountant=accountant)
    if spent >= budget_epsilon:
        raise InvalidParameter(f"the budget epsilon={budget_epsilon:g} is already spent "
                               f"({spent:.4g}); no round can run")

    def total(sigma: float) -> float:
        more = [GaussianSteps(sample_rate, sigma, steps)] * rounds
        return epsilon_of_history([*history, *more], delta=delta, accountant=accountant)

    low, high = 0.3, 2.0
    while total(high) > budget_epsilon:
        low, high = high, 2 * high
        if high > 1e4:
            raise InvalidParameter(f"no noise multiplier keeps {rounds} more round(s) within "
                                   f"epsilon={budget_epsilon:g}; lower steps or sample rate")
    if total(low) <= budget_epsilon:
        return low
    while high - low > tolerance:
        mid = (low + high) / 2
        if total(mid) > budget_epsilon:
            low = mid
        else:
            high = mid
    return high
