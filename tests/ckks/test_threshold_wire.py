"""Threshold CKKS wire format (issue 14, items 3-4): uploads, the aggregate and partial decryptions
bit-packed at the prime widths, signed by the sender's roster identity and bound to the setup,
the round, the chunks, the sender (and for partials the uploaders and the decrypting set).
Round trips and strict rejections (hypothesis), and a whole round through the bytes."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.ckks.packing import pack_bits
from secagg.ckks.threshold import (
    RingContext,
    ThresholdParty,
    aggregate,
    chunks_for,
    combine,
    decryption_policy,
    default_threshold,
    plan,
    setup_digest,
)
from secagg.ckks.threshold.wire import (
    MAGIC,
    SIGNATURE_BYTES,
    WIRE_VERSION,
    MessageKind,
    aggregate_digest,
    decode_aggregate,
    decode_partial,
    decode_statement,
    decode_upload,
    encode_aggregate,
    encode_partial,
    encode_statement,
    encode_upload,
    message_size,
)
from secagg.errors import ErrorCode, InvalidParameter, RejectedMessage
from secagg.identity import Identity, Roster

IDS = (0, 1, 2, 3)
T = default_threshold(len(IDS))  # 3
LENGTH = 8192 + 50  # two chunks
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def ring() -> RingContext:
    return RingContext(plan(parties=len(IDS), threshold=T, clip=1.0, params_count=LENGTH,
                            attempts=3))


@pytest.fixture(scope="module")
def identities() -> dict[int, Identity]:
    return {i: Identity.generate(f"enterprise-{i}") for i in IDS}


@pytest.fixture(scope="module")
def roster(identities: dict[int, Identity]) -> Roster:
    return Roster.of("threshold-wire", [identities[i] for i in IDS])


@pytest.fixture(scope="module")
def digest(ring: RingContext, roster: Roster) -> bytes:
    return setup_digest(roster.digest(), IDS, T, repr(ring.params),
                        policy=decryption_policy(len(IDS), T))


def _residues(ring: RingContext, chunks: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)  # test data, not secret
    out = np.empty((chunks, ring.primes, ring.n), dtype=np.uint64)
    for level, q in enumerate(ring.moduli):
        out[:, level, :] = rng.integers(0, int(q), size=(chunks, ring.n), dtype=np.uint64)
    out[0, :, 0] = ring.moduli - np.uint64(1)  # the largest residue, on the edge
    out[-1, :, -1] = 0
    return out


def _upload(ring, identities, digest, *, sender=1, round_id=7, chunks=2, first=0, seed=0):
    res = _residues(ring, chunks, seed)
    blob = encode_upload(ring, identity=identities[sender], config_digest=digest,
                         round_id=round_id, sender=sender, residues=res, first_chunk=first)
    return res, blob


# -- round trips -----------------------------------------------------------------------------


@SETTINGS
@given(sender=st.sampled_from(IDS), round_id=st.integers(0, 2**64 - 1),
       chunks=st.integers(1, 3), first=st.integers(0, 2**32 - 4), seed=st.integers(0, 2**32))
def test_upload_round_trips(ring, identities, roster, digest, sender, round_id, chunks, first,
                            seed) -> None:
    res, blob = _upload(ring, identities, digest, sender=sender, round_id=round_id,
                        chunks=chunks, first=first, seed=seed)
    assert len(blob) == message_size(MessageKind.UPLOAD, ring, chunks)
    got = decode_upload(blob, ring, roster=roster, config_digest=digest, round_id=round_id,
                        chunks=chunks, first_chunk=first, sender=sender)
    assert np.array_equal(got.residues, res)
    assert (got.sender, got.round_id, got.first_chunk, got.config_digest) == \
        (sender, round_id, first, digest)
    assert len(got.chunks) == chunks and got.chunks[0].shape == (ring.primes, ring.n)


@SETTINGS
@given(group=st.sets(st.sampled_from(IDS), min_size=T),
       users=st.sets(st.sampled_from(IDS), min_size=1), data=st.data())
def test_partial_and_aggregate_round_trip(ring, identities, roster, digest, group, users,
                                          data) -> None:
    sender = data.draw(st.sampled_from(sorted(group)))
    res = _residues(ring, 2, data.draw(st.integers(0, 2**32)))
    blob = encode_partial(ring, identity=identities[sender], config_digest=digest, round_id=3,
                          sender=sender, uploaders=sorted(users), decryptors=sorted(group),
                          residues=res)
    assert len(blob) == message_size(MessageKind.PARTIAL, ring, 2, uploaders=len(users),
                                     decryptors=len(group))
    got = decode_partial(blob, ring, roster=roster, config_digest=digest, round_id=3, chunks=2,
                         uploaders=users, decryptors=group, sender=sender)
    assert np.array_equal(got.residues, res)
    assert got.uploaders == tuple(sorted(users)) and got.decryptors == tuple(sorted(group))
    agg = encode_aggregate(ring, config_digest=digest, round_id=3, uploaders=sorted(users),
                           residues=list(res))
    back = decode_aggregate(agg, ring, config_digest=digest, round_id=3, chunks=2,
                            uploaders=users)
    assert np.array_equal(back.residues, res) and back.uploaders == tuple(sorted(users))


def test_packed_at_the_prime_widths(ring) -> None:
    """One upload chunk costs sum(b_l) bits per real: the level's bits, not 64 per prime."""
    bits = sum(int(q).bit_length() for q in ring.moduli)
    chunks = chunks_for(ring, LENGTH)
    size = message_size(MessageKind.UPLOAD, ring, chunks)
    assert size - (chunks * ring.n * bits // 8) < 256  # header (widths, ids) + signature only
    assert bits == ring.params.level_bits


# -- strict rejections -----------------------------------------------------------------------


def _decode_up(ring, roster, digest, blob, **kw):
    args = {"config_digest": digest, "round_id": 7, "chunks": 2, "first_chunk": 0}
    args.update(kw)
    return decode_upload(blob, ring, roster=roster, **args)


@SETTINGS
@given(cut=st.integers(0, 10**7), extra=st.binary(min_size=1, max_size=9))
def test_wrong_length_is_rejected_with_the_expected_size(ring, identities, roster, digest, cut,
                                                         extra) -> None:
    _, blob = _upload(ring, identities, digest)
    short = blob[: cut % len(blob)]
    with pytest.raises(RejectedMessage):
        _decode_up(ring, roster, digest, short)
    with pytest.raises(RejectedMessage, match=f"expected exactly {len(blob)}"):
        _decode_up(ring, roster, digest, blob + extra)


@SETTINGS
@given(position=st.integers(0, 10**7), flip=st.integers(1, 255))
def test_any_changed_byte_is_rejected(ring, identities, roster, digest, position, flip) -> None:
    """Header, residues or signature: a changed byte is refused (by a header check, the
    length, the signature or the residue bound), never accepted as another message."""
    _, blob = _upload(ring, identities, digest)
    i = position % len(blob)
    bad = blob[:i] + bytes([blob[i] ^ flip]) + blob[i + 1:]
    with pytest.raises(RejectedMessage):
        _decode_up(ring, roster, digest, bad)


def test_version_magic_and_kind_are_named(ring, identities, roster, digest) -> None:
    _, blob = _upload(ring, identities, digest)
    v = blob[:4] + bytes([WIRE_VERSION + 1]) + blob[5:]
    with pytest.raises(RejectedMessage, match=f"version {WIRE_VERSION + 1}, expected "
                       f"{WIRE_VERSION}"):
        _decode_up(ring, roster, digest, v)
    with pytest.raises(RejectedMessage, match="magic"):
        _decode_up(ring, roster, digest, b"XXXX" + blob[4:])
    with pytest.raises(RejectedMessage, match="kind 'upload', expected 'partial'"):
        decode_partial(blob, ring, roster=roster, config_digest=digest, round_id=7, chunks=2,
                       uploaders=IDS, decryptors=IDS)
    with pytest.raises(RejectedMessage, match="kind 'unknown kind 9', expected 'upload'"):
        _decode_up(ring, roster, digest, blob[:5] + b"\x09" + blob[6:])


def _resign(blob: bytes, identity: Identity, kind: MessageKind) -> bytes:
    """Re-sign a tampered body with a roster identity (what a malicious sender can do)."""
    import hashlib

    body = blob[:-SIGNATURE_BYTES]
    label = b"secagg-ckks-threshold/v1/" + kind.name.lower().encode()
    return body + identity.signing_key.sign(label + hashlib.sha256(body).digest())


@SETTINGS
@given(chunk=st.integers(0, 1), index=st.integers(0, 8191), level=st.integers(0, 1),
       excess=st.integers(0, 2**20))
def test_an_unreduced_residue_is_rejected_even_when_signed(ring, identities, roster, digest,
                                                           chunk, index, level, excess) -> None:
    """A sender that signs residues >= its prime is still refused, naming chunk, index and
    prime."""
    level = level % ring.primes
    res, blob = _upload(ring, identities, digest)
    q = int(ring.moduli[level])
    bits = q.bit_length()
    value = q + excess % ((1 << bits) - q)
    bad = res.copy()
    bad[chunk, level, index] = value
    header = message_size(MessageKind.UPLOAD, ring, 2) - SIGNATURE_BYTES \
        - sum(2 * ring.n * int(p).bit_length() // 8 for p in ring.moduli)
    body = blob[:header] + b"".join(pack_bits(bad[:, lv, :], int(p).bit_length())
                                    for lv, p in enumerate(ring.moduli))
    forged = _resign(body + bytes(SIGNATURE_BYTES), identities[1], MessageKind.UPLOAD)
    with pytest.raises(RejectedMessage, match=f"chunk {chunk} residue {index} is {value}, not "
                       f"below prime {level} \\({q}\\)"):
        _decode_up(ring, roster, digest, forged)


def test_bound_to_setup_round_chunks_and_sender(ring, identities, roster, digest) -> None:
    _, blob = _upload(ring, identities, digest, sender=1, round_id=7)
    # replay into another round, another setup, another chunk range
    with pytest.raises(RejectedMessage, match="for round 7, expected round 8"):
        _decode_up(ring, roster, digest, blob, round_id=8)
    other = setup_digest(roster.digest(), IDS, T + 1, repr(ring.params),
                         policy=decryption_policy(len(IDS), T + 1))
    with pytest.raises(RejectedMessage, match="another federation, roster, threshold"):
        _decode_up(ring, roster, other, blob)
    with pytest.raises(RejectedMessage, match=r"chunks 0\.\.1, expected 2\.\.3"):
        _decode_up(ring, roster, digest, blob, first_chunk=2)
    with pytest.raises(RejectedMessage, match=r"chunks 0\.\.1, expected 0\.\.2"):
        _decode_up(ring, roster, digest, blob, chunks=3)
    # the transport authenticated party 2, the message names party 1
    with pytest.raises(RejectedMessage, match="names sender 1, expected 2") as err:
        _decode_up(ring, roster, digest, blob, sender=2)
    assert err.value.code is ErrorCode.WRONG_SENDER
    # re-attribution: rewrite the sender (or the round) in the header; the signature fails
    off = 4 + 1 + 1 + 32 + 8
    reattributed = blob[:off] + struct.pack(">I", 2) + blob[off + 4:]
    with pytest.raises(RejectedMessage, match="not signed by party 2's roster identity"):
        _decode_up(ring, roster, digest, reattributed, sender=2)
    moved = blob[:off - 8] + struct.pack(">Q", 8) + blob[off:]
    with pytest.raises(RejectedMessage, match="not signed by party 1's roster identity"):
        _decode_up(ring, roster, digest, moved, round_id=8)
    # signed by an identity outside the roster
    outsider = Identity.generate("outsider")
    _, forged = _upload(ring, {1: outsider}, digest, sender=1)
    with pytest.raises(RejectedMessage, match="not signed by party 1's roster identity"):
        _decode_up(ring, roster, digest, forged)


def test_a_partial_is_bound_to_its_uploaders_and_decrypting_set(ring, identities, roster,
                                                                digest) -> None:
    res = _residues(ring, 2, 5)
    blob = encode_partial(ring, identity=identities[2], config_digest=digest, round_id=7,
                          sender=2, uploaders=IDS, decryptors=(0, 1, 2), residues=res)
    kw = {"roster": roster, "config_digest": digest, "round_id": 7, "chunks": 2}
    decode_partial(blob, ring, uploaders=IDS, decryptors=(0, 1, 2), **kw)
    with pytest.raises(RejectedMessage, match=r"decrypting set \[0, 1, 2\], expected \[1, 2, 3\]"):
        decode_partial(blob, ring, uploaders=IDS, decryptors=(1, 2, 3), **kw)
    with pytest.raises(RejectedMessage, match=r"uploaders \[0, 1, 2, 3\], expected \[0, 1, 2\]"):
        decode_partial(blob, ring, uploaders=(0, 1, 2), decryptors=(0, 1, 2), **kw)
    # an honest signer outside its own decrypting set is refused too
    odd = encode_partial(ring, identity=identities[3], config_digest=digest, round_id=7,
                         sender=3, uploaders=IDS, decryptors=(0, 1, 2), residues=res)
    with pytest.raises(RejectedMessage, match="not in its decrypting set"):
        decode_partial(odd, ring, uploaders=IDS, decryptors=(0, 1, 2), **kw)
    # an upload (same residues, same signer) is not a partial and vice versa
    up = encode_upload(ring, identity=identities[2], config_digest=digest, round_id=7, sender=2,
                       residues=res)
    with pytest.raises(RejectedMessage, match="expected 'partial'"):
        decode_partial(up, ring, uploaders=IDS, decryptors=(0, 1, 2), **kw)


def test_encoder_refuses_bad_input(ring, identities, digest) -> None:
    res = _residues(ring, 1, 0)
    with pytest.raises(InvalidParameter, match="reduced"):
        encode_upload(ring, identity=identities[0], config_digest=digest, round_id=1, sender=0,
                      residues=res + ring.moduli[None, :, None])
    with pytest.raises(InvalidParameter, match="shape"):
        encode_upload(ring, identity=identities[0], config_digest=digest, round_id=1, sender=0,
                      residues=res[:, :1])
    with pytest.raises(InvalidParameter, match="increasing"):
        encode_partial(ring, identity=identities[0], config_digest=digest, round_id=1, sender=0,
                       uploaders=(1, 0), decryptors=(0, 1, 2), residues=res)
    with pytest.raises(InvalidParameter, match="identity"):
        encode_upload(ring, identity=None, config_digest=digest, round_id=1, sender=0,
                      residues=res)


# -- a whole round through the bytes ---------------------------------------------------------


def test_round_through_the_wire_with_a_decryptor_absent(ring, identities, roster, digest) -> None:
    parties = {i: ThresholdParty(ring, i, IDS, T, identity=identities[i], roster=roster)
               for i in IDS}
    assert all(p.setup == digest for p in parties.values())  # the roster's default policy
    for p in parties.values():
        for j, bundle in p.deal().items():
            parties[j].receive(bundle)
    rng = np.random.default_rng(11)  # test data
    xs = {i: rng.uniform(-1, 1, LENGTH) for i in IDS}
    round_id = 42
    chunks = chunks_for(ring, LENGTH)
    blobs, uploads = {}, {}
    for i in IDS:
        blobs[i] = encode_upload(ring, identity=identities[i], config_digest=digest,
                                 round_id=round_id, sender=i,
                                 residues=parties[i].encrypt_round(xs[i], round_id))
        uploads[i] = decode_upload(blobs[i], ring, roster=roster, config_digest=digest,
                                   round_id=round_id, chunks=chunks, sender=i).residues
    summed = aggregate(ring, uploads)
    agg = encode_aggregate(ring, config_digest=digest, round_id=round_id, uploaders=IDS,
                           residues=summed)
    assert np.array_equal(decode_aggregate(agg, ring, config_digest=digest, round_id=round_id,
                                           chunks=chunks, uploaders=IDS).residues,
                          np.stack(summed))
    group = (0, 2, 3)  # party 1 absent at decryption (n - t = 1)
    statements = {j: parties[j].sign_statement(agg, blobs, round_id=round_id) for j in group}
    partials = {}
    for j in group:
        blob = encode_partial(ring, identity=identities[j], config_digest=digest,
                              round_id=round_id, sender=j, uploaders=IDS, decryptors=group,
                              residues=parties[j].partial_decrypt(agg, statements, group,
                                                                  round_id=round_id))
        partials[j] = decode_partial(blob, ring, roster=roster, config_digest=digest,
                                     round_id=round_id, chunks=chunks, uploaders=IDS,
                                     decryptors=group, sender=j).residues
    out = combine(ring, summed, partials, decryptors=group, threshold=T, length=LENGTH)
    assert np.abs(out - sum(xs.values())).max() <= 1e-6
    # the same partial replayed into the next round is refused before it is combined
    with pytest.raises(RejectedMessage, match="expected round 43"):
        decode_partial(blob, ring, roster=roster, config_digest=digest, round_id=43,
                       chunks=chunks, uploaders=IDS, decryptors=group)


# -- the decryption statement (kind 4) ------------------------------------------------------------


def _statement(ring, identities, digest, *, sender=1, round_id=7, users=IDS, chunks=2,
               named=b"\x11" * 32):
    return encode_statement(ring, identity=identities[sender], config_digest=digest,
                            round_id=round_id, sender=sender, uploaders=users, chunks=chunks,
                            digest_of_aggregate=named)


@SETTINGS
@given(sender=st.sampled_from(IDS), round_id=st.integers(0, 2**64 - 1),
       users=st.sets(st.sampled_from(IDS), min_size=1), chunks=st.integers(1, 200),
       named=st.binary(min_size=32, max_size=32))
def test_statement_round_trips(ring, identities, roster, digest, sender, round_id, users, chunks,
                               named) -> None:
    blob = _statement(ring, identities, digest, sender=sender, round_id=round_id,
                      users=sorted(users), chunks=chunks, named=named)
    assert len(blob) == message_size(MessageKind.STATEMENT, ring, chunks, uploaders=len(users))
    got = decode_statement(blob, ring, roster=roster, config_digest=digest, round_id=round_id,
                           chunks=chunks, uploaders=users, digest_of_aggregate=named,
                           sender=sender)
    assert (got.sender, got.uploaders, got.aggregate_digest) == (sender, tuple(sorted(users)),
                                                                 named)


@SETTINGS
@given(position=st.integers(0, 10**6), flip=st.integers(1, 255))
def test_statement_any_changed_byte_is_rejected(ring, identities, roster, digest, position,
                                                flip) -> None:
    blob = _statement(ring, identities, digest)
    i = position % len(blob)
    bad = blob[:i] + bytes([blob[i] ^ flip]) + blob[i + 1:]
    with pytest.raises(RejectedMessage):
        decode_statement(bad, ring, roster=roster, config_digest=digest, round_id=7, chunks=2)


def test_statement_is_bound_to_uploaders_aggregate_round_and_signer(ring, identities, roster,
                                                                    digest) -> None:
    blob = _statement(ring, identities, digest, named=aggregate_digest(b"agg"))
    kw = {"roster": roster, "config_digest": digest, "chunks": 2}
    decode_statement(blob, ring, round_id=7, uploaders=IDS,
                     digest_of_aggregate=aggregate_digest(b"agg"), sender=1, **kw)
    with pytest.raises(RejectedMessage, match="another aggregate"):
        decode_statement(blob, ring, round_id=7, digest_of_aggregate=aggregate_digest(b"agh"),
                         **kw)
    with pytest.raises(RejectedMessage, match=r"uploaders \[0, 1, 2, 3\], expected \[0, 1, 2\]"):
        decode_statement(blob, ring, round_id=7, uploaders=(0, 1, 2), **kw)
    with pytest.raises(RejectedMessage, match="expected round 8"):
        decode_statement(blob, ring, round_id=8, **kw)
    with pytest.raises(RejectedMessage, match="names sender 1, expected 2"):
        decode_statement(blob, ring, round_id=7, sender=2, **kw)
    with pytest.raises(RejectedMessage, match=f"expected exactly {len(blob)}"):
        decode_statement(blob + b"\0", ring, round_id=7, **kw)
    # signed by an identity outside the roster, or a statement's bytes passed off as an upload
    forged = _statement(ring, {1: Identity.generate("outsider")}, digest)
    with pytest.raises(RejectedMessage, match="not signed by party 1's roster identity"):
        decode_statement(forged, ring, round_id=7, **kw)
    with pytest.raises(RejectedMessage, match="kind 'statement', expected 'upload'"):
        decode_upload(blob, ring, roster=roster, config_digest=digest, round_id=7, chunks=2)
    with pytest.raises(InvalidParameter, match="digest"):
        _statement(ring, identities, digest, named=b"short")


def test_a_random_message_is_never_accepted(ring, roster, digest) -> None:
    blob = MAGIC + bytes([WIRE_VERSION, 1]) + os.urandom(
        message_size(MessageKind.UPLOAD, ring, 2) - 6)
    with pytest.raises(RejectedMessage):
        _decode_up(ring, roster, digest, blob)
