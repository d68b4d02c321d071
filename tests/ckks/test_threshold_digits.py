"""The digit embedding of threshold CKKS: exact sums under any noise within the floor, the
layout across chunks, and what happens past the bounds (positive controls: the same decoding
with the noise or the digits one step past their bounds goes wrong)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.ckks.threshold import Federation, RingContext, chunks_for, plan
from secagg.ckks.threshold.digits import _pairwise
from secagg.ckks.threshold.rings import add_mod
from secagg.errors import InvalidParameter

PARTIES, T, CLIP = 4, 3, 2.0
LENGTH = 3 * 8192 * 5 + 77  # three or more chunks of K digits, the last one partial
SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def ring() -> RingContext:
    r = RingContext(plan(parties=PARTIES, threshold=T, clip=CLIP, params_count=LENGTH,
                         attempts=2))
    assert r.params.embedding == "digits" and r.params.digits >= 2
    return r


def _quantised(ring: RingContext, x: np.ndarray) -> np.ndarray:
    return np.rint(np.ldexp(x, ring.params.scale_bits))


def _noise(ring: RingContext, values: np.ndarray) -> np.ndarray:
    """Signed integers (chunks, N) as NTT residues (chunks, primes, N)."""
    chunks = values.shape[0]
    big = np.asarray(values, dtype=object)
    coeffs = np.empty((chunks, ring.primes, ring.n), dtype=np.uint64)
    for j, q in enumerate(ring.moduli):
        coeffs[:, j, :] = (big % int(q)).astype(np.uint64)  # Python's % is already in [0, q)
    return _pairwise(ring.to_ntt, coeffs)


def _sum(ring: RingContext, encoded: list[np.ndarray]) -> np.ndarray:
    acc = encoded[0]
    for e in encoded[1:]:
        acc = add_mod(acc, e, ring.moduli)
    return acc


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), uploads=st.integers(1, PARTIES),
       edge=st.sampled_from(["uniform", "clip", "-clip", "mixed"]))
def test_any_noise_within_the_floor_decodes_to_the_exact_sum(ring, seed, uploads, edge) -> None:
    rng = np.random.default_rng(seed)
    length = int(rng.integers(1, LENGTH + 1))
    xs = [rng.uniform(-CLIP, CLIP, length) for _ in range(uploads)]
    if edge == "clip":
        xs = [np.full(length, CLIP) for _ in range(uploads)]
    elif edge == "-clip":
        xs = [np.full(length, -CLIP) for _ in range(uploads)]
    elif edge == "mixed":
        xs = [rng.choice([-CLIP, CLIP, 0.0], length) for _ in range(uploads)]
    codec = ring.codec
    encoded = [codec.encode(x) for x in xs]
    assert encoded[0].shape[0] == chunks_for(ring, length)
    # the worst noise the floor is sized for, either sign, on every coefficient
    bound = ring.params.decryption_noise_bound
    noise = rng.choice(np.array([-bound, bound, 0], dtype=object),
                       size=(encoded[0].shape[0], ring.n))
    total = add_mod(_sum(ring, encoded), _noise(ring, noise), ring.moduli)
    out = codec.decode(total, length)
    exact = sum(_quantised(ring, x) for x in xs) / 2.0**ring.params.scale_bits
    assert np.array_equal(out, exact)
    assert np.abs(out - sum(xs)).max() <= uploads * 2.0 ** -(ring.params.scale_bits + 1)


def test_noise_past_the_floor_breaks_the_sum(ring) -> None:
    """Positive control for the floor: noise of 2^(b-1) (one past the bound's reach) shifts the
    lowest digit, so the bound on the smudging is what keeps the sums exact."""
    codec = ring.codec
    x = np.full(ring.n, 0.5)
    enc = codec.encode(x)
    over = np.full((enc.shape[0], ring.n), 1 << (ring.params.base_bits - 1), dtype=object)
    out = codec.decode(add_mod(enc, _noise(ring, over), ring.moduli), ring.n)
    assert not np.array_equal(out, x)


def test_a_digit_past_its_width_is_refused_or_wrong(ring) -> None:
    """Positive control for the digit width: more uploads than the parameters allow at the clip
    carry a digit past 2^(w-1); the sum is then wrong (and usually refused)."""
    codec = ring.codec
    too_many = 2 ** (ring.params.digit_bits - 1) // int(np.ceil(CLIP * 2.0**codec.f)) + 1
    enc = codec.encode(np.full(ring.n * codec.k, CLIP))
    acc = enc
    for _ in range(too_many - 1):
        acc = add_mod(acc, enc, ring.moduli)
    try:
        out = codec.decode(acc, ring.n * codec.k)
    except InvalidParameter:
        return
    assert not np.allclose(out, too_many * CLIP)


def test_garbage_is_refused_not_decoded(ring) -> None:
    """An aggregate that is not an honest sum (uniform residues) holds more than its digits."""
    rng = np.random.default_rng(3)
    junk = np.stack([rng.integers(0, int(q), ring.n, dtype=np.uint64) for q in ring.moduli])
    with pytest.raises(InvalidParameter, match="more than its digits"):
        ring.codec.decode(junk[None], ring.n)
    out = ring.codec.decode(junk[None], ring.n, strict=False)  # an attacker's read: garbage
    assert out.shape == (ring.n,)


def test_values_outside_the_clip_are_refused(ring) -> None:
    with pytest.raises(InvalidParameter, match="clip range"):
        ring.codec.encode(np.array([CLIP * 1.0001]))
    with pytest.raises(InvalidParameter, match="clip range"):
        ring.codec.encode(np.array([np.nan]))


def test_federation_round_is_exact_across_chunks(ring) -> None:
    """Through the protocol: encryption, the server's sum, smudged partial decryptions of 3 of 4
    parties, the combine. Several chunks, the last partial; the release is the exact quantised sum."""
    fed = Federation(ring, list(range(PARTIES)), T)
    rng = np.random.default_rng(9)
    xs = {i: rng.uniform(-CLIP, CLIP, LENGTH) for i in range(PARTIES)}
    out = fed.run_round(1, xs, decryptors=[0, 1, 3])
    assert fed.chunks(LENGTH) >= 3 and LENGTH % ring.params.reals_per_ciphertext
    exact = sum(_quantised(ring, x) for x in xs.values()) / 2.0**ring.params.scale_bits
    assert np.array_equal(out, exact)


def test_digit_embedding_is_what_brings_the_upload_below_2_5x() -> None:
    """The issue's round (10 x 1M, t = 6): the digit embedding is at most 2.5x float32; the
    real-valued embedding with the same smudging argument is not."""
    common = dict(parties=10, threshold=6, clip=8.0, params_count=1_000_001,
                  rel_error=1e-6 * 10 / 8, attempts=2)
    digits = plan(**common)  # type: ignore[arg-type]
    coefficients = plan(**common, embedding="coefficients")  # type: ignore[arg-type]
    assert digits.bytes_per_param() / 4 <= 2.5 < coefficients.bytes_per_param() / 4
    assert digits.statistical_distance_log2 <= -40
