"""The compact wire format (issue 14, item 3, dealer mode): coefficient encoding, residues packed
at the prime's width, a prime chosen from the round's precision; strict decoding; round trips."""

from __future__ import annotations

import dataclasses
import math
import secrets

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.ckks import Check, CheckFailed, CKKSParams, CKKSRoundConfig, MessageRefused, Preset
from secagg.ckks.client import session_for
from secagg.ckks.config import PACKED_PRESET
from secagg.ckks.messages import Aggregate, Upload
from secagg.ckks.packing import (
    FORMAT_VERSION,
    MAX_BITS,
    PackedKind,
    pack_bits,
    pack_ciphertext,
    packed_size,
    unpack_bits,
    unpack_ciphertext,
    unpack_ciphertexts,
)
from secagg.ckks.presets import HE_STANDARD_128_MAX_LOGQ, noise_bound
from secagg.ckks.sketch import projections_for, sealed_sketch_bytes, soundness_bits
from secagg.errors import InvalidParameter, RejectedMessage
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.seal_codec import CoefficientEmbedding, SealSession, seal_primes
from tests.ckks.conftest import Parts, keyed_round, make_config

_Q31 = seal_primes(8192, (31,))[0]


def _packed(n: int = 3, weight_bound: float = 4.0, target_error: float = 1e-6) -> CKKSParams:
    return CKKSParams.for_round(clients=n, weight_bound=weight_bound, target_error=target_error)


# ---- bit packing -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, MAX_BITS), groups=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_pack_bits_round_trips_at_exactly_the_width(bits: int, groups: int, seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, 2**bits, 8 * groups, dtype=np.uint64)
    data = pack_bits(values, bits)
    assert len(data) == 8 * groups * bits // 8
    assert np.array_equal(unpack_bits(data, bits, values.size), values)


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(1, MAX_BITS), data=st.data())
def test_pack_bits_matches_a_plain_bit_stream(bits: int, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=8, max_size=8))
    as_int = sum(v << (i * bits) for i, v in enumerate(values))  # value i at bits i*b..
    assert pack_bits(np.array(values, dtype=np.uint64), bits) == as_int.to_bytes(bits, "little")


def test_pack_bits_refuses_what_does_not_fit() -> None:
    with pytest.raises(InvalidParameter, match="does not fit in 5 bits"):
        pack_bits(np.array([32] + [0] * 7, dtype=np.uint64), 5)
    with pytest.raises(InvalidParameter, match="multiple of 8"):
        pack_bits(np.zeros(7, dtype=np.uint64), 5)
    with pytest.raises(InvalidParameter, match=r"\[1, 60\]"):
        pack_bits(np.zeros(8, dtype=np.uint64), MAX_BITS + 1)
    with pytest.raises(InvalidParameter, match="are 5 bytes, found 4"):
        unpack_bits(b"\0" * 4, 5, 8)


# ---- packed ciphertexts ------------------------------------------------------------------------

_N = 1024
_MODULI = (seal_primes(_N, (27,))[0],)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(list(PackedKind)),
       bits=st.lists(st.integers(20, 50), min_size=1, max_size=3))
def test_packed_ciphertexts_round_trip(seed: int, kind: PackedKind, bits: list[int]) -> None:
    moduli = seal_primes(_N, tuple(bits))
    rng = np.random.default_rng(seed)
    polys = 1 if kind is PackedKind.SEEDED else 2
    residues = np.stack([np.stack([rng.integers(0, q, _N, dtype=np.uint64) for q in moduli])
                         for _ in range(polys)])
    residues = residues[0] if kind is PackedKind.SEEDED else residues
    residues[..., 0, 0] = moduli[0] - 1  # the largest residue is fine
    seed_bytes = rng.bytes(64) if kind is PackedKind.SEEDED else b""
    blob = pack_ciphertext(kind, residues, moduli, seed_bytes)
    assert len(blob) == packed_size(kind, _N, moduli)
    back, got_seed = unpack_ciphertext(blob, kind, _N, moduli, what="t")
    assert np.array_equal(back, residues) and got_seed == seed_bytes


