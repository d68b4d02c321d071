"""Threshold CKKS core: a 10-party, t = 6 round with 4 decryptors absent, the clear error below t,
the one-shot rules, the sealed and signed share transport, the parameter check, and the
SEAL-backed ring helpers."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tenseal.sealapi as seal

from secagg.ckks.presets import HE_STANDARD_128_MAX_LOGQ
from secagg.ckks.threshold import (
    Federation,
    RingContext,
    SealedBundle,
    ThresholdParams,
    ThresholdParty,
    aggregate,
    assemble_public_key,
    chunks_for,
    combine,
    decryption_policy,
    open_bundle,
    plan,
    round_seed,
    seal_bundle,
    setup_digest,
)
from secagg.ckks.threshold.rings import _Zstd
from secagg.ckks.threshold.sharing import ShareBundle, assign_terms, deal, sum_assigned, terms
from secagg.ckks.threshold.smudging import smudging_coefficients
from secagg.dp.csprng import secure_words64
from secagg.errors import (
    AlreadyUsed,
    AuthenticationFailed,
    InvalidParameter,
    NotEnoughParticipants,
    ProtocolAbort,
)
from secagg.hazmat.agreement import X25519KeyPair
from secagg.identity import Identity, Roster

N_PARTIES, T = 10, 6
IDS = list(range(N_PARTIES))
LENGTH = 2 * 8192 + 100  # more than a chunk of the real-valued embeddings
CLIP = 1.0


@pytest.fixture(scope="module")
def ring() -> RingContext:
    return RingContext(plan(parties=N_PARTIES, threshold=T, clip=CLIP, params_count=LENGTH,
                            attempts=4))


@pytest.fixture(scope="module")
def parties(ring: RingContext) -> dict[int, ThresholdParty]:
    ps = {i: ThresholdParty(ring, i, IDS, T) for i in IDS}
    for p in ps.values():
        for j, bundle in p.deal().items():
            ps[j].receive(bundle)
    return ps


def _updates(seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-CLIP, CLIP, LENGTH) for i in IDS}


@pytest.fixture(scope="module")
def fed(ring: RingContext) -> Federation:
    """The same federation bound to a roster and the default policy (corrupt = 1 of 10: quorum
    6, at least 7 uploaders)."""
    return Federation(ring, IDS, T)


def test_round_decrypts_with_four_parties_absent(fed) -> None:
    xs = _updates(1)
    uploads = fed.upload(1, xs)
    agg = fed.server_sum(1, uploads)
    statements = fed.statements(1, agg, uploads, IDS)
    decryptors = [0, 2, 3, 5, 7, 9]  # 1, 4, 6, 8 absent at decryption
    out = fed.release(1, agg, fed.partials(1, agg, statements, decryptors), LENGTH)
    err = np.abs(out - sum(xs.values())).max()
    assert err <= 1e-6 * CLIP
    # one upload chunk is one polynomial at the data level, nothing else
    first = fed.parties[0].encrypt_round(xs[0], 99)
    assert len(first) == chunks_for(fed.ring, LENGTH)
    assert all(c.shape == (fed.ring.primes, fed.ring.n) for c in first)


def test_below_threshold_is_a_clear_error(fed) -> None:
    ring = fed.ring
    xs = _updates(2)
    uploads = fed.upload(2, xs)
    agg = fed.server_sum(2, uploads)
    five = [0, 1, 2, 3, 4]
    statements = fed.statements(2, agg, uploads, [*five, 5, 6])
    with pytest.raises(NotEnoughParticipants, match="threshold is 6"):
        fed.parties[0].partial_decrypt(agg, statements, five, round_id=2)
    six = [*five, 5]
    partials = fed.partials(2, agg, statements, six)
    summed = aggregate(ring, {i: _residues_of(fed, 2, b) for i, b in uploads.items()})
    decoded = {j: _residues_of_partial(fed, 2, partials[j], six, j) for j in five}  # 5 vanished
    with pytest.raises(NotEnoughParticipants, match=r"missing \[5\]"):
        combine(ring, summed, decoded, decryptors=six, threshold=T, length=LENGTH)
    with pytest.raises(NotEnoughParticipants, match="threshold is 6"):
        combine(ring, summed, decoded, decryptors=five, threshold=T, length=LENGTH)
    # retry with another decrypting set (5 vanished): allowed, same statement, and correct
    retry = [*five, 6]
    out = fed.release(2, agg, fed.partials(2, agg, statements, retry), LENGTH)
    assert np.abs(out - sum(xs.values())).max() <= 1e-6 * CLIP


def _residues_of(fed: Federation, round_id: int, blob: bytes) -> np.ndarray:
    from secagg.ckks.threshold.wire import decode_upload, header_chunks

    first, chunks = header_chunks(blob)
    return decode_upload(blob, fed.ring, roster=fed.roster, config_digest=fed.digest,
                         round_id=round_id, chunks=chunks, first_chunk=first).residues


def _residues_of_partial(fed: Federation, round_id: int, blob: bytes, group, j) -> np.ndarray:
    from secagg.ckks.threshold.wire import decode_partial, header_chunks

    _first, chunks = header_chunks(blob)
    return decode_partial(blob, fed.ring, roster=fed.roster, config_digest=fed.digest,
                          round_id=round_id, chunks=chunks, uploaders=IDS, decryptors=group,
                          sender=j).residues


def test_one_shot_rules(ring, parties, fed) -> None:
    seed = round_seed(b"test-setup", 3)
    x = np.zeros(10)
    parties[0].encrypt(x, seed)
    with pytest.raises(AlreadyUsed, match="under this round seed"):
        parties[0].encrypt(x, seed)
    with pytest.raises(InvalidParameter, match="clip"):
        parties[1].encrypt(np.full(10, 2.0), round_seed(b"test-setup", 4))
    with pytest.raises(AlreadyUsed):
        parties[0].deal()
    # an unbound party (no identity, roster, policy) never signs nor decrypts
    with pytest.raises(InvalidParameter, match="not bound"):
        parties[1].partial_decrypt(b"", {}, IDS, round_id=3)
    # one statement per round: the same one again is fine, another uploader set is refused
    xs = {i: np.zeros(10) for i in IDS}
    uploads = fed.upload(3, xs)
    agg = fed.server_sum(3, uploads)
    first = fed.parties[1].sign_statement(agg, uploads, round_id=3)
    assert fed.parties[1].sign_statement(agg, uploads, round_id=3) == first
    fewer = {i: b for i, b in uploads.items() if i != 9}
    with pytest.raises(AlreadyUsed, match="one per round"):
        fed.parties[1].sign_statement(fed.server_sum(3, fewer), fewer, round_id=3)
    # a party that signed nothing for the round decrypts nothing
    group = [0, 1, 2, 3, 4, 5]
    statements = fed.statements(3, agg, uploads, group)
    with pytest.raises(ProtocolAbort, match="has not signed"):
        fed.parties[9].partial_decrypt(agg, statements, [*group[:5], 9], round_id=3)
    with pytest.raises(InvalidParameter, match="not in the decrypting set"):
        fed.parties[1].partial_decrypt(agg, statements, [0, 2, 3, 4, 5, 6], round_id=3)
    # the smudging budget: 12 chunks per party (3 chunks x 4 attempts), retries included
    with pytest.raises(AlreadyUsed, match="smudging budget"):
        for _ in range(13):
            fed.parties[1].partial_decrypt(agg, statements, group, round_id=3)


def test_collective_public_key_decrypts_to_small_noise(ring, parties) -> None:
    """The collective key (sum of contributions -a*s_i + e_i) satisfies b + a*s = sum e_i."""
    pk_seed = os.urandom(32)
    contributions = {i: parties[i].public_key_contribution(pk_seed) for i in IDS}
    b, a = assemble_public_key(ring, contributions, pk_seed)
    s = np.zeros_like(b)
    from secagg.ckks.threshold.rings import add_mod
    for p in parties.values():
        s = add_mod(s, p._secret, ring.moduli)
    dec = seal.Decryptor(ring.context, ring.secret_key(s))
    noise = ring.read_ct(_from_ntt(ring, ring.decrypt(dec, ring.ciphertext(np.stack([b, a])))))
    q = int(ring.moduli[0])
    centred = np.where(noise[0, 0] > q // 2, noise[0, 0].astype(float) - q, noise[0, 0])
    assert 0 < np.abs(centred).max() <= 21 * N_PARTIES


def _from_ntt(ring, residues):
    ct = ring.ciphertext(np.stack([residues, residues]))
    ring.evaluator.transform_from_ntt_inplace(ct)
    return ct


def test_share_transport_is_sealed_and_signed(ring) -> None:
    """Bundles travel sealed to the recipient's box key and signed by the dealer's pinned
    roster identity; a forged signature, another session, another recipient all fail."""
    identities = [Identity.generate(f"enterprise-{i}") for i in IDS]
    roster = Roster.of("threshold-test", identities)
    dealer_id, me = 3, 7
    box = X25519KeyPair.generate()
    session = setup_digest(roster.digest(), tuple(IDS), T, "params",
                           policy=decryption_policy(len(IDS), T))
    bundles = deal(ring, ring.uniform(os.urandom(64)), dealer_id, IDS, T)
    env = seal_bundle(bundles[me], identity=identities[dealer_id].signing_key,
                      recipient_box=box.public_bytes, session=session)
    opened = open_bundle(env, me=me, box=box, roster=roster, session=session, ring=ring)
    assert opened.to_bytes() == bundles[me].to_bytes()
    assert "redacted" in repr(opened)
    forged = seal_bundle(bundles[me], identity=identities[me].signing_key,
                         recipient_box=box.public_bytes, session=session)
    with pytest.raises(AuthenticationFailed):
        open_bundle(forged, me=me, box=box, roster=roster, session=session, ring=ring)
    with pytest.raises(AuthenticationFailed):
        open_bundle(env, me=me, box=box, roster=roster, session=b"other", ring=ring)
    with pytest.raises(AuthenticationFailed):
        open_bundle(env, me=8, box=box, roster=roster, session=session, ring=ring)
    swapped = SealedBundle(env.dealer, env.recipient, X25519KeyPair.generate().public_bytes,
                           env.sealed, env.signature)
    with pytest.raises(AuthenticationFailed):
        open_bundle(swapped, me=me, box=box, roster=roster, session=session, ring=ring)


def test_replicated_terms_reconstruct_and_cover(ring) -> None:
    all_terms = terms(tuple(IDS), T)
    assert len(all_terms) == 252 and all(len(t) == N_PARTIES - T + 1 for t in all_terms)
    secret = ring.uniform(os.urandom(64))
    bundles = deal(ring, secret, 0, IDS, T)
    group = [1, 3, 4, 6, 8, 9]
    assignment = assign_terms(all_terms, group, T)
    from secagg.ckks.threshold.rings import add_mod
    total = np.zeros_like(secret)
    for j in group:
        total = add_mod(total, sum_assigned(ring, {0: bundles[j]}, assignment[j]), ring.moduli)
    assert (total == secret).all()
    # a bundle carries seeds for exactly the terms holding its recipient
    raw = ShareBundle.from_bytes(bundles[1].to_bytes(), ring)
    assert set(raw.seeds) == {i for i, t in enumerate(all_terms[:-1]) if 1 in t}


def test_params_meet_the_128_bit_bound_with_smudging() -> None:
    """The bench's round (10 x 1M reals plus the weight, clip 8, the mean within 1e-6 of the
    clip range, one retry): the digit embedding's numbers of :mod:`secagg.ckks.threshold.params`."""
    p = plan(parties=10, threshold=6, clip=8.0, params_count=1_000_001, rel_error=1e-6 * 10 / 8,
             attempts=2)
    assert sum(p.coeff_modulus_bits) <= HE_STANDARD_128_MAX_LOGQ[p.poly_modulus_degree]
    assert p.statistical_distance_log2 <= -40
    assert (p.digits, p.max_decryptions, p.smudging_bits) == (4, 62, 66)
    assert (p.base_bits, p.digit_bits, p.scale_bits) == (71, 27, 19)
    assert p.coeff_modulus_bits == (60, 60, 60, 38)
    # the floor holds every party's smudge plus the noise; a digit holds 10 sums of +-8 * 2^19
    assert 2 ** (p.base_bits - 1) > 10 * 2**66 + 210
    assert 2 ** (p.digit_bits - 1) > 10 * 8 * 2**19
    assert p.error_bound <= 1e-6 * 10  # the sum's error; the mean's is at most 1e-6
    assert p.table()["ratio_vs_float32_packed"] == pytest.approx(180 / 4 / 32)  # 1.41x
    with pytest.raises(InvalidParameter, match="smudging_bits"):
        ThresholdParams(8192, p.coeff_modulus_bits, p.scale_bits, p.smudging_bits - 1, 10, 6,
                        8.0, 62, rel_error=p.rel_error, embedding="digits", digits=4,
                        digit_bits=27, base_bits=71)
    with pytest.raises(InvalidParameter, match="noise floor"):
        ThresholdParams(8192, p.coeff_modulus_bits, p.scale_bits, p.smudging_bits, 10, 6,
                        8.0, 62, rel_error=p.rel_error, embedding="digits", digits=4,
                        digit_bits=27, base_bits=70)
    with pytest.raises(InvalidParameter, match="cannot hold the sum"):
        ThresholdParams(8192, p.coeff_modulus_bits, p.scale_bits, p.smudging_bits, 10, 6,
                        8.0, 62, rel_error=p.rel_error, embedding="digits", digits=4,
                        digit_bits=26, base_bits=71)
    with pytest.raises(InvalidParameter, match="cannot hold 5 digits"):
        ThresholdParams(8192, p.coeff_modulus_bits, p.scale_bits, p.smudging_bits, 10, 6,
                        8.0, 62, rel_error=p.rel_error, embedding="digits", digits=5,
                        digit_bits=27, base_bits=71)
    with pytest.raises(InvalidParameter, match="128-bit bound"):
        ThresholdParams(8192, (60, 60, 60, 60), p.scale_bits, p.smudging_bits, 10, 6, 8.0, 62)
    with pytest.raises(InvalidParameter, match="exceed"):
        plan(parties=10, threshold=6, clip=1.0, params_count=10_000, poly_modulus_degree=4096,
             embedding="coefficients")


