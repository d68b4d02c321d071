"""Attacks on threshold CKKS, each with its positive control.

The second half attacks the decryption stage itself (the reviewer's R5): the server chooses
which uploader sets get decrypted -- one small sum (attack A), or two sums of one round shown to
different honest decryptors (attack B) -- and forges statements. Each is refused by the policy
(:mod:`secagg.ckks.threshold.policy`) and succeeds with the targeted check switched off.

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
    DecryptionPolicy,
    Federation,
    RingContext,
    aggregate,
    chunk_seed,
    combine,
    decryption_policy,
    plan,
)
from secagg.ckks.threshold.rings import add_mod, sub_mod
from secagg.ckks.threshold.wire import (
    aggregate_digest,
    decode_aggregate,
    decode_upload,
    encode_aggregate,
    encode_statement,
    header_chunks,
)
from secagg.errors import AlreadyUsed, InvalidParameter, NotEnoughParticipants, ProtocolAbort
from secagg.identity import Identity

N_PARTIES, T = 10, 6
IDS = list(range(N_PARTIES))
VICTIM = 9
LENGTH = 8192  # one chunk


def _policy():
    """The attack world's policy: t - 1 = 5 of 10 parties may collude (quorum 8), and a decrypted
    sum must hold at least two honest uploads (min_uploaders = 5 + 2)."""
    return decryption_policy(N_PARTIES, T, corrupt=T - 1, min_uploaders=T + 1)


@pytest.fixture(scope="module")
def world():
    ring = RingContext(plan(parties=N_PARTIES, threshold=T, clip=1.0, params_count=LENGTH))
    fed = Federation(ring, IDS, T, policy=_policy())
    parties = fed.parties
    rng = np.random.default_rng(7)
    xs = {i: rng.uniform(-1, 1, LENGTH) for i in IDS}
    round_id = 1
    seed = parties[0].round_seed(round_id)
    blobs = fed.upload(round_id, xs)
    uploads = {i: list(_up(fed, round_id, b)) for i, b in blobs.items()}
    summed = aggregate(ring, uploads)
    agg = fed.server_sum(round_id, blobs)
    statements = fed.statements(round_id, agg, blobs, IDS)
    # the decrypting set: the t-1 colluders plus one honest party (the adversary's best case)
    decryptors = [0, 1, 2, 3, 4, 5]
    partials = {j: parties[j].partial_decrypt(agg, statements, decryptors, round_id=round_id)
                for j in decryptors}
    released = combine(ring, summed, partials, decryptors=decryptors, threshold=T, length=LENGTH)
    return ring, parties, xs, seed, uploads, summed, partials, released


def _up(fed, round_id, blob):
    return decode_upload(blob, fed.ring, roster=fed.roster, config_digest=fed.digest,
                         round_id=round_id, chunks=1, sender=None).residues


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
    return _read(ring, ring.decrypt(dec, ring.ciphertext(np.stack([c0, a]))))


def _read(ring, residues):
    """The reals of one chunk's decryption, as an attacker reads them: the digits of whatever
    the coefficients hold (no check that they are an honest sum)."""
    if ring.params.embedding == "digits":
        return ring.codec.decode(residues[None], LENGTH, strict=False)
    return ring.decode_reals(residues)


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
    # exact: the encryption noise is rounded away, only the quantisation of x is left
    assert np.abs(guess - xs[VICTIM]).max() <= 2.0 ** -(world[0].params.scale_bits + 1)


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
    guess = _read(ring, attempt)
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
    guess = _read(ring, attempt)
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


# -- the decryption stage: which sums get decrypted (R5) -------------------------------------------

COLLUDERS = [0, 1, 2, 3, 4]  # t - 1, the policy's corrupt count
HONEST = [5, 6, 7, 8, 9]


@pytest.fixture
def arena():
    """A fresh federation per test (statements and budgets are per party and per round), with
    every party's honest upload of round 1 in the server's hands."""
    ring = RingContext(plan(parties=N_PARTIES, threshold=T, clip=1.0, params_count=LENGTH,
                            attempts=4))
    fed = Federation(ring, IDS, T, policy=_policy())
    rng = np.random.default_rng(11)
    xs = {i: rng.uniform(-1, 1, LENGTH) for i in IDS}
    return fed, xs, fed.upload(1, xs)


def _colluder_statement(fed, c, agg):
    """A colluder signs whatever the server wants (its own code, no once-per-round rule)."""
    first, chunks = header_chunks(agg)
    users = decode_aggregate(agg, fed.ring, config_digest=fed.digest, round_id=1, chunks=chunks,
                             first_chunk=first).uploaders
    return encode_statement(fed.ring, identity=fed.identities[c], config_digest=fed.digest,
                            round_id=1, sender=c, uploaders=users, chunks=chunks,
                            digest_of_aggregate=aggregate_digest(agg), first_chunk=first)


def _release(fed, agg, honest_partials, group):
    """The server's combine: the honest partials it got plus the colluders' own (bare
    computation, no checks), applied to the sum of the uploads the aggregate names."""
    first, chunks = header_chunks(agg)
    decoded = decode_aggregate(agg, fed.ring, config_digest=fed.digest, round_id=1,
                               chunks=chunks, first_chunk=first)
    seed = fed.parties[0].round_seed(1)
    partials = dict(honest_partials)
    for c in group:
        if c in COLLUDERS:
            partials[c] = fed.parties[c]._partial(seed, first, chunks, decoded.uploaders, group)
    return combine(fed.ring, list(decoded.residues), partials, decryptors=group, threshold=T,
                   length=LENGTH)


def _split_attack(fed, xs, uploads):
    """Attack B: U1 = everyone to honest 5, 6, 7; U2 = everyone but the victim to honest 8, 9
    (the split that gives U1 the most signers); honest 7 and honest 8 are asked to decrypt."""
    u2 = {i: b for i, b in uploads.items() if i != VICTIM}
    agg1, agg2 = fed.server_sum(1, uploads), fed.server_sum(1, u2)
    st1 = {c: _colluder_statement(fed, c, agg1) for c in COLLUDERS}
    st2 = {c: _colluder_statement(fed, c, agg2) for c in COLLUDERS}
    st1.update(fed.statements(1, agg1, uploads, [5, 6, 7]))
    st2.update(fed.statements(1, agg2, u2, [8, 9]))
    g1, g2 = [*COLLUDERS, 7], [*COLLUDERS, 8]
    p1 = {7: fed.parties[7].partial_decrypt(agg1, st1, g1, round_id=1)}
    p2 = {8: fed.parties[8].partial_decrypt(agg2, st2, g2, round_id=1)}
    diff = _release(fed, agg1, p1, g1) - _release(fed, agg2, p2, g2)
    return float(np.max(np.abs(diff - xs[VICTIM])))


def test_attack_b_two_sums_of_one_round_is_refused(arena) -> None:
    fed, xs, uploads = arena
    assert fed.policy.quorum == 8  # max(t, floor((10 + 5) / 2) + 1)
    # no split of the 5 honest parties gives both statements 8 signers with the 5 colluders
    assert all(len(COLLUDERS) + k < fed.policy.quorum
               or len(COLLUDERS) + (len(HONEST) - k) < fed.policy.quorum
               for k in range(len(HONEST) + 1))
    with pytest.raises(NotEnoughParticipants, match="7 participant.*threshold is 8"):
        _split_attack(fed, xs, uploads)
    # and an honest party that signed U1 refuses to sign U2 for the same round
    u2 = {i: b for i, b in uploads.items() if i != VICTIM}
    with pytest.raises(AlreadyUsed, match="one per round"):
        fed.parties[7].sign_statement(fed.server_sum(1, u2), u2, round_id=1)


def test_attack_b_positive_control_with_a_quorum_of_t(arena, monkeypatch) -> None:
    """Insecure: the naive rule "t signatures over the statement" (quorum = t = 6). Five
    colluders plus one honest signer reach it for each of two statements; the difference of the
    two releases is the victim's update."""
    fed, xs, uploads = arena
    monkeypatch.setattr(DecryptionPolicy, "quorum", property(lambda self: self.threshold))
    assert _split_attack(fed, xs, uploads) < 1e-3


