"""Attacks on threshold CKKS, each with its positive control.

The adversary is the server (every byte it relays: the uploads, the aggregate, the partial
decryptions, the sealed share envelopes it cannot open) together with ``t - 1`` parties (their own
secrets and every share bundle dealt to them). Below the threshold its best estimate of one honest
party's update is at chance; with ``t`` parties the very same attack decrypts the upload.
"""

from __future__ import annotations

import numpy as np
import pytest
import tenseal.sealapi as seal

from secagg.ckks.threshold import (
    RingContext,
    ThresholdParty,
    aggregate,
    chunk_seed,
    combine,
    plan,
    round_seed,
)
from secagg.ckks.threshold.rings import add_mod, sub_mod

N_PARTIES, T = 10, 6
IDS = list(range(N_PARTIES))
VICTIM = 9
LENGTH = 8192  # one chunk


@pytest.fixture(scope="module")
def world():
    ring = RingContext(plan(parties=N_PARTIES, threshold=T, clip=1.0, params_count=LENGTH))
    parties = {i: ThresholdParty(ring, i, IDS, T) for i in IDS}
    for p in parties.values():
        for j, bundle in p.deal().items():
            parties[j].receive(bundle)
    rng = np.random.default_rng(7)
    xs = {i: rng.uniform(-1, 1, LENGTH) for i in IDS}
    seed = round_seed(b"attack-setup", 1)
    uploads = {i: parties[i].encrypt(xs[i], seed) for i in IDS}
    summed = aggregate(ring, uploads)
    # the decrypting set: the t-1 colluders plus one honest party (the adversary's best case)
    decryptors = [0, 1, 2, 3, 4, 5]
    partials = {j: parties[j].partial_decrypt(seed, 1, IDS, decryptors) for j in decryptors}
    released = combine(ring, summed, partials, decryptors=decryptors, threshold=T, length=LENGTH)
    return ring, parties, xs, seed, uploads, summed, partials, released


def _victim_key_as_known_to(ring, parties, coalition):
    """Sum of the victim's key terms the coalition holds; (estimate, terms held, terms)."""
    held = {}
    for c in coalition:
        bundle = parties[c]._bundles[VICTIM]
        for idx in bundle.seeds:
            if idx not in held:
                held[idx] = bundle.term(idx, ring)
        if bundle.correction is not None:
            held[bundle.correction_index] = bundle.correction
    est = np.zeros((ring.primes, ring.n), dtype=np.uint64)
    for term in held.values():
        est = add_mod(est, term, ring.moduli)
    return est, len(held), len(parties[c].terms)


def _decrypt(ring, c0, seed, key):
    a = ring.read_ct(ring.common_a(chunk_seed(seed, 0)))[1]
    dec = seal.Decryptor(ring.context, ring.secret_key(key))
    return ring.decode_reals(ring.decrypt(dec, ring.ciphertext(np.stack([c0, a]))))