def _one_blob(seed: int = 0) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    c0 = rng.integers(0, _MODULI[0], (1, _N), dtype=np.uint64)
    return pack_ciphertext(PackedKind.SEEDED, c0, _MODULI, rng.bytes(64)), c0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: bytes([2]) + b[1:], f"format version 2, expected {FORMAT_VERSION}"),
        (lambda b: bytes([0]) + b[1:], f"format version 0, expected {FORMAT_VERSION}"),
        (lambda b: b[:1] + bytes([2]) + b[2:], "a full ciphertext, expected seeded"),
        (lambda b: b[:1] + bytes([9]) + b[2:], "unknown kind 9 ciphertext, expected seeded"),
        (lambda b: b[:2] + bytes([11]) + b[3:], r"packed for N=2\^11.*expects N=1024"),
        (lambda b: b[:3] + bytes([2]) + b[4:], r"2 prime\(s\).*1 prime\(s\) of \[27\] bits"),
        (lambda b: b[:4] + bytes([28]) + b[5:], r"of \[28\] bits; the round expects .*\[27\] bits"),
        (lambda b: b[:-1], "expected exactly"),
        (lambda b: b + b"\0", "expected exactly"),
        (lambda b: b[:3], "shorter than the 5-byte packed ciphertext header"),
        (lambda b: b"", "shorter than"),
    ],
)
def test_packed_ciphertext_decoding_is_strict(mutate: object, message: str) -> None:
    blob, _ = _one_blob()
    with pytest.raises(RejectedMessage, match=message) as info:
        unpack_ciphertext(mutate(blob), PackedKind.SEEDED, _N, _MODULI, what="chunk 3", sender=7)  # type: ignore[operator]
    assert info.value.sender == 7 and "chunk 3" in info.value.reason


@settings(max_examples=20, deadline=None)
@given(index=st.integers(0, _N - 1), excess=st.integers(0, 2**27 - _MODULI[0] - 1))
def test_residues_at_or_above_the_prime_are_refused(index: int, excess: int) -> None:
    rng = np.random.default_rng(index)
    c0 = rng.integers(0, _MODULI[0], (1, _N), dtype=np.uint64)
    c0[0, index] = _MODULI[0] + excess  # fits the 27-bit width, not reduced
    header_and_body = bytes([FORMAT_VERSION, PackedKind.SEEDED, 10, 1, 27]) + pack_bits(c0[0], 27)
    with pytest.raises(RejectedMessage, match=f"residue {index} of polynomial 0 is .* not below prime 0"):
        unpack_ciphertext(header_and_body + bytes(64), PackedKind.SEEDED, _N, _MODULI, what="t")


def test_pack_refuses_unreduced_residues_and_bad_seeds() -> None:
    c0 = np.zeros((1, _N), dtype=np.uint64)
    c0[0, 5] = _MODULI[0]
    with pytest.raises(InvalidParameter, match="not reduced modulo prime 0"):
        pack_ciphertext(PackedKind.SEEDED, c0, _MODULI, bytes(64))
    with pytest.raises(InvalidParameter, match="64-byte seed"):
        pack_ciphertext(PackedKind.SEEDED, np.zeros((1, _N), dtype=np.uint64), _MODULI, b"")
    with pytest.raises(InvalidParameter, match="64-byte seed"):
        pack_ciphertext(PackedKind.FULL, np.zeros((2, 1, _N), dtype=np.uint64), _MODULI, bytes(64))


# ---- SEAL: coefficient encoding and the seeded layout -------------------------------------------


def _session(bits: int = 31, scale_bits: int = 23) -> SealSession:
    return SealSession(poly_modulus_degree=8192, coeff_modulus_bits=(bits,), level_primes=1,
                       scale_bits=scale_bits)


def test_the_embedding_matches_seal_slot_order() -> None:
    session = _session()
    session.embedding.self_test(session.encoder, session.parms_id)
    emb = CoefficientEmbedding(8192)
    c = np.random.default_rng(3).normal(size=8192)
    assert np.allclose(emb.coefficients(emb.slots(c)), c, atol=1e-12)


def test_seeded_ciphertexts_split_and_rebuild_to_the_same_seal_object() -> None:
    session = _session()
    key = session.keys_from_seed(SecretBytes(secrets.token_bytes(64), label="test"))
    values = np.random.default_rng(1).uniform(-8, 8, 8192)
    blob = key.encrypt_coefficients(values)
    c0, seed = session.split_seeded(blob, what="t")
    assert c0.shape == (1, 8192) and int(c0.max()) < _Q31 and len(seed) == 64
    rebuilt = session.load(session.join_seeded(c0, seed), what="rebuilt")
    original = session.load(blob, what="original")
    assert np.array_equal(session.coefficients(rebuilt), session.coefficients(original))
    # coefficient encoding: per-coefficient noise is SEAL's sigma 3.2, not 3.2 * sqrt(N / 2)
    err = (key.decrypt_coefficients(rebuilt) - values) * session.scale
    assert 2.5 < float(np.std(err)) < 4.5 and float(np.max(np.abs(err))) < 20.5