def test_real_valued_embedding_params_as_before() -> None:
    """The coefficient embedding, kept for comparison: the smudging sits inside every real."""
    p = plan(parties=10, threshold=6, clip=1.0, params_count=1_000_000,
             embedding="coefficients")
    assert p.max_decryptions == 123 and p.smudging_bits == 67
    assert 7.5 * p.error_std <= 1e-6 * p.clip
    assert p.table()["ratio_vs_float32_packed"] == pytest.approx(98 / 32)  # [49, 49 | 60]
    with pytest.raises(InvalidParameter, match="smudging_bits"):
        ThresholdParams(8192, p.coeff_modulus_bits, p.scale_bits, p.smudging_bits - 1, 10, 6,
                        1.0, 123)


def test_smudging_is_uniform_on_its_range(ring) -> None:
    tau = 30
    c = smudging_coefficients(ring, tau, 4)
    q = int(ring.moduli[0])
    v = c[:, 0, :].astype(np.float64)
    v = np.where(v > q / 2, v - q, v) / 2.0**tau
    assert v.min() >= -1 and v.max() < 1
    assert abs(v.mean()) < 0.02 and abs(v.std() - 1 / np.sqrt(3)) < 0.01
    # both primes carry the same integer
    w = c[:, 1, :].astype(np.float64)
    q1 = int(ring.moduli[1])
    assert np.array_equal(np.where(w > q1 / 2, w - q1, w) / 2.0**tau, v)


