"""Fixed-point quantisation: unbiasedness, range, the k*step error of a dequantised sum, the
exact headroom rule, and argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from secagg.encoding.quantize import FixedPoint, check_headroom, dequantize_sum, quantize
from secagg.errors import InvalidParameter

fixed_points = st.builds(
    FixedPoint,
    clip=st.floats(1e-3, 1e3),
    value_bits=st.integers(1, 20),
)

# --- unbiasedness -----------------------------------------------------------------------------
#
# Each stochastic rounding q of y = (x + clip) * scale * w lies in {floor(y), floor(y) + 1}, an
# interval of width 1, with E[q] = y. Hoeffding: the mean of N independent roundings misses y by
# eps or more with probability <= 2 exp(-2 N eps^2). We test COORDS coordinates in each of
# UNBIASED_EXAMPLES examples and want a false alarm (a correct quantiser failing) with
# probability at most FALSE_ALARM over the whole test, so per coordinate delta = FALSE_ALARM /
# (COORDS * UNBIASED_EXAMPLES) and eps = sqrt(ln(2 / delta) / (2 N)) ~= 0.06 of one level.
# A deterministic rounding (bias up to 0.5 level) or a floor (bias ~0.5 on average) fails it.

N_ROUNDINGS = 4000
COORDS = 8
UNBIASED_EXAMPLES = 60
FALSE_ALARM = 1e-9
EPS_LEVELS = math.sqrt(math.log(2 * COORDS * UNBIASED_EXAMPLES / FALSE_ALARM) / (2 * N_ROUNDINGS))


def test_tolerance_is_tight_enough_to_catch_rounding_bias() -> None:
    assert EPS_LEVELS < 0.07


@settings(max_examples=UNBIASED_EXAMPLES, deadline=None)
@given(
    fp=fixed_points,
    weight=st.integers(1, 50),
    unit=arrays(np.float64, COORDS, elements=st.floats(-1, 1)),
    seed=st.integers(0, 2**32 - 1),
)
def test_stochastic_rounding_is_unbiased(fp: FixedPoint, weight: int, unit: np.ndarray, seed: int) -> None:
    x = unit * fp.clip
    reps = np.tile(x, (N_ROUNDINGS, 1))
    q = quantize(reps, fp, weight=weight, rng=np.random.default_rng(seed))
    assert q.shape == reps.shape
    y = (x + fp.clip) * fp.scale * weight
    y = np.minimum(y, weight * fp.levels)
    mean = q.astype(np.float64).mean(axis=0)
    assert np.all(np.abs(mean - y) < EPS_LEVELS), np.max(np.abs(mean - y))


def test_deterministic_rounding_would_fail_the_unbiasedness_tolerance() -> None:
    """Sanity check of the test itself: round-to-nearest is biased by more than EPS_LEVELS."""
    fp = FixedPoint(clip=1.0, value_bits=4)
    x = np.full(COORDS, -1.0 + 0.3 * fp.step)  # 0.3 of a level above the lowest grid point
    q = quantize(np.tile(x, (N_ROUNDINGS, 1)), fp, rng=np.random.default_rng(0))
    assert abs(q.mean() - 0.3) < EPS_LEVELS
    assert abs(np.round(0.3) - 0.3) > EPS_LEVELS


# --- range ------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    clip=st.floats(1e-3, 1e3),
    value_bits=st.integers(1, 30),
    weight=st.integers(1, 2**12),
    unit=arrays(np.float64, st.integers(0, 64), elements=st.floats(-10, 10)),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantize_stays_in_range(
    clip: float, value_bits: int, weight: int, unit: np.ndarray, seed: int
) -> None:
    fp = FixedPoint(clip=clip, value_bits=value_bits)
    if weight * fp.levels >= 2**32:
        with pytest.raises(InvalidParameter, match="does not fit in uint32"):
            quantize(unit * clip, fp, weight=weight)
        return
    q = quantize(unit * clip, fp, weight=weight, rng=np.random.default_rng(seed))
    assert q.dtype == np.uint32
    assert q.shape == unit.shape
    assert np.all(q <= weight * fp.levels)
    # Clipped inputs land exactly on the ends of the range.
    assert np.all(q[unit <= -1] == 0)
    assert np.all(q[unit >= 1] == weight * fp.levels)


def test_quantize_endpoints_and_default_rng() -> None:
    fp = FixedPoint(clip=0.5, value_bits=8)
    q = quantize(np.array([-0.5, 0.5, -3.0, 3.0]), fp, weight=3)
    np.testing.assert_array_equal(q, [0, 3 * 255, 0, 3 * 255])


# --- dequantised sum --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    fp=fixed_points,
    weights=st.lists(st.integers(1, 20), min_size=1, max_size=10),
    seed=st.integers(0, 2**32 - 1),
    dim=st.integers(1, 32),
)
def test_dequantize_sum_within_k_steps(fp: FixedPoint, weights: list[int], seed: int, dim: int) -> None:
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-fp.clip, fp.clip, size=dim) for _ in weights]
    total = sum(
        (quantize(x, fp, weight=w, rng=rng).astype(np.uint64) for x, w in zip(xs, weights, strict=True)),
        start=np.zeros(dim, dtype=np.uint64),
    )
    est = dequantize_sum(total, fp, total_weight=sum(weights))
    truth = sum(w * x for x, w in zip(xs, weights, strict=True))
    k = len(weights)
    # Each client's rounding error is < 1 level = step; float error is far below that.
    slack = 1e-9 * (fp.clip * sum(weights) + k * fp.step)
    assert np.all(np.abs(est - truth) <= k * fp.step + slack)


def test_dequantize_sum_exact_at_endpoints() -> None:
    fp = FixedPoint(clip=2.0, value_bits=10)
    total = quantize(np.array([-2.0, 2.0]), fp, weight=3) + quantize(np.array([2.0, 2.0]), fp)
    np.testing.assert_allclose(dequantize_sum(total, fp, total_weight=4), [3 * -2.0 + 2.0, 8.0])


# --- headroom ---------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(1, 5000),
    w=st.integers(1, 1000),
    value_bits=st.integers(1, 30),
    mod_bits=st.integers(1, 32),
    extra=st.one_of(st.just(0), st.integers(0, 2**33)),
)
def test_check_headroom_raises_exactly_on_overflow(
    n: int, w: int, value_bits: int, mod_bits: int, extra: int
) -> None:
    fp = FixedPoint(clip=1.0, value_bits=value_bits)
    worst = n * w * fp.levels + extra
    if worst >= 2**mod_bits:
        with pytest.raises(InvalidParameter) as info:
            check_headroom(num_clients=n, fixed_point=fp, max_weight=w, mod_bits=mod_bits, extra=extra)
        msg = str(info.value)
        assert f"can reach {worst}" in msg
        assert f"overflows the modulus 2^{mod_bits}" in msg
        need = int(msg.split("mod_bits >= ")[1].split(".")[0])
        assert 2 ** (need - 1) <= worst < 2**need
        for knob in (
            "mod_bits",
            f"value_bits (now {value_bits})",
            f"max_weight (now {w})",
            f"num_clients (now {n})",
        ):
            assert knob in msg
    else:
        check_headroom(num_clients=n, fixed_point=fp, max_weight=w, mod_bits=mod_bits, extra=extra)


def test_check_headroom_boundary() -> None:
    fp = FixedPoint(clip=1.0, value_bits=8)  # 255 levels
    check_headroom(num_clients=1, fixed_point=fp, max_weight=1, mod_bits=8)  # 255 < 256
    with pytest.raises(InvalidParameter, match=r"can reach 256, which overflows the modulus 2\^8"):
        check_headroom(num_clients=1, fixed_point=fp, max_weight=1, mod_bits=8, extra=1)
    check_headroom(num_clients=2**24, fixed_point=fp, max_weight=1, mod_bits=32)
    with pytest.raises(InvalidParameter, match=r"it needs mod_bits >= 33"):
        check_headroom(num_clients=2**24 + 2**17, fixed_point=fp, max_weight=1, mod_bits=32)


# --- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip": 0.0, "value_bits": 8}, r"clip must be a positive finite number, found 0\.0"),
        ({"clip": -1.0, "value_bits": 8}, r"clip must be a positive finite number, found -1\.0"),
        ({"clip": math.nan, "value_bits": 8}, r"clip must be a positive finite number, found nan"),
        ({"clip": math.inf, "value_bits": 8}, r"clip must be a positive finite number, found inf"),
        ({"clip": 1.0, "value_bits": 0}, r"value_bits must be in \[1, 30\], found 0"),
        ({"clip": 1.0, "value_bits": 31}, r"value_bits must be in \[1, 30\], found 31"),
    ],
)
def test_fixed_point_rejects(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(InvalidParameter, match=match):
        FixedPoint(**kwargs)  # type: ignore[arg-type]


FP = FixedPoint(clip=1.0, value_bits=8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mod_bits": 0}, r"mod_bits must be in \[1, 32\], found 0"),
        ({"mod_bits": 33}, r"mod_bits must be in \[1, 32\], found 33"),
        ({"max_weight": 0}, r"max_weight must be >= 1, found 0"),
        ({"num_clients": 0}, r"num_clients must be >= 1, found 0"),
        ({"num_clients": -5}, r"num_clients must be >= 1, found -5"),
        ({"extra": -1}, r"extra must be >= 0, found -1"),
    ],
)
def test_check_headroom_rejects(kwargs: dict[str, int], match: str) -> None:
    args = {"num_clients": 2, "max_weight": 1, "mod_bits": 20, **kwargs}
    with pytest.raises(InvalidParameter, match=match):
        check_headroom(fixed_point=FP, **args)


@pytest.mark.parametrize(
    ("weight", "match"),
    [
        (0, r"weight must be an integer >= 1, found 0"),
        (-2, r"weight must be an integer >= 1, found -2"),
        (2.5, r"weight must be an integer >= 1, found 2\.5"),
        (True, r"weight must be an integer >= 1, found True"),
        ("2", r"weight must be an integer >= 1, found '2'"),
    ],
)
def test_quantize_rejects_weight(weight: object, match: str) -> None:
    with pytest.raises(InvalidParameter, match=match):
        quantize(np.zeros(3), FP, weight=weight)  # type: ignore[arg-type]


def test_quantize_accepts_numpy_integer_weight() -> None:
    assert quantize(np.array([1.0]), FP, weight=np.int64(4))[0] == 4 * 255


def test_quantize_rejects_weight_overflowing_uint32() -> None:
    fp = FixedPoint(clip=1.0, value_bits=30)
    # 5 * (2^30 - 1) >= 2^32 used to wrap silently to a small value; 4 * (2^30 - 1) still fits.
    with pytest.raises(
        InvalidParameter,
        match=r"weight 5 times 1073741823 levels \(value_bits 30\) does not fit in uint32",
    ):
        quantize(np.ones(2), fp, weight=5)
    assert quantize(np.ones(1), fp, weight=4)[0] == 4 * (2**30 - 1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_quantize_rejects_non_finite(bad: float) -> None:
    with pytest.raises(InvalidParameter, match="update contains nan or inf"):
        quantize(np.array([0.0, bad]), FP)


@pytest.mark.parametrize("total_weight", [0, -1])
def test_dequantize_rejects_total_weight(total_weight: int) -> None:
    with pytest.raises(InvalidParameter, match=rf"total_weight must be >= 1, found {total_weight}"):
        dequantize_sum(np.zeros(2, dtype=np.uint64), FP, total_weight=total_weight)


def test_fixed_point_grid() -> None:
    fp = FixedPoint(clip=0.5, value_bits=4)
    assert fp.levels == 15
    assert fp.scale == pytest.approx(15.0)
    assert fp.step == pytest.approx(1 / 15)
