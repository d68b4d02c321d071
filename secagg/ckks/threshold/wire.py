"""Wire format of the threshold CKKS round: uploads, the server's aggregate, partial decryptions.

Residues travel bit-packed at their prime's width with the compact format's primitives
(:func:`secagg.ckks.packing.pack_bits` / :func:`~secagg.ckks.packing.unpack_bits`): a chunk of an
upload is one polynomial (``c0``; the common ``a_k`` comes from the round seed), so with the
coefficient embedding it costs ``sum_l b_l`` bits per real.

Format, version 1 (integers big-endian)::

    magic "SCKT" || version (u8 = 1) || kind (u8) || config digest (32) || round (u64)
    || sender (u32) || first chunk (u32) || chunks (u32) || log2 N (u8) || primes L (u8)
    || bits b_1..b_L (u8 each)
    || [aggregate, partial] uploaders: count (u32) || ids (u32 each, strictly increasing)
    || [partial] decryptors: count (u32) || ids (u32 each, strictly increasing)
    || [statement] aggregate digest (32)
    || residues [upload, aggregate, partial] || [upload, partial, statement] signature (64)

* kind 1, ``upload``: party -> server, ``c0`` of chunks ``first .. first + chunks - 1``.
* kind 2, ``aggregate``: server -> decryptors, the sum of the uploads of ``uploaders``; unsigned
  (the server is not in the roster), ``sender`` is :data:`SERVER` (0xFFFFFFFF). A party checks
  it against the signed uploads before signing a statement for it
  (:meth:`.ThresholdParty.sign_statement`), not this codec.
* kind 3, ``partial``: decryptor -> server, ``a_k * z_j + E_j`` for the decrypting set
  ``decryptors`` over the uploads of ``uploaders``.
* kind 4, ``statement``: party -> server -> decryptors, the party's once-per-round decryption
  statement: "for this setup and round I will partially decrypt only the uploaders ``U`` and
  the aggregate whose encoded message hashes to ``aggregate digest``"
  (:func:`aggregate_digest`). No residues; ``chunks`` and ``first chunk`` are the aggregate's.
  A decryptor needs the policy's quorum of them, from distinct roster members, over one and the
  same statement (see :mod:`.policy`).
* ``residues``: prime-major, then chunk, then coefficient: for prime ``l``, the ``chunks * N``
  residues as one little-endian bit stream of ``b_l``-bit values (:func:`pack_bits`'s layout), so
  a whole message unpacks with one vectorised call per prime.
* ``signature``: Ed25519 by the sender's pinned roster identity over
  ``"secagg-ckks-threshold/v1/" kind-name || SHA-256(every byte before the signature)``. The
  header it covers binds the message to the setup (``config digest``: :func:`.transport.
  setup_digest`, which binds the roster, the parties, the threshold and the parameters), the
  round, the chunk indices, the sender, and for a partial decryption the uploaders and the
  decrypting set it was computed for: it cannot be replayed into another round, another chunk
  range or another decryption, nor re-attributed to another sender.

Decoding is strict and checks in this order: magic, version, kind, the fixed header's values
against what the receiver expects (setup, round, sender, chunk range, ring and prime widths, the
sets), the exact length, the signature against the roster, then every residue below its prime.
Any failure is a :class:`~secagg.errors.RejectedMessage` naming the sender (as claimed by the
transport when given, else by the message) and what was expected.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from secagg.ckks.packing import pack_bits, unpack_bits
from secagg.ckks.threshold.rings import Residues, RingContext
from secagg.errors import AuthenticationFailed, ErrorCode, InvalidParameter, RejectedMessage

__all__ = [
    "MAGIC",
    "SERVER",
    "SIGNATURE_BYTES",
    "WIRE_VERSION",
    "Decoded",
    "MessageKind",
    "aggregate_digest",
    "decode_aggregate",
    "decode_partial",
    "decode_statement",
    "decode_upload",
    "encode_aggregate",
    "encode_partial",
    "encode_statement",
    "encode_upload",
    "message_size",
]

MAGIC = b"SCKT"
WIRE_VERSION = 1
SIGNATURE_BYTES = 64
DIGEST_BYTES = 32
SERVER = 0xFFFFFFFF
#: ids lists longer than this are refused before anything is allocated
MAX_PARTIES = 1 << 16
_FIXED = struct.Struct(">4sBB32sQIIIBB")  # magic .. primes L
_LABEL = b"secagg-ckks-threshold/v1/"


class MessageKind(enum.IntEnum):
    UPLOAD = 1
    AGGREGATE = 2
    PARTIAL = 3
    STATEMENT = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def signed(self) -> bool:
        return self is not MessageKind.AGGREGATE


class _Signer(Protocol):
    def sign(self, message: bytes) -> bytes: ...


class _Verifier(Protocol):
    def verify(self, client_id: int, signature: bytes, message: bytes, *, what: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded, verified message: its header fields and residues ``(chunks, primes, N)``."""

    kind: MessageKind
    config_digest: bytes
    round_id: int
    sender: int
    first_chunk: int
    residues: Residues
    uploaders: tuple[int, ...] = ()
    decryptors: tuple[int, ...] = ()
    #: a statement's aggregate digest (empty for the other kinds)
    aggregate_digest: bytes = b""

    @property
    def chunks(self) -> list[Residues]:
        """The residues as the core's per-chunk list (views, no copy)."""
        return list(self.residues)


