"""ParamSpec flatten/unflatten and clipping: roundtrips, named mismatch errors, norm bounds."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from secagg.encoding.clipping import clip_l2, clip_linf
from secagg.encoding.paramspec import ParamSpec, TensorSpec
from secagg.errors import InvalidParameter

# --- ParamSpec --------------------------------------------------------------------------------

shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)
tensor_specs = st.lists(
    st.tuples(shapes, st.sampled_from(["float16", "float32", "float64"])), min_size=0, max_size=6
)


def _params(spec: ParamSpec, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t.name: rng.standard_normal(t.shape).astype(t.dtype) for t in spec.tensors}


@settings(max_examples=150, deadline=None)
@given(layout=tensor_specs, seed=st.integers(0, 2**32 - 1))
def test_flatten_unflatten_roundtrip(layout: list[tuple[tuple[int, ...], str]], seed: int) -> None:
    spec = ParamSpec(tuple(TensorSpec(f"layer{i}.weight", s, d) for i, (s, d) in enumerate(layout)))
    params = _params(spec, seed)
    assert ParamSpec.from_arrays(params) == spec
    flat = spec.flatten(params)
    assert flat.dtype == np.float32
    assert flat.shape == (spec.size,) == (sum(math.prod(s) for s, _ in layout),)
    back = spec.unflatten(flat)
    assert list(back) == list(spec.names)
    for t in spec.tensors:
        assert back[t.name].shape == t.shape
        assert back[t.name].dtype == (np.float64 if t.dtype == "float64" else np.float32)
        np.testing.assert_array_equal(back[t.name], params[t.name].astype(np.float32))
    again = ParamSpec.from_json(spec.to_json())
    assert again == spec
    assert again.digest() == spec.digest()


def test_digest_depends_on_order_shape_and_dtype() -> None:
    a = ParamSpec((TensorSpec("a", (2,), "float32"), TensorSpec("b", (3,), "float32")))
    variants = [
        ParamSpec((TensorSpec("b", (3,), "float32"), TensorSpec("a", (2,), "float32"))),
        ParamSpec((TensorSpec("a", (2, 1), "float32"), TensorSpec("b", (3,), "float32"))),
        ParamSpec((TensorSpec("a", (2,), "float16"), TensorSpec("b", (3,), "float32"))),
    ]
    assert len({a.digest(), *(v.digest() for v in variants)}) == 4


def test_from_arrays_strips_torch_prefix() -> None:
    class FakeTensor:
        shape = (2, 3)
        dtype = "torch.bfloat16"

    assert ParamSpec.from_arrays({"w": FakeTensor()}).tensors[0].dtype == "bfloat16"


SPEC = ParamSpec(
    (TensorSpec("encoder.lora_A", (2, 3), "float32"), TensorSpec("encoder.lora_B", (3,), "float32"))
)
GOOD = {"encoder.lora_A": np.zeros((2, 3), np.float32), "encoder.lora_B": np.ones(3, np.float32)}


def test_flatten_missing_tensor_named() -> None:
    with pytest.raises(InvalidParameter, match=r"missing \['encoder\.lora_B'\], unexpected \[\]"):
        SPEC.flatten({"encoder.lora_A": GOOD["encoder.lora_A"]})


def test_flatten_unexpected_tensor_named() -> None:
    with pytest.raises(InvalidParameter, match=r"missing \[\], unexpected \['decoder\.bias'\]"):
        SPEC.flatten({**GOOD, "decoder.bias": np.zeros(1)})


def test_flatten_wrong_shape_named() -> None:
    with pytest.raises(
        InvalidParameter,
        match=r"tensor 'encoder\.lora_A' has shape \(3, 2\); the spec expects \(2, 3\)",
    ):
        SPEC.flatten({**GOOD, "encoder.lora_A": np.zeros((3, 2))})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_flatten_non_finite_named(bad: float) -> None:
    b = GOOD["encoder.lora_B"].copy()
    b[1] = bad
    with pytest.raises(InvalidParameter, match=r"non-finite values .* in tensor\(s\) \['encoder\.lora_B'\]"):
        SPEC.flatten({**GOOD, "encoder.lora_B": b})


def test_flatten_float32_overflow_named() -> None:
    """A finite float64 beyond float32 range becomes inf in the vector: the tensor is named."""
    a = np.zeros((2, 3))
    a[0, 0] = 1e39
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(InvalidParameter, match=r"in tensor\(s\) \['encoder\.lora_A'\]"):
            SPEC.flatten({**GOOD, "encoder.lora_A": a})


@pytest.mark.parametrize(
    "vector",
    [np.zeros(8), np.zeros(10), np.zeros((9, 1)), np.zeros(())],
    ids=["short", "long", "2-D", "scalar"],
)
def test_unflatten_wrong_shape(vector: np.ndarray) -> None:
    with pytest.raises(InvalidParameter, match=r"vector has shape .*; the spec expects \(9,\)"):
        SPEC.unflatten(vector)


def test_duplicate_names_named() -> None:
    with pytest.raises(InvalidParameter, match=r"tensor names must be unique; repeated: \['w'\]"):
        ParamSpec((TensorSpec("w", (1,), "float32"), TensorSpec("w", (2,), "float32")))


@pytest.mark.parametrize("dtype", ["int8", "float8", "torch.float32", ""])
def test_bad_dtype_named(dtype: str) -> None:
    with pytest.raises(InvalidParameter, match=rf"tensor 'emb' has dtype {dtype}; expected one of"):
        ParamSpec((TensorSpec("emb", (1,), dtype),))


def test_negative_dimension_named() -> None:
    with pytest.raises(InvalidParameter, match=r"tensor 'emb' has a negative dimension \(2, -1\)"):
        ParamSpec((TensorSpec("emb", (2, -1), "float32"),))


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"name": "a"}',
        '[{"name": "a", "shape": [1]}]',
        '[{"name": "a", "shape": "x", "dtype": "float32"}]',
        '[{"name": "a", "shape": [1], "dtype": "int8"}]',
    ],
)
def test_from_json_malformed(text: str) -> None:
    with pytest.raises(InvalidParameter, match="ParamSpec JSON is malformed"):
        ParamSpec.from_json(text)


# --- clipping ---------------------------------------------------------------------------------

vectors = arrays(np.float32, st.integers(0, 300), elements=st.floats(-1e6, 1e6, width=32))


@settings(max_examples=300, deadline=None)
@given(x=vectors, bound=st.floats(1e-3, 1e3))
def test_clip_l2_norm_within_bound(x: np.ndarray, bound: float) -> None:
    before = x.copy()
    y, factor = clip_l2(x, bound)
    assert y.dtype == np.float32
    assert y.shape == x.shape
    norm = float(np.linalg.norm(y.astype(np.float64)))
    assert norm <= bound
    np.testing.assert_array_equal(x, before)  # input untouched
    original = float(np.linalg.norm(x.astype(np.float64)))
    if original <= bound:
        assert factor == 1.0
        np.testing.assert_array_equal(y, x)
    else:
        assert 0 < factor < 1
        # Scaling, not truncation: the norm lands within float32 rounding of the bound.
        assert norm == pytest.approx(bound, rel=1e-5)


def test_clip_l2_regression_float32_rounding_above_bound() -> None:
    """Ten ones clipped to norm 3 used to come out at 3.00000007 (float32 rounding)."""
    y, _ = clip_l2(np.ones(10, dtype=np.float32), 3.0)
    assert float(np.linalg.norm(y.astype(np.float64))) <= 3.0


@settings(max_examples=150, deadline=None)
@given(x=vectors, bound=st.floats(1e-3, 1e3))
def test_clip_linf_within_bound(x: np.ndarray, bound: float) -> None:
    y = clip_linf(x, bound)
    assert y.dtype == np.float32
    assert np.all(np.abs(y.astype(np.float64)) <= bound)
    inside = np.abs(x.astype(np.float64)) <= float(np.nextafter(np.float32(bound), np.float32(0)))
    np.testing.assert_array_equal(y[inside], x[inside])


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_clip_bounds_checked(bad: float) -> None:
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(InvalidParameter, match=r"max_norm must be a positive finite number, found"):
        clip_l2(x, bad)
    with pytest.raises(InvalidParameter, match=r"bound must be a positive finite number, found"):
        clip_linf(x, bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_clip_l2_rejects_non_finite_update(bad: float) -> None:
    with pytest.raises(InvalidParameter, match="update contains nan or inf"):
        clip_l2(np.array([1.0, bad], dtype=np.float32), 1.0)