def test_attack_a_one_small_sum_is_refused(arena) -> None:
    """Attack A: U = {victim} + the t - 1 colluders (|U| = t = 6 < min_uploaders = 7). Every
    honest party refuses to sign it, so none decrypts it."""
    fed, _xs, uploads = arena
    small = {i: uploads[i] for i in [*COLLUDERS, VICTIM]}
    agg = fed.server_sum(1, small)
    for h in HONEST:
        with pytest.raises(NotEnoughParticipants, match="6 participant.*threshold is 7"):
            fed.parties[h].sign_statement(agg, small, round_id=1)
    statements = {c: _colluder_statement(fed, c, agg) for c in COLLUDERS}
    with pytest.raises(ProtocolAbort, match="has not signed"):
        fed.parties[5].partial_decrypt(agg, statements, [*COLLUDERS, 5], round_id=1)
    # the policy cannot be set that low: min_uploaders >= corrupt + 2
    with pytest.raises(InvalidParameter, match="at least two honest uploads"):
        decryption_policy(N_PARTIES, T, corrupt=T - 1, min_uploaders=T)


def test_attack_a_positive_control_with_min_uploaders_t(arena) -> None:
    """Insecure: the old minimum |U| >= t. The honest parties sign, one decrypts with the
    colluders, and the release minus the colluders' own updates is the victim's."""
    fed, xs, uploads = arena
    object.__setattr__(fed.policy, "min_uploaders", T)  # bypasses the policy's validation
    small = {i: uploads[i] for i in [*COLLUDERS, VICTIM]}
    agg = fed.server_sum(1, small)
    statements = fed.statements(1, agg, small, HONEST)
    statements.update({c: _colluder_statement(fed, c, agg) for c in COLLUDERS})
    group = [*COLLUDERS, 5]
    out = _release(fed, agg, {5: fed.parties[5].partial_decrypt(agg, statements, group,
                                                                 round_id=1)}, group)
    assert np.max(np.abs(out - sum(xs[c] for c in COLLUDERS) - xs[VICTIM])) < 1e-3