def test_secure_words64_bits_are_balanced() -> None:
    w = secure_words64(4096)
    assert w.dtype == np.uint64 and w.shape == (4096,)
    bits = np.unpackbits(w.view(np.uint8)).reshape(-1, 64).mean(axis=0)
    assert np.all(np.abs(bits - 0.5) < 0.05)
    assert len(np.unique(w)) == 4096
    assert secure_words64(0).shape == (0,)


def test_uniform_expansion_is_seals_own(ring) -> None:
    """The common a is what SEAL itself expands from a seeded ciphertext's seed."""
    sk = seal.KeyGenerator(ring.context).secret_key()
    enc = seal.Encryptor(ring.context, sk)
    seeded = enc.encrypt_symmetric(ring.encode(np.zeros(ring.slots, complex)))
    seeded.save(ring._path)
    blob = os.pread(ring._fd, os.fstat(ring._fd).st_size, 0)
    body = _Zstd.decompress(blob[16:], 2 * ring.primes * ring.n * 8 + 4096)
    assert body[-65] == 1  # Blake2xb
    full = seal.Ciphertext()
    full.load(ring.context, ring._path)
    assert np.array_equal(ring.read_ct(full)[1], ring.uniform(body[-64:]))
    assert np.array_equal(ring.uniform(b"\x01" * 64), ring.uniform(b"\x01" * 64))
    assert not np.array_equal(ring.uniform(b"\x01" * 64), ring.uniform(b"\x02" * 64))