def test_split_refuses_a_ciphertext_of_other_parameters() -> None:
    other = _session(scale_bits=22)
    key = other.keys_from_seed(SecretBytes(secrets.token_bytes(64), label="test"))
    blob = key.encrypt_coefficients(np.zeros(8192))
    from secagg.hazmat.seal_codec import CiphertextRejected

    with pytest.raises(CiphertextRejected, match="not a seeded ciphertext of the round's parameters"):
        _session().split_seeded(blob, what="t")


# ---- parameters: the formula -------------------------------------------------------------------


def test_for_round_gives_the_documented_bench_parameters() -> None:
    p = CKKSParams.for_round(clients=10, weight_bound=8.0, target_error=1e-6)
    assert (p.coeff_modulus_bits, p.scale_bits, p.release_quantum_bits) == ((30,), 22, 14)
    p = CKKSParams.for_round(clients=10, weight_bound=8.0, target_error=5e-7)
    assert (p.coeff_modulus_bits, p.scale_bits, p.release_quantum_bits) == ((31,), 23, 15)
    assert p.level_moduli == (_Q31,) and p.packed and p.max_abs_sum >= 80


@settings(max_examples=200, deadline=None)
@given(clients=st.integers(2, 2000), weight=st.floats(0.01, 1000), value=st.floats(0.01, 100),
       target=st.floats(1e-9, 1e-2))
def test_for_round_meets_its_promise_and_the_128_bit_bound(clients: int, weight: float, value: float,
                                                           target: float) -> None:
    # every round of this range fits one prime: a refusal here is a failure, not a pass
    p = CKKSParams.for_round(clients=clients, weight_bound=weight, value_bound=value,
                             target_error=target)
    span = clients * max(weight * max(value, 1.0), 1.0)
    (q,) = p.level_moduli
    assert p.level_bits <= HE_STANDARD_128_MAX_LOGQ[p.poly_modulus_degree]
    assert span <= p.max_abs_sum and span * 2.0**p.scale_bits + clients * 21.5 < q / 2  # no wrap
    noise = noise_bound(clients) / 2.0**p.scale_bits
    assert p.release_quantum / 2 + noise < p.release_quantum <= target * span  # the promise
    assert 3 * noise <= p.release_quantum  # the grid hides the noise
    if p.level_bits > 21:  # the smallest prime that holds the target
        smaller = seal_primes(p.poly_modulus_degree, (p.level_bits - 1,))[0]
        min_scale = max(1, math.ceil(math.log2(3 * noise_bound(clients))
                                     - math.floor(math.log2(target * span))))
        assert span * 2.0**min_scale > smaller / 2 * (1 - 2**-8) or clients * 21.5 > smaller / 2**9


def test_for_round_refuses_a_target_no_prime_can_hold() -> None:
    with pytest.raises(InvalidParameter, match="relax target_error"):
        CKKSParams.for_round(clients=2000, weight_bound=1000.0, value_bound=100.0,
                             target_error=1e-15)


def test_packed_params_refuse_rounds_they_were_not_built_for() -> None:
    p = _packed(n=3)
    with pytest.raises(InvalidParameter, match="more noise than the release grid"):
        p.check_round(6)
    with pytest.raises(InvalidParameter, match="contributor count of 5000"):
        p.check_round(5000)
    with pytest.raises(InvalidParameter, match="encoding must be one of"):
        dataclasses.replace(p, encoding="bits")
    with pytest.raises(InvalidParameter, match="one prime"):
        dataclasses.replace(p, coeff_modulus_bits=(31, 31))
    with pytest.raises(InvalidParameter, match="clients must be >= 2"):
        CKKSParams.for_round(clients=1)
    with pytest.raises(InvalidParameter, match="relax target_error"):
        CKKSParams.for_round(clients=10, target_error=1e-15)


def test_old_presets_are_unchanged() -> None:
    assert Preset.COMPACT.params.encoding == "slots" and not Preset.COMPACT.params.packed
    assert Preset.COMPACT.params.max_abs_sum == 2.0**18


