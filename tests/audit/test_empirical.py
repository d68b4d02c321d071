"""The empirical audit on real Opacus training (tiny encoder, seconds per run): each planted bug
is caught, the correct pipeline's bound never exceeds its theoretical epsilon, and the
instrumentation leaves Opacus as it found it."""

from __future__ import annotations

import warnings

import pytest
from opacus.optimizers import DPOptimizer

from secagg.errors import InvalidParameter
from secagg_clients.audit.empirical import EmpiricalAudit, Plant, audit_pipeline, batch_size_for
from secagg_clients.data import Record

FULL_BATCH = dict(sample_rate=1.0, noise_multiplier=4.0, steps=1)  # claimed epsilon ~0.93
SUBSAMPLED = dict(sample_rate=0.05, noise_multiplier=2.0, steps=40)  # claimed epsilon ~0.70
HALVED = dict(sample_rate=1.0, noise_multiplier=2.0, steps=2)  # claimed epsilon ~2.9


def _audit(records: list[Record], plant: Plant | None, mech: dict[str, float]) -> EmpiricalAudit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return audit_pipeline(records, delta=1e-5, canaries=200, plant=plant,
                              encoder="test_only_tiny", progress=False, **mech)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def runs(records: list[Record]) -> dict[str, EmpiricalAudit]:
    return {
        "correct_full": _audit(records, None, FULL_BATCH),
        "no_clipping": _audit(records, Plant.NO_CLIPPING, FULL_BATCH),
        "correct_sub": _audit(records, None, SUBSAMPLED),
        "misreported": _audit(records, Plant.SAMPLE_RATE_MISREPORTED, SUBSAMPLED),
        "correct_halved_base": _audit(records, None, HALVED),
        "noise_halved": _audit(records, Plant.NOISE_HALVED, HALVED),
    }


@pytest.mark.parametrize("name", ["correct_full", "correct_sub", "correct_halved_base"])
def test_a_correct_pipeline_never_beats_its_theory(runs: dict[str, EmpiricalAudit],
                                                   name: str) -> None:
    a = runs[name]
    assert a.plant is None and a.run == a.claimed
    assert a.white_box.epsilon <= a.theory and a.black_box.epsilon <= a.theory
    assert not a.violation
    assert not a.noise_too_small  # the noise check does not cry wolf (false alarm rate 1e-3)
    # the estimate from noise_samples coordinates is chi-square: below its one-in-a-million
    # lower quantile only if the noise is smaller than claimed (a fixed 0.9 failed by chance)
    from scipy.stats import chi2

    lower = (chi2.ppf(1e-6, a.noise_samples) / a.noise_samples) ** 0.5
    assert a.noise_sigma_hat >= lower * a.claimed.noise_multiplier


def test_no_clipping_is_caught(runs: dict[str, EmpiricalAudit]) -> None:
    a = runs["no_clipping"]
    assert a.violation and a.white_box.epsilon > a.theory + 1.0
    assert a.run == a.claimed  # same q, sigma, steps: only the clipping is missing


def test_a_misreported_sample_rate_is_caught(runs: dict[str, EmpiricalAudit]) -> None:
    a = runs["misreported"]
    assert a.run.sample_rate == 1.0 and a.claimed.sample_rate == 0.05
    assert a.run.steps == a.claimed.steps == 40
    assert a.violation and a.white_box.epsilon > a.theory + 1.0


def test_halved_noise_is_caught_by_the_noise_check(runs: dict[str, EmpiricalAudit]) -> None:
    a = runs["noise_halved"]
    assert a.run.noise_multiplier == a.claimed.noise_multiplier / 2
    assert a.noise_too_small and a.noise_p_value < 1e-6
    assert a.noise_sigma_hat < 0.75 * a.claimed.noise_multiplier
    # the one-run bound does rise with half the noise, but at 200 canaries it cannot pass a
    # claim of ~2.9: one-run bounds on a Gaussian are loose (see the module docstring)
    assert a.white_box.epsilon >= runs["correct_halved_base"].white_box.epsilon


def test_instrumentation_is_removed_after_the_run(runs: dict[str, EmpiricalAudit]) -> None:
    assert DPOptimizer.clip_and_accumulate.__module__.startswith("opacus")
    assert DPOptimizer.scale_grad.__module__.startswith("opacus")


def test_batch_size_reproduces_the_trainers_sample_rate() -> None:
    for n, k in ((100, 3), (331, 20), (64, 1), (97, 97)):
        b = batch_size_for(n, 1 / k)
        assert -(-n // b) == k
    with pytest.raises(InvalidParameter, match="needs at least 50 records"):
        batch_size_for(20, 1 / 50)
    with pytest.raises(InvalidParameter, match="1/k"):
        batch_size_for(20, 0.3)


def test_misreporting_needs_a_subsampled_round(records: list[Record]) -> None:
    with pytest.raises(InvalidParameter, match="already records q = 1"):
        audit_pipeline(records, delta=1e-5, plant=Plant.SAMPLE_RATE_MISREPORTED,
                       encoder="test_only_tiny", progress=False, **FULL_BATCH)  # type: ignore[arg-type]
