"""The verifiable aggregate: exact sketches, the coefficient reader, and the check's refusals."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.ckks import Check, CheckFailed, Preset
from secagg.ckks.client import session_for
from secagg.ckks.messages import Upload
from secagg.ckks.sketch import (
    PROJECTIONS,
    SKETCH_SEAL_PURPOSE,
    Sketcher,
    seal_sketch,
    sealed_sketch_bytes,
    soundness_bits,
)
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.prg import expand_mask
from tests.ckks.conftest import Parts, keyed_round, make_config

PRIMES = [q for p in Preset for q in session_for(make_config(p.params)).level_moduli]


def _reference(key: SecretBytes, moduli: tuple[int, ...], n: int,
               chunks: list[np.ndarray]) -> tuple[int, ...]:
    """<R, ct> mod q with Python integers, R read straight off the keystream (the documented order)."""
    levels, blk = len(moduli), min(n, 8192)
    words = expand_mask(key, len(chunks) * 2 * levels * n * PROJECTIONS * 2)
    words = words.reshape(len(chunks), 2, levels, n // blk, PROJECTIONS, 2, blk).astype(object)
    out = []
    for p in range(PROJECTIONS):
        for level, q in enumerate(moduli):
            bits = q.bit_length() - 1
            low = min(30, bits)
            total = 0
            for c, chunk in enumerate(chunks):
                for poly in range(2):
                    lo = words[c, poly, level, :, p, 0].reshape(-1) & ((1 << low) - 1)
                    hi = words[c, poly, level, :, p, 1].reshape(-1) & ((1 << (bits - low)) - 1)
                    total += int(np.dot(lo + hi * (1 << 30), chunk[poly, level].astype(object)))
            out.append(total % q)
    return tuple(out)


@settings(max_examples=20, deadline=None)
@given(levels=st.integers(1, 2), log_n=st.integers(0, 6), count=st.integers(1, 3), seed=st.integers(0, 2**32),
       extreme=st.booleans())
def test_sketch_is_exact(levels: int, log_n: int, count: int, seed: int, extreme: bool) -> None:
    moduli = tuple(PRIMES[:levels])
    n = 2**log_n
    rng = np.random.default_rng(seed)
    chunks = []
    for _ in range(count):
        if extreme:  # every coefficient at its largest value: the overflow corner
            chunk = np.stack([np.stack([np.full(n, q - 1, dtype=np.uint64) for q in moduli])] * 2)
        else:
            chunk = np.stack([np.stack([rng.integers(0, q, n, dtype=np.uint64) for q in moduli])
                              for _ in range(2)])
        chunks.append(chunk)
    key = SecretBytes(rng.bytes(32))
    sketcher = Sketcher(key, moduli, n)
    for chunk in chunks:
        sketcher.add(chunk)
    assert sketcher.value() == _reference(key, moduli, n, chunks)


def test_sketch_is_exact_at_full_ring_size() -> None:
    moduli, n = (PRIMES[0],), 32768  # blocks of 8192 inside one polynomial
    rng = np.random.default_rng(3)
    chunk = np.stack([np.full((1, n), moduli[0] - 1, dtype=np.uint64), rng.integers(0, moduli[0], (1, n),
                                                                                     dtype=np.uint64)])
    key = SecretBytes(os.urandom(32))
    sketcher = Sketcher(key, moduli, n)
    sketcher.add(chunk)
    assert sketcher.value() == _reference(key, moduli, n, [chunk])


def test_sketch_is_linear() -> None:
    q = PRIMES[0]
    rng = np.random.default_rng(0)
    a = rng.integers(0, q, (2, 1, 1024), dtype=np.uint64)
    b = rng.integers(0, q, (2, 1, 1024), dtype=np.uint64)
    total = ((a.astype(object) + b.astype(object)) % q).astype(np.uint64)
    key = SecretBytes(os.urandom(32))
    values = []
    for x in (a, b, total):
        s = Sketcher(key, (q,), 1024)
        s.add(x)
        values.append(s.value())
    assert all((va + vb - vt) % q == 0 for va, vb, vt in zip(*values, strict=True))


def test_sketcher_refuses_misuse() -> None:
    key = SecretBytes(os.urandom(32))
    s = Sketcher(key, (PRIMES[0],), 16)
    with pytest.raises(Exception, match="shape"):
        s.add(np.zeros((2, 1, 8), dtype=np.uint64))
    s.value()
    with pytest.raises(Exception, match="already read"):
        s.add(np.zeros((2, 1, 16), dtype=np.uint64))
    assert "redacted" in repr(s)


def test_soundness_figure() -> None:
    for preset in Preset:
        moduli = session_for(make_config(preset.params)).level_moduli
        assert soundness_bits(moduli) == 118  # 2 projections x (60 - 1) bits


@pytest.mark.parametrize("preset", list(Preset))
def test_coefficient_reader_matches_seal(preset: Preset) -> None:
    parts = keyed_round(make_config(preset.params, size=100, n=2))
    upload = Upload.from_bytes(parts.uploads((1,))[1])
    session = parts.server._seal
    ct = session.load(upload.chunks[0], what="x")
    coeffs = session.coefficients(ct)
    assert coeffs.shape == (2, preset.params.level_primes, 8192) and not coeffs.flags.writeable
    flat = coeffs.reshape(-1)
    for i in np.random.default_rng(0).integers(0, flat.size, 64):
        assert int(flat[i]) == ct[int(i)]
    for level, q in enumerate(session.level_moduli):
        assert int(coeffs[:, level].max()) < q


# ---- the check, inside a round --------------------------------------------------------------


def _aggregate_with(parts: Parts, uploads: dict[int, bytes]) -> dict[int, bytes]:
    return parts.aggregate(uploads)


def test_a_contributor_whose_sealed_sketch_does_not_open_is_named() -> None:
    parts = keyed_round(make_config(size=2000, n=3))
    uploads = parts.uploads()
    up = Upload.from_bytes(uploads[3])
    junk = dataclasses.replace(up, sealed_sketch=os.urandom(len(up.sealed_sketch)), signature=b"")
    signed = dataclasses.replace(junk, signature=parts.federation.identities[3].signing_key.sign(
        junk.signed_bytes()))
    uploads[3] = signed.to_bytes()  # the server cannot tell: it does not hold the sketch key
    aggregates = _aggregate_with(parts, uploads)
    with pytest.raises(CheckFailed, match="sealed sketch of client 3 does not open") as info:
        parts.clients[1].handle_bytes(aggregates[1])
    assert info.value.check == Check.SKETCH_SEAL


def test_a_contributor_lying_about_its_sketch_makes_honest_clients_refuse() -> None:
    """The documented residual: a member's wrong sketch is indistinguishable from a forged sum."""
    parts = keyed_round(make_config(size=2000, n=3))
    uploads = parts.uploads()
    up = Upload.from_bytes(uploads[3])
    config = parts.config
    key = parts.clients[3]._require_key().derive(config, SKETCH_SEAL_PURPOSE)
    lie = seal_sketch(key, config, 3, up.chunks_digest(), [1] * PROJECTIONS)
    assert len(lie) == sealed_sketch_bytes(1)
    forged = dataclasses.replace(up, sealed_sketch=lie, signature=b"")
    signed = dataclasses.replace(forged, signature=parts.federation.identities[3].signing_key.sign(
        forged.signed_bytes()))
    uploads[3] = signed.to_bytes()
    aggregates = _aggregate_with(parts, uploads)
    with pytest.raises(CheckFailed) as info:
        parts.clients[2].handle_bytes(aggregates[2])
    assert info.value.check == Check.SKETCH


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, 2 * 8192 - 1), delta=st.integers(1, 2**59))
def test_any_coefficient_tweak_of_the_aggregate_is_refused(position: int, delta: int) -> None:
    from secagg.ckks.adversary import run_attack

    report = run_attack("forge-aggregate", clients=3, params=500, variant="tweak", position=position,
                        delta=delta)
    assert not report.attack_succeeded and report.detected_by == "sketch-check"
    assert report.honest_completed and report.exact is None
    assert set(report.refusals.values()) == {"sketch-check"}


def test_a_sum_missing_one_contributor_is_refused() -> None:
    """All three receipts, but only uploads 1 and 2 summed: caught before the count is decrypted."""
    from secagg.ckks.messages import Aggregate

    parts = keyed_round(make_config(size=2000, n=3))
    uploads = parts.uploads()
    aggregates = parts.aggregate(uploads)
    seal = parts.server._seal
    sums = [seal.load(b, what="x") for b in Upload.from_bytes(uploads[1]).chunks]
    for acc, blob in zip(sums, Upload.from_bytes(uploads[2]).chunks, strict=True):
        seal.add_inplace(acc, seal.load(blob, what="x"))
    honest = Aggregate.from_bytes(aggregates[3])
    short = dataclasses.replace(honest, chunks=tuple(seal.dump(ct) for ct in sums))
    with pytest.raises(CheckFailed, match="not the sum of the 3 announced uploads") as info:
        parts.clients[3].handle_bytes(short.to_bytes())
    assert info.value.check == Check.SKETCH
    parts.clients[1].handle_bytes(aggregates[1])  # the honest aggregate still passes elsewhere
    assert parts.clients[1].result.contributors == (1, 2, 3)