def test_packed_configs_publish_and_reload() -> None:
    config = make_config(_packed(n=3, weight_bound=4.0), n=3, weight_bound=4.0)
    published = config.to_dict()
    assert published["preset"] == PACKED_PRESET and published["target_error"] == 1e-6
    assert CKKSRoundConfig.from_dict(published) == config
    assert config.digest() != dataclasses.replace(
        config, params=_packed(n=3, weight_bound=4.0, target_error=2e-6)).digest()


# ---- whole rounds ------------------------------------------------------------------------------


def _packed_round(n: int = 3, size: int = 20000) -> Parts:
    return keyed_round(make_config(_packed(n=n, weight_bound=4.0), size=size, n=n, weight_bound=4.0),
                       weights={1: 4.0, 2: 1.0, 3: 2.5})


def test_a_packed_round_is_below_float32_and_within_its_promise() -> None:
    parts = _packed_round(size=40000)
    uploads = parts.uploads()
    layout_reals = -(-(parts.config.update_size + 2) // 8192) * 8192
    for blob in uploads.values():
        # 31 bits per real of the chunks, plus seeds and framing
        assert len(blob) < 4 * layout_reals * 31 / 32 + 2000
    aggregates = parts.aggregate(uploads)
    weights = {1: 4.0, 2: 1.0, 3: 2.5}
    expected = sum(weights[i] * parts.updates[i].astype(np.float64) for i in parts.updates)
    for i, agg in aggregates.items():
        assert parts.clients[i].handle_bytes(agg) is None
        release = parts.clients[i].result
        assert np.max(np.abs(release.weighted_sum - expected)) <= parts.config.params.release_quantum
        assert release.total_weight == 7.5 and release.contributors == (1, 2, 3)


def _resign(parts: Parts, upload: Upload, chunks: tuple[bytes, ...]) -> bytes:
    forged = dataclasses.replace(upload, chunks=chunks, signature=b"")
    signature = parts.federation.identities[upload.client_id].signing_key.sign(forged.signed_bytes())
    return dataclasses.replace(forged, signature=signature).to_bytes()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "expected exactly"),
        (lambda b: bytes([7]) + b[1:], "format version 7, expected 1"),
        (lambda b: b[:5] + b"\xff" * 4 + b[9:], "not below prime 0"),  # a residue of all ones
    ],
)
def test_the_server_refuses_a_bad_packed_chunk_and_names_it(mutate: object, message: str) -> None:
    parts = _packed_round(size=9000)
    uploads = parts.uploads()
    upload = Upload.from_bytes(uploads[2])
    chunks = (upload.chunks[0], mutate(upload.chunks[1]))  # type: ignore[operator]
    with pytest.raises(MessageRefused, match=f"ciphertext 1: .*{message}") as info:
        parts.server.receive(_resign(parts, upload, chunks))
    assert info.value.sender == 2 and info.value.check is Check.CIPHERTEXT
    good = {i: b for i, b in uploads.items() if i != 2}
    for i, agg in parts.aggregate(good).items():
        assert parts.clients[i].handle_bytes(agg) is None
        assert parts.clients[i].result.contributors == (1, 3)


def test_a_seal_serialisation_is_not_a_packed_chunk() -> None:
    parts = _packed_round(size=9000)
    uploads = parts.uploads()
    upload = Upload.from_bytes(uploads[3])
    session = session_for(parts.config)
    key = parts.clients[3]._require_key()
    seal_blob = key.seal.encrypt_coefficients(np.zeros(8192))  # SEAL's own (zstd) serialisation
    same_length = seal_blob[: len(upload.chunks[0])].ljust(len(upload.chunks[0]), b"\0")
    assert session.split_seeded(seal_blob, what="t")[0].shape == (1, 8192)
    with pytest.raises(MessageRefused, match="ciphertext 0: packed ciphertext format version 94, "
                       "expected 1"):
        parts.server.receive(_resign(parts, upload, (same_length, *upload.chunks[1:])))


