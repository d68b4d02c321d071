"""The compact ciphertext wire format: RNS residues bit-packed at their prime's width.

SEAL stores every residue of a ciphertext in a 64-bit word (and zstd claws back only part of the
unused high bits). A residue modulo a ``b``-bit prime needs ``b`` bits; packed at that width, a
seeded upload at one 31-bit prime is 31 bits per coefficient, i.e. per real with the coefficient
encoding of :class:`~secagg.hazmat.seal_codec.CoefficientEmbedding`: below float32.

Format, version 1 (all integers big-endian; one packed blob per ciphertext)::

    version (u8 = 1) || kind (u8) || log2 N (u8) || primes L (u8) || bits b_1..b_L (u8 each)
    || residues || seed (kind 1 only)

* kind 1, ``seeded``: a client upload. ``residues`` is ``c0`` (L x N), the seed is SEAL's 64-byte
  PRNG seed from which SEAL's loader re-expands ``c1``.
* kind 2, ``full``: both polynomials (2 x L x N), no seed (the aggregate).
* ``residues``: polynomial-major, then prime-major, each prime's N residues as one little-endian
  bit stream of ``b_l``-bit values (value ``i`` occupies bits ``i*b .. i*b + b - 1``), so
  ``N * b_l / 8`` bytes per polynomial and prime (N is a multiple of 8).

Decoding is strict: the header must name exactly the round's version, kind, ring, level and
widths (``b_l`` is the bit length of the round's ``l``-th prime), the length must be exact, and
every residue must be below its prime; anything else is a :class:`~secagg.errors.RejectedMessage`
saying what was expected. The rebuilt SEAL object then goes through SEAL's own checked loader
(:meth:`secagg.hazmat.seal_codec.SealSession.load`), exactly as an unpacked upload does.

Packing is numpy only: eight residues of ``b <= 60`` bits fill exactly ``b`` bytes, read as
64-bit words, so each of the eight positions of a group is a vectorised shift of one word (or an
OR of two, where a value straddles a word boundary) over every group at once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter, RejectedMessage
from secagg.hazmat.seal_codec import KEY_SEED_BYTES

__all__ = [
    "FORMAT_VERSION",
    "MAX_BITS",
    "PackedKind",
    "pack_bits",
    "pack_ciphertext",
    "packed_size",
    "unpack_bits",
    "unpack_ciphertext",
    "unpack_ciphertexts",
]

FORMAT_VERSION = 1
MAX_BITS = 60  # SEAL primes are at most 60 bits; a value then spans at most two 64-bit words
_GROUP = 8  # eight b-bit values are exactly b bytes


class PackedKind(enum.IntEnum):
    SEEDED = 1  # c0 and the seed c1 is expanded from (a client's upload)
    FULL = 2  # c0 and c1 (the aggregate)


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise InvalidParameter(f"packing width must be in [1, {MAX_BITS}] bits, found {bits}")


def _words_per_group(bits: int) -> int:
    return -(-bits // 8) + 1  # the group's b bytes in 64-bit words, plus one spare word


def pack_bits(values: npt.NDArray[np.uint64], bits: int) -> bytes:
    """``values`` (each < 2^bits, count a multiple of 8) as a little-endian bit stream."""
    _check_bits(bits)
    flat = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)
    if flat.size % _GROUP:
        raise InvalidParameter(f"packing takes a multiple of {_GROUP} values, found {flat.size}")
    if flat.size and int(flat.max()) >> bits:
        raise InvalidParameter(f"a value does not fit in {bits} bits")
    groups = flat.reshape(-1, _GROUP)
    words = np.zeros((groups.shape[0], _words_per_group(bits)), dtype="<u8")
    for j in range(_GROUP):
        word, shift = divmod(j * bits, 64)
        words[:, word] |= groups[:, j] << np.uint64(shift)
        if shift + bits > 64:  # the value straddles two words
            words[:, word + 1] |= groups[:, j] >> np.uint64(64 - shift)
    return words.view(np.uint8)[:, :bits].tobytes()


def unpack_bits(data: bytes | memoryview, bits: int, count: int) -> npt.NDArray[np.uint64]:
    """Inverse of :func:`pack_bits`: ``count`` values of ``bits`` bits (``len(data)`` must be
    exactly ``count * bits / 8``)."""
    _check_bits(bits)
    if count % _GROUP:
        raise InvalidParameter(f"unpacking takes a multiple of {_GROUP} values, found {count}")
    if len(data) != count * bits // 8:
        raise InvalidParameter(f"{count} values of {bits} bits are {count * bits // 8} bytes, found "
                               f"{len(data)}")
    buf = np.zeros((count // _GROUP, 8 * _words_per_group(bits)), dtype=np.uint8)
    buf[:, :bits] = np.frombuffer(data, dtype=np.uint8).reshape(-1, bits)
    words = buf.view("<u8")
    out = np.empty((count // _GROUP, _GROUP), dtype=np.uint64)
    mask = np.uint64((1 << bits) - 1)
    for j in range(_GROUP):
        word, shift = divmod(j * bits, 64)
        value = words[:, word] >> np.uint64(shift)
        if shift + bits > 64:
            value |= words[:, word + 1] << np.uint64(64 - shift)
        np.bitwise_and(value, mask, out=out[:, j])
    return out.reshape(-1)


def _header(kind: PackedKind, n: int, moduli: Sequence[int]) -> bytes:
    return bytes([FORMAT_VERSION, kind, n.bit_length() - 1, len(moduli),
                  *(q.bit_length() for q in moduli)])


def packed_size(kind: PackedKind, n: int, moduli: Sequence[int]) -> int:
    """Exact size in bytes of one packed ciphertext of ``kind`` for the ring and level."""
    polys = 1 if kind is PackedKind.SEEDED else 2
    body = polys * sum(n * q.bit_length() // 8 for q in moduli)
    return len(_header(kind, n, moduli)) + body + (KEY_SEED_BYTES if kind is PackedKind.SEEDED else 0)


def pack_ciphertext(kind: PackedKind, residues: npt.NDArray[np.uint64], moduli: Sequence[int],
                    seed: bytes = b"") -> bytes:
    """Pack ``residues`` (``(L, N)`` c0 for ``SEEDED`` with its ``seed``; ``(2, L, N)`` for
    ``FULL``), each reduced modulo its prime in ``moduli``."""
    polys = residues.reshape(1, *residues.shape) if kind is PackedKind.SEEDED else residues
    if polys.ndim != 3 or polys.shape[:2] != ((1 if kind is PackedKind.SEEDED else 2), len(moduli)):
        raise InvalidParameter(f"{kind.name.lower()} ciphertext residues have shape {residues.shape}")
    n = polys.shape[2]
    if n < _GROUP or n & (n - 1):
        raise InvalidParameter(f"ring size must be a power of two >= {_GROUP}, found {n}")
    if (kind is PackedKind.SEEDED) != (len(seed) == KEY_SEED_BYTES) or (seed and kind is PackedKind.FULL):
        raise InvalidParameter(f"a seeded ciphertext carries a {KEY_SEED_BYTES}-byte seed, a full one none")
    parts = [_header(kind, n, moduli)]
    for poly in polys:
        for level, q in enumerate(moduli):
            row = poly[level]
            if int(row.max()) >= q:
                raise InvalidParameter(f"a residue is not reduced modulo prime {level} ({q})")
            parts.append(pack_bits(row, q.bit_length()))
    parts.append(seed)
    return b"".join(parts)


def unpack_ciphertext(data: bytes, kind: PackedKind, n: int, moduli: Sequence[int], *, what: str,
                      sender: int | None = None) -> tuple[npt.NDArray[np.uint64], bytes]:
    """Strictly decode one packed ciphertext for the round's ring ``n`` and level ``moduli``:
    ``(residues, seed)``, residues shaped ``(L, N)`` (seeded) or ``(2, L, N)`` (full)."""
    residues, seeds = unpack_ciphertexts([data], kind, n, moduli, what=lambda _i: what, sender=sender)
    return residues[0], seeds[0]


def unpack_ciphertexts(
    blobs: Sequence[bytes], kind: PackedKind, n: int, moduli: Sequence[int], *,
    what: Callable[[int], str], sender: int | None = None,
) -> tuple[npt.NDArray[np.uint64], list[bytes]]:
    """:func:`unpack_ciphertext` for a whole upload at once (one vectorised pass over every
    chunk): residues shaped ``(chunks, L, N)`` or ``(chunks, 2, L, N)``, and the seeds;
    ``what(i)`` names chunk ``i`` in errors."""
    polys = 1 if kind is PackedKind.SEEDED else 2
    for i, blob in enumerate(blobs):
        _check_header(blob, kind, n, moduli, what(i), sender)
    head = len(_header(kind, n, moduli))
    out = np.empty((len(blobs), polys, len(moduli), n), dtype=np.uint64)
    pos = head
    for p in range(polys):
        for level, q in enumerate(moduli):
            size = n * q.bit_length() // 8
            joined = b"".join(memoryview(blob)[pos : pos + size] for blob in blobs)
            rows = unpack_bits(joined, q.bit_length(), n * len(blobs)).reshape(len(blobs), n)
            bad = np.argwhere(rows >= np.uint64(q))
            if bad.size:
                chunk, index = (int(x) for x in bad[0])
                raise RejectedMessage(
                    sender, f"{what(chunk)}: residue {index} of polynomial {p} is "
                    f"{int(rows[chunk, index])}, not below prime {level} ({q}); residues must be reduced")
            out[:, p, level] = rows
            pos += size
    seeds = [bytes(memoryview(blob)[pos:]) for blob in blobs]
    return (out[:, 0] if kind is PackedKind.SEEDED else out), seeds


def _check_header(data: bytes, kind: PackedKind, n: int, moduli: Sequence[int], what: str,
                  sender: int | None) -> None:
    header = _header(kind, n, moduli)
    if len(data) < len(header):
        raise RejectedMessage(sender, f"{what}: {len(data)} bytes, shorter than the "
                              f"{len(header)}-byte packed ciphertext header")
    if data[0] != FORMAT_VERSION:
        raise RejectedMessage(sender, f"{what}: packed ciphertext format version {data[0]}, "
                              f"expected {FORMAT_VERSION}")
    if data[1] != kind:
        found = PackedKind(data[1]).name.lower() if data[1] in PackedKind._value2member_map_ \
            else f"unknown kind {data[1]}"
        raise RejectedMessage(sender, f"{what}: a {found} ciphertext, expected {kind.name.lower()}")
    if bytes(data[: len(header)]) != header:
        got = f"N=2^{data[2]}, {data[3]} prime(s) of {list(data[4 : 4 + data[3]])} bits"
        raise RejectedMessage(sender, f"{what}: packed for {got}; the round expects N={n}, "
                              f"{len(moduli)} prime(s) of {[q.bit_length() for q in moduli]} bits")
    want = packed_size(kind, n, moduli)
    if len(data) != want:
        raise RejectedMessage(sender, f"{what}: {len(data)} bytes, expected exactly {want}")