def test_slot_embedding_round_also_decrypts() -> None:
    """SEAL's plain slot encoding (two reals per complex slot) as the alternative embedding:
    6 bits more modulus for the same error; 4 parties, t = 3, one absent."""
    ids = [0, 1, 2, 3]
    params = plan(parties=4, threshold=3, clip=CLIP, params_count=8192, embedding="slots")
    assert params.level_bits > plan(parties=4, threshold=3, clip=CLIP, params_count=8192,
                                    embedding="coefficients").level_bits
    small = Federation(params, ids, 3)
    rng = np.random.default_rng(5)
    xs = {i: rng.uniform(-CLIP, CLIP, 5000) for i in ids}
    out = small.run_round(1, xs, decryptors=[0, 1, 3])
    assert np.abs(out - sum(xs.values())).max() <= 1e-6 * CLIP


def test_decryption_policy_is_stated_checked_and_bound_into_the_setup(ring) -> None:
    """corrupt (c) from the roster by default (ceil(0.05 * 10) = 1), quorum
    max(t, floor((n + c) / 2) + 1), min_uploaders max(t, c + 2); refused when weaker than the
    roster or past t - 1; a different policy is a different setup digest."""
    default = decryption_policy(N_PARTIES, T)
    assert (default.corrupt, default.quorum, default.min_uploaders) == (1, 6, 6)
    strict = decryption_policy(N_PARTIES, T, corrupt=T - 1, min_uploaders=T + 1)
    assert (strict.quorum, strict.min_honest_uploaders) == (8, 2)
    assert decryption_policy(N_PARTIES, T, corrupt=T - 1).min_uploaders == T + 1
    with pytest.raises(InvalidParameter, match="at most t - 1"):
        decryption_policy(N_PARTIES, T, corrupt=T)
    with pytest.raises(InvalidParameter, match="two honest uploads"):
        decryption_policy(N_PARTIES, T, corrupt=1, min_uploaders=2)
    identities = [Identity.generate(f"enterprise-{i}") for i in IDS]
    roster = Roster.of("policy-test", identities, corrupt_rate=0.25)  # ceil(2.5) = 3 corrupt
    with pytest.raises(InvalidParameter, match="means 3 of 10"):
        ThresholdParty(ring, 0, IDS, T, identity=identities[0], roster=roster, policy=default)
    with pytest.raises(InvalidParameter, match="not party 1's"):
        ThresholdParty(ring, 1, IDS, T, identity=identities[0], roster=roster)
    a = ThresholdParty(ring, 0, IDS, T, identity=identities[0], roster=roster)
    b = ThresholdParty(ring, 0, IDS, T, identity=identities[0], roster=roster,
                       policy=decryption_policy(N_PARTIES, T, corrupt=3, min_uploaders=5))
    assert a.policy is not None and a.policy.corrupt == 3 and a.policy.min_uploaders == 6
    assert a.setup != b.setup and a.round_seed(1) != b.round_seed(1)