def test_forged_and_foreign_statements_do_not_count(arena) -> None:
    """Quorum 8: the colluders and honest 5 and 6 signed (7 valid); the server makes up the
    eighth. Not counted: an outsider's signature, random bytes, party 7's genuine statement of
    another aggregate, a statement under another setup's digest, a signer not in the setup."""
    fed, _xs, uploads = arena
    agg = fed.server_sum(1, uploads)
    first, chunks = header_chunks(agg)
    statements = {c: _colluder_statement(fed, c, agg) for c in COLLUDERS}
    statements.update(fed.statements(1, agg, uploads, [5, 6]))

    def refused(extra: dict[int, bytes]) -> None:
        with pytest.raises(NotEnoughParticipants, match="7 participant.*threshold is 8"):
            fed.parties[5].partial_decrypt(agg, {**statements, **extra}, [*COLLUDERS, 5],
                                           round_id=1)

    def signed_as(identity, digest=fed.digest, named=None, sender=7):
        named = aggregate_digest(agg) if named is None else named
        return encode_statement(fed.ring, identity=identity, config_digest=digest, round_id=1,
                                sender=sender, uploaders=IDS, chunks=chunks,
                                digest_of_aggregate=named, first_chunk=first)

    refused({7: signed_as(Identity.generate("outsider"))})
    refused({7: bytes(len(statements[5]))})
    refused({7: signed_as(fed.identities[7], named=aggregate_digest(b"another aggregate"))})
    refused({7: signed_as(fed.identities[7], digest=bytes(32))})
    refused({7: statements[6]})  # party 6's statement filed under 7 (names sender 6)
    refused({42: signed_as(fed.identities[7], sender=42)})
    # positive control: party 7's genuine statement makes eight
    statements.update(fed.statements(1, agg, uploads, [7]))
    fed.parties[5].partial_decrypt(agg, statements, [*COLLUDERS, 5], round_id=1)


def test_a_party_signs_only_the_verified_sum_of_signed_uploads(arena) -> None:
    fed, _xs, uploads = arena
    agg = fed.server_sum(1, uploads)
    _first, chunks = header_chunks(agg)
    decoded = decode_aggregate(agg, fed.ring, config_digest=fed.digest, round_id=1, chunks=chunks)
    # an aggregate that claims everyone but holds only the victim's upload
    fake = encode_aggregate(fed.ring, config_digest=fed.digest, round_id=1, uploaders=IDS,
                            residues=_up(fed, 1, uploads[VICTIM]))
    with pytest.raises(ProtocolAbort, match="not the sum"):
        fed.parties[5].sign_statement(fake, uploads, round_id=1)
    # uploads shown that are not the aggregate's uploaders
    with pytest.raises(ProtocolAbort, match="uploads shown"):
        fed.parties[5].sign_statement(agg, {i: uploads[i] for i in IDS[:-1]}, round_id=1)
    # an upload re-attributed to another sender is refused by its signature
    swapped = {**uploads, 6: uploads[5]}
    with pytest.raises(Exception, match="names sender 5, expected 6"):
        fed.parties[5].sign_statement(agg, swapped, round_id=1)
    # nothing above was signed: the genuine statement still can be; then a decryption asked for
    # another aggregate than the one signed is refused
    fed.parties[5].sign_statement(agg, uploads, round_id=1)
    other = encode_aggregate(fed.ring, config_digest=fed.digest, round_id=1, uploaders=IDS,
                             residues=decoded.residues)  # same content, but re-encoded equal
    assert other == agg
    with pytest.raises(ProtocolAbort, match="not the one this party signed"):
        fed.parties[5].partial_decrypt(fake, {}, [*COLLUDERS, 5], round_id=1)