def _corr(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all() or a.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _key_attack(world, coalition):
    ring, parties, _xs, seed, uploads, *_ = world
    est, held, total = _victim_key_as_known_to(ring, parties, coalition)
    guess = _decrypt(ring, uploads[VICTIM][0], seed, est)
    return guess, held, total


def test_t_minus_1_coalition_cannot_decrypt_an_upload(world) -> None:
    xs = world[2]
    guess, held, total = _key_attack(world, [0, 1, 2, 3, 4])
    assert held == total - 1  # the one term inside the honest set {5..9} is missing
    # at chance: |corr| around 1/sqrt(8192) ~ 0.011
    assert abs(_corr(guess, xs[VICTIM])) < 0.05
    # worse than the trivial estimate 0 (the decoding is uniform garbage modulo q / scale)
    assert np.mean((guess - xs[VICTIM]) ** 2) > 10 * np.mean(xs[VICTIM] ** 2)


def test_positive_control_t_coalition_decrypts_the_upload(world) -> None:
    xs = world[2]
    guess, held, total = _key_attack(world, [0, 1, 2, 3, 4, 5])
    assert held == total
    assert _corr(guess, xs[VICTIM]) > 0.9999
    assert np.abs(guess - xs[VICTIM]).max() < 1e-9  # exact up to the encryption noise


def test_partial_decryptions_do_not_help_below_t(world) -> None:
    """Everything the server saw at decryption, plus the colluders' own secrets: the sum of the
    partial decryptions is a*s_U + smudging; removing what the coalition knows leaves the other
    honest parties' keys on the victim's upload, i.e. garbage."""
    ring, parties, xs, seed, uploads, _summed, partials, released = world
    coalition = [0, 1, 2, 3, 4]
    total = np.zeros((ring.primes, ring.n), dtype=np.uint64)
    for p in partials.values():
        total = add_mod(total, p[0], ring.moduli)  # a*s_U + sum E
    a = ring.read_ct(ring.common_a(chunk_seed(seed, 0)))[1]
    known = np.zeros_like(total)
    for c in coalition:  # a*s_c for the colluders' own secrets, via SEAL
        dec = seal.Decryptor(ring.context, ring.secret_key(parties[c]._secret))
        known = add_mod(known, ring.decrypt(dec, ring.ciphertext(np.stack([np.zeros_like(a), a]))),
                        ring.moduli)
    # c0_victim + a*s_U - a*s_C = m_victim + e + a*(sum of the other honest keys) + smudging
    attempt = sub_mod(add_mod(uploads[VICTIM][0], total, ring.moduli), known, ring.moduli)
    guess = ring.decode_reals(attempt)
    assert abs(_corr(guess, xs[VICTIM])) < 0.05
    # what the release itself gives (the honest sum) is the only signal, and it is legitimate
    honest_sum = released - sum(xs[c] for c in coalition)
    baseline = _corr(honest_sum, xs[VICTIM])
    assert 0.3 < baseline < 0.6  # ~ 1/sqrt(5): five honest updates in the sum


def test_positive_control_partial_decryptions_with_t_colluders(world) -> None:
    """The same partial-decryption attack with t colluders: their keys' terms give every s_i, so
    a*s_U - a*(everyone but the victim) leaves the victim's upload decrypted."""
    ring, parties, xs, seed, uploads, _summed, partials, _released = world
    a = ring.read_ct(ring.common_a(chunk_seed(seed, 0)))[1]
    total = np.zeros((ring.primes, ring.n), dtype=np.uint64)
    for p in partials.values():
        total = add_mod(total, p[0], ring.moduli)
    coalition = [0, 1, 2, 3, 4, 5]
    others = np.zeros_like(total)
    for i in IDS:
        if i == VICTIM:
            continue
        held = {}
        for c in coalition:
            bundle = parties[c]._bundles[i]
            for idx in bundle.seeds:
                if idx not in held:
                    held[idx] = bundle.term(idx, ring)
            if bundle.correction is not None:
                held[bundle.correction_index] = bundle.correction
        assert len(held) == len(parties[0].terms)
        key = np.zeros_like(total)
        for term in held.values():
            key = add_mod(key, term, ring.moduli)
        dec = seal.Decryptor(ring.context, ring.secret_key(key))
        others = add_mod(others, ring.decrypt(dec, ring.ciphertext(np.stack([np.zeros_like(a), a]))),
                         ring.moduli)
    attempt = sub_mod(add_mod(uploads[VICTIM][0], total, ring.moduli), others, ring.moduli)
    guess = ring.decode_reals(attempt)
    assert _corr(guess, xs[VICTIM]) > 0.999
    assert np.abs(guess - xs[VICTIM]).max() < 1e-6  # the smudging of the partials, no more


def test_why_not_shamir_lagrange_partial_decryptions_leak_the_noise() -> None:
    """Design check (the reason :mod:`secagg.ckks.threshold.sharing` is replicated, not Shamir).

    Scalar model of Shamir-shared threshold decryption over Z_q with Lagrange weights applied
    before smudging (as Lattigo's t-out-of-N does), q = 2^61 - 1, known messages (the
    IND-CPA-D setting). A coalition of t - 1 = 5 parties holding its shares, with the server
    choosing the decrypting set, recovers the aggregate's exact noise e from one honest partial
    decryption although every partial decryption carries 2^40 of smudging: the honest weight is a
    rational P/Q with Q = 51200 > 2|e|, so Q * (what is left) mod Q = P*e mod Q."""
    import secrets
    from fractions import Fraction
    from math import prod

    q = 2**61 - 1
    coeffs, n, t = 64, 10, 6
    xs = list(range(1, n + 1))
    coalition, group, honest = [2, 4, 5, 8, 10], [1, 3, 5, 6, 7, 9], 1

    def centred(v: int) -> int:
        v %= q
        return v - q if v > q // 2 else v

    rng = np.random.default_rng(3)
    secrets_ = [rng.integers(-1, 2, coeffs).tolist() for _ in xs]
    polys = [[[s] + [secrets.randbelow(q) for _ in range(t - 1)] for s in sec] for sec in secrets_]
    share = {x: [sum(sum(c * x**k for k, c in enumerate(polys[i][j])) for i in range(n)) % q
                 for j in range(coeffs)] for x in xs}
    a = [secrets.randbelow(q) for _ in range(coeffs)]
    s_total = [sum(sec[j] for sec in secrets_) for j in range(coeffs)]
    noise = rng.integers(-21 * n, 21 * n + 1, coeffs).tolist()
    msg = rng.integers(0, 2**40, coeffs).tolist()  # Delta * sum m_i, known to the adversary
    c0 = [(-a[j] * s_total[j] + noise[j] + msg[j]) % q for j in range(coeffs)]

    def lam(x: int) -> Fraction:
        return prod(Fraction(m, m - x) for m in group if m != x)

    def mod_q(f: Fraction) -> int:
        return f.numerator * pow(f.denominator, -1, q) % q

    partial = {x: [(mod_q(lam(x)) * a[j] * share[x][j] + secrets.randbelow(2**41) - 2**40) % q
                   for j in range(coeffs)] for x in group}
    out = [centred(c0[j] + sum(partial[x][j] for x in group) - msg[j]) for j in range(coeffs)]
    assert max(abs(o - e) for o, e in zip(out, noise, strict=True)) > 2**35  # the release is flooded

    # the attack: the honest share is L0(x_h)*s + sum_c Lc(x_h)*share_c (Lagrange over {0} + C)
    pts = [0, *coalition]

    def basis(p: int, at: int) -> Fraction:
        return prod(Fraction(at - o, p - o) for o in pts if o != p)

    nu = lam(honest) * basis(0, honest)
    assert nu.denominator == 51200
    recovered = []
    for j in range(coeffs):
        known = sum(mod_q(lam(honest) * basis(c, honest)) * a[j] * share[c][j] for c in coalition)
        a_s = msg[j] - c0[j]  # a*s = msg + e - c0; e is what must stay hidden
        left = centred(partial[honest][j] - known - mod_q(nu) * a_s)  # nu*e + E, as an element
        small = centred(nu.denominator * left)  # = P*e + Q*E: a small integer
        e_mod_q = small * pow(nu.numerator, -1, nu.denominator) % nu.denominator
        recovered.append(e_mod_q - nu.denominator if e_mod_q > nu.denominator // 2 else e_mod_q)
    assert recovered == noise  # exact noise, through 2^40 of smudging