def test_packed_rounds_keep_the_sketch_at_2_to_the_minus_118() -> None:
    assert projections_for((_Q31,)) == 4 and soundness_bits((_Q31,), 4) >= 118
    assert projections_for(Preset.COMPACT.params.level_moduli) == 2  # the presets are unchanged
    parts = _packed_round(size=9000)
    uploads = parts.uploads()
    moduli = parts.config.params.level_moduli
    want = sealed_sketch_bytes(1, projections_for(moduli))
    assert all(len(Upload.from_bytes(b).sealed_sketch) == want for b in uploads.values())
    honest = Aggregate.from_bytes(parts.aggregate(uploads)[1])
    forged = dataclasses.replace(honest, chunks=(honest.chunks[1], honest.chunks[1])).to_bytes()
    with pytest.raises(CheckFailed) as info:
        parts.clients[1].handle_bytes(forged)
    assert info.value.check is Check.SKETCH


def test_the_aggregate_is_packed_too_and_decoded_strictly() -> None:
    parts = _packed_round(size=9000)
    moduli = parts.config.params.level_moduli
    aggregate = Aggregate.from_bytes(parts.aggregate(parts.uploads())[2])
    assert all(len(c) == packed_size(PackedKind.FULL, 8192, moduli) for c in aggregate.chunks)
    unreduced = aggregate.chunks[0][:5] + b"\xff" * 4 + aggregate.chunks[0][9:]
    bad = dataclasses.replace(aggregate, chunks=(unreduced, aggregate.chunks[1])).to_bytes()
    with pytest.raises(CheckFailed, match="aggregate ciphertext 0: residue 0 .* not below prime") as info:
        parts.clients[2].handle_bytes(bad)
    assert info.value.check is Check.CIPHERTEXT


@settings(max_examples=20, deadline=None)
@given(chunks=st.integers(1, 6), data=st.data())
def test_a_whole_upload_unpacks_at_once_and_names_the_bad_chunk(chunks: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(chunks)
    c0s = rng.integers(0, _MODULI[0], (chunks, 1, _N), dtype=np.uint64)
    seeds = [rng.bytes(64) for _ in range(chunks)]
    blobs = [pack_ciphertext(PackedKind.SEEDED, c0, _MODULI, seed)
             for c0, seed in zip(c0s, seeds, strict=True)]
    got, got_seeds = unpack_ciphertexts(blobs, PackedKind.SEEDED, _N, _MODULI, what=lambda i: f"chunk {i}")
    assert np.array_equal(got, c0s) and got_seeds == seeds
    bad = data.draw(st.integers(0, chunks - 1))
    index = data.draw(st.integers(0, _N - 1))
    c0s[bad, 0, index] = _MODULI[0]
    header = bytes([FORMAT_VERSION, PackedKind.SEEDED, 10, 1, 27])
    blobs[bad] = header + pack_bits(c0s[bad, 0], 27) + seeds[bad]
    with pytest.raises(RejectedMessage, match=f"chunk {bad}: residue {index} of polynomial 0"):
        unpack_ciphertexts(blobs, PackedKind.SEEDED, _N, _MODULI, what=lambda i: f"chunk {i}")
    blobs[bad] = blobs[bad][:-1]
    with pytest.raises(RejectedMessage, match=f"chunk {bad}: .* expected exactly"):
        unpack_ciphertexts(blobs, PackedKind.SEEDED, _N, _MODULI, what=lambda i: f"chunk {i}")


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 4), weight_bound=st.sampled_from([1.0, 3.0, 100.0]),
       target=st.sampled_from([1e-3, 1e-5, 1e-7]), seed=st.integers(0, 1000))
def test_packed_rounds_keep_the_promise_of_their_parameters(n: int, weight_bound: float, target: float,
                                                            seed: int) -> None:
    params = CKKSParams.for_round(clients=n, weight_bound=weight_bound, target_error=target)
    config = make_config(params, size=3000, n=n, weight_bound=weight_bound)
    weights = {i: float(np.random.default_rng(seed + i).uniform(0.01, weight_bound))
               for i in config.client_ids}
    parts = keyed_round(config, seed=seed, weights=weights)
    aggregates = parts.aggregate(parts.uploads())
    reader = next(iter(aggregates))
    assert parts.clients[reader].handle_bytes(aggregates[reader]) is None
    release = parts.clients[reader].result
    exact = sum(weights[i] * parts.updates[i].astype(np.float64) for i in config.client_ids)
    span = n * max(weight_bound, 1.0)
    assert np.max(np.abs(release.weighted_sum - exact)) < params.release_quantum <= target * span
    assert abs(release.total_weight - sum(weights.values())) < params.release_quantum