def _ids_field(ids: Sequence[int]) -> bytes:
    return struct.pack(f">I{len(ids)}I", len(ids), *ids)


def _sorted_ids(ids: Sequence[int], what: str) -> tuple[int, ...]:
    out = tuple(int(i) for i in ids)
    if list(out) != sorted(set(out)) or any(not 0 <= i < SERVER for i in out):
        raise InvalidParameter(f"{what} must be distinct ids in [0, 2^32 - 1), in increasing "
                               f"order; found {out[:8]}")
    if not out or len(out) > MAX_PARTIES:
        raise InvalidParameter(f"{what} must hold 1..{MAX_PARTIES} ids, found {len(out)}")
    return out


def _widths(ring: RingContext) -> list[int]:
    return [int(q).bit_length() for q in ring.moduli]


def message_size(kind: MessageKind, ring: RingContext, chunks: int, *, uploaders: int = 0,
                 decryptors: int = 0) -> int:
    """Exact size in bytes of one message carrying ``chunks`` chunks."""
    size = _FIXED.size + ring.primes
    if kind is MessageKind.STATEMENT:
        size += DIGEST_BYTES
    else:
        size += sum(chunks * ring.n * b // 8 for b in _widths(ring))
    if kind is not MessageKind.UPLOAD:
        size += 4 + 4 * uploaders
    if kind is MessageKind.PARTIAL:
        size += 4 + 4 * decryptors
    return size + (SIGNATURE_BYTES if kind.signed else 0)


def _stack(ring: RingContext, residues: Sequence[Residues] | Residues) -> Residues:
    arr = np.asarray(residues if isinstance(residues, np.ndarray) else np.stack(list(residues)),
                     dtype=np.uint64)
    if arr.ndim != 3 or arr.shape[1:] != (ring.primes, ring.n) or arr.shape[0] < 1:
        raise InvalidParameter(f"residues must have shape (chunks >= 1, {ring.primes}, {ring.n}), "
                               f"found {arr.shape}")
    return arr


def _encode(kind: MessageKind, ring: RingContext, *, config_digest: bytes, round_id: int,
            sender: int, first_chunk: int, residues: Sequence[Residues] | Residues,
            uploaders: Sequence[int] = (), decryptors: Sequence[int] = (),
            identity: Any = None, chunks: int | None = None,
            digest_of_aggregate: bytes = b"") -> bytes:
    if len(config_digest) != DIGEST_BYTES:
        raise InvalidParameter(f"config digest must be {DIGEST_BYTES} bytes, found "
                               f"{len(config_digest)}")
    if not 0 <= round_id < 1 << 64 or not 0 <= first_chunk < 1 << 32 or not 0 <= sender <= SERVER:
        raise InvalidParameter("round, first chunk or sender out of range")
    if kind is MessageKind.STATEMENT:
        if chunks is None or not 1 <= chunks < 1 << 32 or len(digest_of_aggregate) != DIGEST_BYTES:
            raise InvalidParameter("a statement needs the aggregate's chunk count and its "
                                   f"{DIGEST_BYTES}-byte digest")
        arr = np.empty((0, ring.primes, ring.n), dtype=np.uint64)
        count = chunks
    else:
        arr = _stack(ring, residues)
        if (arr.max(axis=(0, 2)) >= ring.moduli).any():
            raise InvalidParameter("residues must be reduced modulo their primes")
        count = arr.shape[0]
    parts = [_FIXED.pack(MAGIC, WIRE_VERSION, kind, config_digest, round_id, sender, first_chunk,
                         count, ring.n.bit_length() - 1, ring.primes),
             bytes(_widths(ring))]
    if kind is not MessageKind.UPLOAD:
        parts.append(_ids_field(_sorted_ids(uploaders, "uploaders")))
    if kind is MessageKind.PARTIAL:
        parts.append(_ids_field(_sorted_ids(decryptors, "decryptors")))
    if kind is MessageKind.STATEMENT:
        parts.append(bytes(digest_of_aggregate))
    else:
        for level, bits in enumerate(_widths(ring)):
            parts.append(pack_bits(arr[:, level, :], bits))
    body = b"".join(parts)
    if not kind.signed:
        return body
    key = getattr(identity, "signing_key", identity)  # an Identity or its SigningKey
    if key is None:
        raise InvalidParameter(f"a threshold {kind.label} is signed: pass the sender's identity")
    signature: bytes = key.sign(_signed_bytes(kind, body))
    return body + signature


def _signed_bytes(kind: MessageKind, body: bytes | memoryview) -> bytes:
    return _LABEL + kind.label.encode() + hashlib.sha256(body).digest()


def encode_upload(ring: RingContext, *, identity: _Signer | Any, config_digest: bytes,
                  round_id: int, sender: int, residues: Sequence[Residues] | Residues,
                  first_chunk: int = 0) -> bytes:
    """A party's upload (``c0`` per chunk, as :meth:`.ThresholdParty.encrypt` returns them),
    signed with its roster identity (an :class:`~secagg.identity.Identity` or its key)."""
    return _encode(MessageKind.UPLOAD, ring, config_digest=config_digest, round_id=round_id,
                   sender=sender, first_chunk=first_chunk, residues=residues, identity=identity)


def encode_aggregate(ring: RingContext, *, config_digest: bytes, round_id: int,
                     uploaders: Sequence[int], residues: Sequence[Residues] | Residues,
                     first_chunk: int = 0) -> bytes:
    """The server's sum of the uploads of ``uploaders`` (unsigned; see the module docstring)."""
    return _encode(MessageKind.AGGREGATE, ring, config_digest=config_digest, round_id=round_id,
                   sender=SERVER, first_chunk=first_chunk, residues=residues,
                   uploaders=uploaders)


def encode_partial(ring: RingContext, *, identity: _Signer | Any, config_digest: bytes,
                   round_id: int, sender: int, uploaders: Sequence[int],
                   decryptors: Sequence[int], residues: Sequence[Residues] | Residues,
                   first_chunk: int = 0) -> bytes:
    """A decryptor's partial decryptions (:meth:`.ThresholdParty.partial_decrypt`), signed and
    bound to the uploaders and the decrypting set they were computed for."""
    return _encode(MessageKind.PARTIAL, ring, config_digest=config_digest, round_id=round_id,
                   sender=sender, first_chunk=first_chunk, residues=residues,
                   uploaders=uploaders, decryptors=decryptors, identity=identity)


def header_chunks(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(first chunk, chunks)`` as a message's header claims them (unverified: pass them to the
    strict decoder, which checks everything else)."""
    if len(data) < _FIXED.size:
        raise RejectedMessage(None, f"threshold message: {len(data)} bytes, shorter than the "
                              f"{_FIXED.size}-byte header")
    fields = _FIXED.unpack_from(data)
    return int(fields[6]), int(fields[7])


def aggregate_digest(aggregate: bytes | bytearray | memoryview) -> bytes:
    """SHA-256 of an encoded aggregate message (what a statement names)."""
    return hashlib.sha256(_LABEL + b"aggregate-digest" + bytes(aggregate)).digest()


def encode_statement(ring: RingContext, *, identity: _Signer | Any, config_digest: bytes,
                     round_id: int, sender: int, uploaders: Sequence[int], chunks: int,
                     digest_of_aggregate: bytes, first_chunk: int = 0) -> bytes:
    """A party's decryption statement for one round (signed with its roster identity). Honest
    parties sign at most one per round: :meth:`.ThresholdParty.sign_statement`."""
    return _encode(MessageKind.STATEMENT, ring, config_digest=config_digest, round_id=round_id,
                   sender=sender, first_chunk=first_chunk, residues=(), uploaders=uploaders,
                   identity=identity, chunks=chunks, digest_of_aggregate=digest_of_aggregate)


class _Reader:
    def __init__(self, data: bytes | memoryview, who: int | None) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.who = who

    def take(self, size: int, what: str) -> memoryview:
        if self.pos + size > len(self.data):
            raise RejectedMessage(self.who, f"threshold message truncated in {what}: "
                                  f"{len(self.data)} bytes")
        out = self.data[self.pos: self.pos + size]
        self.pos += size
        return out

    def ids(self, what: str) -> tuple[int, ...]:
        (count,) = struct.unpack(">I", self.take(4, f"the {what} count"))
        if not 1 <= count <= MAX_PARTIES:
            raise RejectedMessage(self.who, f"{what}: {count} ids, expected 1..{MAX_PARTIES}")
        raw = self.take(4 * count, f"the {what} ids")
        ids = tuple(int(x) for x in np.frombuffer(raw, dtype=">u4"))
        if list(ids) != sorted(set(ids)):
            raise RejectedMessage(self.who, f"{what} must be distinct and in increasing order")
        return ids


def _decode(data: bytes, kind: MessageKind, ring: RingContext, *, config_digest: bytes,
            round_id: int, chunks: int, first_chunk: int, sender: int | None,
            roster: _Verifier | None, uploaders: Sequence[int] | None = None,
            decryptors: Sequence[int] | None = None,
            digest_of_aggregate: bytes | None = None) -> Decoded:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RejectedMessage(sender, f"a threshold {kind.label} must be bytes")
    who = sender
    if len(data) < _FIXED.size:
        raise RejectedMessage(who, f"threshold {kind.label}: {len(data)} bytes, shorter than the "
                              f"{_FIXED.size}-byte header")
    (magic, version, got_kind, digest, rnd, claimed, first, count, log_n,
     primes) = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise RejectedMessage(who, f"not a threshold CKKS message (magic {bytes(magic)!r}, "
                              f"expected {MAGIC!r})")
    if version != WIRE_VERSION:
        raise RejectedMessage(who, f"threshold message format version {version}, expected "
                              f"{WIRE_VERSION}")
    if got_kind != kind:
        found = MessageKind(got_kind).label if got_kind in MessageKind._value2member_map_ \
            else f"unknown kind {got_kind}"
        raise RejectedMessage(who, f"a threshold message of kind '{found}', expected "
                              f"'{kind.label}'")
    expected_sender = SERVER if kind is MessageKind.AGGREGATE else sender
    if expected_sender is not None and claimed != expected_sender:
        raise RejectedMessage(who, f"threshold {kind.label} names sender {claimed}, expected "
                              f"{expected_sender} (the sender the transport authenticated)",
                              ErrorCode.WRONG_SENDER)
    who = claimed if kind is not MessageKind.AGGREGATE else sender
    what = f"threshold {kind.label} of {'the server' if claimed == SERVER else f'party {claimed}'}"
    if digest != config_digest:
        raise RejectedMessage(who, f"{what} is for setup {bytes(digest[:8]).hex()}..., expected "
                              f"{config_digest[:8].hex()}... (another federation, roster, "
                              "threshold or parameter set)")
    if rnd != round_id:
        raise RejectedMessage(who, f"{what} is for round {rnd}, expected round {round_id}")
    if first != first_chunk or count != chunks:
        raise RejectedMessage(who, f"{what} carries chunks {first}..{first + count - 1}, expected "
                              f"{first_chunk}..{first_chunk + chunks - 1}")
    reader = _Reader(data, who)
    reader.pos = _FIXED.size
    widths = list(reader.take(primes, "the prime widths"))
    if log_n != ring.n.bit_length() - 1 or widths != _widths(ring):
        raise RejectedMessage(who, f"{what} is packed for N=2^{log_n}, {primes} prime(s) of "
                              f"{widths} bits; the round expects N={ring.n}, {ring.primes} "
                              f"prime(s) of {_widths(ring)} bits")
    users: tuple[int, ...] = ()
    group: tuple[int, ...] = ()
    if kind is not MessageKind.UPLOAD:
        users = reader.ids("uploaders")
        if uploaders is not None and users != tuple(sorted(set(uploaders))):
            raise RejectedMessage(who, f"{what} is for uploaders {list(users)}, expected "
                                  f"{sorted(set(uploaders))}")
    if kind is MessageKind.PARTIAL:
        group = reader.ids("decryptors")
        if decryptors is not None and group != tuple(sorted(set(decryptors))):
            raise RejectedMessage(who, f"{what} is for decrypting set {list(group)}, expected "
                                  f"{sorted(set(decryptors))}")
        if claimed not in group:
            raise RejectedMessage(who, f"{what}: its sender is not in its decrypting set")
    named = b""
    if kind is MessageKind.STATEMENT:
        named = bytes(reader.take(DIGEST_BYTES, "the aggregate digest"))
        if digest_of_aggregate is not None and named != digest_of_aggregate:
            raise RejectedMessage(who, f"{what} names aggregate {named[:8].hex()}..., expected "
                                  f"{digest_of_aggregate[:8].hex()}... (another aggregate)")
    want = message_size(kind, ring, chunks, uploaders=len(users), decryptors=len(group))
    if len(data) != want:
        raise RejectedMessage(who, f"{what}: {len(data)} bytes, expected exactly {want}")
    if kind.signed:
        if roster is None:
            raise InvalidParameter("decoding a signed threshold message needs the pinned roster")
        body = reader.data[: want - SIGNATURE_BYTES]
        try:
            roster.verify(claimed, bytes(reader.data[want - SIGNATURE_BYTES:]),
                          _signed_bytes(kind, body), what=f"threshold {kind.label}")
        except AuthenticationFailed:
            raise RejectedMessage(who, f"{what} is not signed by party {claimed}'s roster "
                                  "identity (tampered, forged or re-attributed)") from None
    if kind is MessageKind.STATEMENT:
        return Decoded(kind, bytes(digest), rnd, claimed, first,
                       np.empty((0, ring.primes, ring.n), dtype=np.uint64), users, group, named)
    out = np.empty((chunks, ring.primes, ring.n), dtype=np.uint64)
    for level, bits in enumerate(widths):
        raw = reader.take(chunks * ring.n * bits // 8, f"the residues of prime {level}")
        rows = unpack_bits(raw, bits, chunks * ring.n).reshape(chunks, ring.n)
        q = ring.moduli[level]
        if rows.max() >= q:
            bad = np.argwhere(rows >= q)
            chunk, index = (int(x) for x in bad[0])
            raise RejectedMessage(who, f"{what}: chunk {first + chunk} residue {index} is "
                                  f"{int(rows[chunk, index])}, not below prime {level} ({int(q)});"
                                  " residues must be reduced")
        out[:, level, :] = rows
    return Decoded(kind, bytes(digest), rnd, claimed, first, out, users, group)


def decode_upload(data: bytes, ring: RingContext, *, roster: _Verifier, config_digest: bytes,
                  round_id: int, chunks: int, first_chunk: int = 0,
                  sender: int | None = None) -> Decoded:
    """Strictly decode and verify a party's upload for this setup, round and chunk range.
    ``sender``: the party the transport authenticated, if any (the message must name it)."""
    return _decode(data, MessageKind.UPLOAD, ring, config_digest=config_digest,
                   round_id=round_id, chunks=chunks, first_chunk=first_chunk, sender=sender,
                   roster=roster)


def decode_aggregate(data: bytes, ring: RingContext, *, config_digest: bytes, round_id: int,
                     chunks: int, first_chunk: int = 0,
                     uploaders: Sequence[int] | None = None) -> Decoded:
    """Strictly decode the server's aggregate (unsigned) for this setup, round and chunks."""
    return _decode(data, MessageKind.AGGREGATE, ring, config_digest=config_digest,
                   round_id=round_id, chunks=chunks, first_chunk=first_chunk, sender=None,
                   roster=None, uploaders=uploaders)


def decode_partial(data: bytes, ring: RingContext, *, roster: _Verifier, config_digest: bytes,
                   round_id: int, chunks: int, uploaders: Sequence[int],
                   decryptors: Sequence[int], first_chunk: int = 0,
                   sender: int | None = None) -> Decoded:
    """Strictly decode and verify a partial decryption computed for exactly ``uploaders`` and
    the decrypting set ``decryptors`` (of which its sender must be a member)."""
    return _decode(data, MessageKind.PARTIAL, ring, config_digest=config_digest,
                   round_id=round_id, chunks=chunks, first_chunk=first_chunk, sender=sender,
                   roster=roster, uploaders=uploaders, decryptors=decryptors)


def decode_statement(data: bytes, ring: RingContext, *, roster: _Verifier, config_digest: bytes,
                     round_id: int, chunks: int, first_chunk: int = 0,
                     uploaders: Sequence[int] | None = None,
                     digest_of_aggregate: bytes | None = None,
                     sender: int | None = None) -> Decoded:
    """Strictly decode and verify a decryption statement of this setup and round (and, when
    given, for exactly ``uploaders`` and the aggregate of digest ``digest_of_aggregate``)."""
    return _decode(data, MessageKind.STATEMENT, ring, config_digest=config_digest,
                   round_id=round_id, chunks=chunks, first_chunk=first_chunk, sender=sender,
                   roster=roster, uploaders=uploaders, digest_of_aggregate=digest_of_aggregate)
