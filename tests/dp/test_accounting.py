"""Sample-level accounting: known answers, and agreement with dp_accounting (independent code)."""

from __future__ import annotations

import subprocess
import sys

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from secagg.dp import Accountant, GaussianSteps, epsilon, epsilon_of_history, noise_multiplier
from secagg.errors import InvalidParameter

GRID = [  # (q, sigma, steps, delta)
    (0.01, 1.0, 1000, 1e-5),
    (0.004, 0.8, 2500, 1e-6),
    (0.05, 1.5, 300, 1e-5),
    (0.1, 2.0, 100, 1e-4),
    (0.02, 0.7, 200, 1e-5),
    (0.25, 4.0, 40, 1e-5),
]


def _event(q: float, sigma: float, steps: int) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


def test_known_answer_rdp_matches_opacus_paper_figure() -> None:
    assert epsilon(sample_rate=0.01, noise_multiplier=1.0, steps=1000, delta=1e-5) == pytest.approx(
        2.1014, abs=5e-5
    )


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), GRID)
def test_rdp_agrees_with_dp_accounting_within_1_percent(
    q: float, sigma: float, steps: int, delta: float
) -> None:
    ours = epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=delta,
                   accountant="rdp")
    acc = rdp.RdpAccountant()
    acc.compose(_event(q, sigma, steps))
    theirs = acc.get_epsilon(delta)
    assert ours == pytest.approx(theirs, rel=0.01)


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), GRID)
def test_prv_agrees_with_dp_accounting_pld_within_2_percent(
    q: float, sigma: float, steps: int, delta: float
) -> None:
    ours = epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=delta,
                   accountant="prv")
    acc = pld.PLDAccountant(value_discretization_interval=1e-3)
    acc.compose(_event(q, sigma, steps))
    theirs = acc.get_epsilon(delta)
    assert ours == pytest.approx(theirs, rel=0.02)


def test_prv_is_tighter_than_rdp() -> None:
    kw = dict(sample_rate=0.01, noise_multiplier=1.0, steps=1000, delta=1e-5)
    assert epsilon(**kw, accountant="prv") < epsilon(**kw, accountant="rdp")


def test_history_composes_heterogeneous_rounds_like_dp_accounting() -> None:
    history = [GaussianSteps(0.02, 1.0, 150), GaussianSteps(0.05, 1.3, 60)]
    ours = epsilon_of_history(history, delta=1e-5, accountant=Accountant.RDP)
    acc = rdp.RdpAccountant()
    for h in history:
        acc.compose(_event(h.sample_rate, h.noise_multiplier, h.steps))
    assert ours == pytest.approx(acc.get_epsilon(1e-5), rel=0.01)
    # composition costs less than the sum of the parts, more than either
    parts = [epsilon_of_history([h], delta=1e-5) for h in history]
    assert max(parts) < ours < sum(parts)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_noise_multiplier_reaches_target(accountant: str) -> None:
    sigma = noise_multiplier(target_epsilon=3.0, sample_rate=0.05, steps=120, delta=1e-5,
                             accountant=accountant)
    eps = epsilon(sample_rate=0.05, noise_multiplier=sigma, steps=120, delta=1e-5,
                  accountant=accountant)
    assert 2.95 <= eps <= 3.0 + 1e-9
    # a 2 % smaller sigma overshoots: the calibration is not needlessly loose
    assert epsilon(sample_rate=0.05, noise_multiplier=sigma * 0.98, steps=120, delta=1e-5,
                   accountant=accountant) > 3.0 - 0.05


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(sample_rate=0.0), "sample_rate"),
        (dict(sample_rate=1.5), "sample_rate"),
        (dict(noise_multiplier=0.0), "noise_multiplier"),
        (dict(noise_multiplier=float("nan")), "noise_multiplier"),
        (dict(steps=-1), "steps"),
        (dict(delta=0.0), "delta"),
        (dict(delta=1.0), "delta"),
        (dict(accountant="gdp"), "accountant"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = dict(sample_rate=0.01, noise_multiplier=1.0, steps=10, delta=1e-5)
    base.update(kwargs)
    with pytest.raises(InvalidParameter, match=field):
        epsilon(**base)  # type: ignore[arg-type]


def test_unreachable_target_is_a_clear_error() -> None:
    with pytest.raises(InvalidParameter, match="target_epsilon"):
        noise_multiplier(target_epsilon=1e-6, sample_rate=1.0, steps=10_000, delta=1e-5)


def test_importing_secagg_dp_loads_neither_torch_nor_clients() -> None:
    code = ("import sys, secagg, secagg.dp, secagg.dp.csprng, secagg.dp.ledger, "
            "secagg.cli.privacy_epsilon, secagg.cli.privacy_ledger, secagg_benchmarks.dp, "
            "secagg_benchmarks.commands.dp; "
            "bad = [m for m in ('torch', 'opacus', 'secagg_clients') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
