"""Verifiable aggregate: secret random linear sketches of the ciphertexts.

A malicious server could hand a client any ciphertext as "the aggregate": one client's upload
(added to itself ``n`` times so the contributor count still checks out), a sum missing someone, a
tweaked sum. Decrypting and releasing it would hand the server a single update, or a decryption
of a ciphertext of its choosing. The sketch check stops that before anything is decrypted.

**Construction.** From the round's secret seed (held by every enterprise in dealer mode, never by
the server) each client derives, with HKDF bound to (protocol, version, round, config digest,
purpose ``"sketch"``) a key, and expands it with AES-256-CTR (:class:`secagg.hazmat.prg.Keystream`)
into ``P`` projection vectors ``R_p`` (``P`` = :func:`projections_for` the round's primes: 2 for
the presets' 60-bit primes, more for the narrower primes of packed rounds) with one entry per
coefficient of every ciphertext of the round: both polynomials ``c0, c1`` of every chunk, every RNS prime
``q_l`` of the round's level (one 60-bit prime for ``compact``). Entries for prime ``q_l`` are
uniform on ``[0, 2^(b_l - 1))`` where ``b_l`` is the bit length of ``q_l``, so they are distinct
residues mod ``q_l``. A client's sketch is ``s = (<R_p, ct|q_l> mod q_l)_{p, l}``, computed over
the *full* ciphertext it uploads (the seeded upload is expanded by SEAL's own loader to get ``c1``),
exactly in numpy (20-bit x 30-bit partial products summed in blocks of 8192, below 2^63).
It is sealed with ChaCha20-Poly1305 under a second key (purpose ``"sketch-seal"``) with the round,
the client id and the digest of its ciphertexts as associated data, and the upload's identity
signature covers the sealed sketch. The server learns nothing about ``R``.

Before decrypting, a client checks every announced contributor's signature and sealed sketch and
that ``<R_p, aggregate> = sum of the contributors' sketches (mod q_l)`` for every ``p, l``.

**Soundness.** Let ``ct'`` be what the server announces and ``S`` the true sum of the announced
contributors' uploads. If ``ct' != S`` there is a prime ``q_l`` and a coordinate ``j`` with
``d_j != 0`` where ``d = (ct' - S) mod q_l``. The server chooses ``ct'`` without knowing ``R``
(it sees only sealed sketches), and for any fixed other entries ``<R_p, d> = 0 (mod q_l)`` holds
for at most one value of ``R_p[j]``, so with probability at most ``2^-(b_l - 1)`` per projection
(at most ``1/q_l`` per projection were the entries uniform mod ``q_l``; ours are uniform on a
range just below ``q_l``). The ``P`` projections are independent: **a forged aggregate passes one
client's check with probability at most 2^(-P (b - 1)) <= 2^-118**: ``P = 2`` for the 60-bit
primes of the presets, ``P = ceil(118 / (b - 1))`` for narrower primes (:func:`projections_for`:
``P = 4``, 2^-120, for the 31-bit prime of a packed round).
A client checks at most one aggregate per round and a failed check ends its session,
so a server gets one try per client per round, and ``R`` is fresh every round (fresh seed): over
``n`` clients the chance that any forgery is accepted is at most about ``n * 2^-118``. (``R``
comes from AES-256-CTR under an HKDF key, so the figures hold up to the advantage of telling that
keystream from random; the server never sees the keystream or the key.)

**Who knows R.** Every enterprise of the round does. An enterprise colluding with the server can
give it ``R`` and so let it forge an aggregate that passes; in dealer mode that enterprise also
holds the decryption key and can decrypt every upload the server shows it, so nothing is lost
that was not already lost (SECURITY.md: dealer mode trusts every enterprise against collusion).
A roster member can also seal a sketch that does not match its own ciphertexts: the server
cannot tell (it does not know ``R``) and every honest client then refuses the aggregate. That is
a denial of service by a member, like a well-formed upload of garbage values, not a leak; a
sealed sketch that does not even open is attributed to its (signing) contributor.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from secagg.ckks.checks import Check, CheckFailed
from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.messages import Receipt
from secagg.ckks.wire import u32, u64
from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.hazmat.aead import NONCE_BYTES, TAG_BYTES, open_sealed, seal
from secagg.hazmat.handles import SecretBytes, Unpicklable
from secagg.hazmat.kdf import Purpose
from secagg.hazmat.prg import Keystream

if TYPE_CHECKING:
    from secagg.ckks.keys import CKKSKey
    from secagg.hazmat.seal_codec import SealSession

__all__ = [
    "PROJECTIONS",
    "SKETCH_PURPOSE",
    "SKETCH_SEAL_PURPOSE",
    "SOUNDNESS_BITS",
    "Sketcher",
    "open_sketch",
    "projections_for",
    "seal_sketch",
    "sealed_sketch_bytes",
    "soundness_bits",
    "verify_aggregate",
]

PROJECTIONS = 2
SOUNDNESS_BITS = 118  # what 2 projections give over 60-bit primes; narrower primes take more
SKETCH_PURPOSE = Purpose.SKETCH
SKETCH_SEAL_PURPOSE = Purpose.SKETCH_SEAL
_PART_BITS = 20  # coefficient parts: three of 20 bits cover a coefficient < 2^60
_R_PART_BITS = 30  # projection entries: two parts, a low one of up to 30 bits and the rest
_BLOCK = 8192  # (2^30 - 1)(2^20 - 1) * 8192 < 2^63: a block's sum cannot overflow uint64
_LOW32 = np.uint64(0xFFFFFFFF)


def projections_for(moduli: Sequence[int]) -> int:
    """How many projections keep a forgery's chance at most 2^-118 for these primes: 2 for 60-bit
    primes (the presets), ``ceil(118 / (b - 1))`` for the narrowest ``b``-bit prime otherwise
    (4 for the 31-bit prime of a packed round)."""
    return max(PROJECTIONS, -(-SOUNDNESS_BITS // (min(moduli).bit_length() - 1)))


def soundness_bits(moduli: Sequence[int], projections: int = PROJECTIONS) -> int:
    """-log2 of the chance that one forged aggregate passes one client's check."""
    return projections * (min(moduli).bit_length() - 1)


class Sketcher(Unpicklable):
    """The running sketch ``(<R_p, ct|q_l> mod q_l)`` of one sequence of ciphertexts.

    Feed the ciphertexts' coefficients (:meth:`secagg.hazmat.seal_codec.SealSession.coefficients`,
    shape ``(2, L, N)``) chunk by chunk in order with :meth:`add`; :meth:`value` then gives the
    ``P * L`` values, projection-major. ``R`` is drawn from the keystream as the chunks arrive,
    so the same key gives the same ``R`` for an upload and for the aggregate: per ciphertext,
    ``2 * L * N * P * 2`` little-endian uint32 words in the order (polynomial, prime, block of up
    to 8192 coefficients, projection, part, coefficient); an entry is ``low + 2^30 * high`` with
    ``low`` the word's low ``min(30, b - 1)`` bits and ``high`` the next word's low ``b - 31`` bits.
    """

    __slots__ = ("_acc_hi", "_acc_lo", "_block", "_done", "_masks", "_moduli", "_n", "_p", "_stream",
                 "_words")

    def __init__(self, key: SecretBytes, moduli: Sequence[int], n: int,
                 projections: int = PROJECTIONS) -> None:
        if not moduli or any(not 2**20 < q < 2**60 for q in moduli):
            raise InvalidParameter(f"sketch moduli must be primes in (2^20, 2^60), found {list(moduli)}")
        if n < 1 or n & (n - 1):
            raise InvalidParameter(f"ring size must be a power of two, found {n}")
        if projections < 1:
            raise InvalidParameter(f"a sketch needs >= 1 projection, found {projections}")
        self._moduli = tuple(int(q) for q in moduli)
        self._p = projections
        self._n = n
        self._block = min(n, _BLOCK)
        self._stream = Keystream(key)
        levels = len(self._moduli)
        masks = np.zeros((1, levels, 1, projections * 2, 1), dtype=np.uint64)
        for i, q in enumerate(self._moduli):
            bits = q.bit_length() - 1  # entries in [0, 2^bits), 2^bits < q
            low = min(_R_PART_BITS, bits)
            masks[0, i, 0, 0::2, 0] = (1 << low) - 1  # part 0: the low bits of an entry
            masks[0, i, 0, 1::2, 0] = (1 << (bits - low)) - 1  # part 1: the rest, times 2^30
        self._masks = masks
        self._words = np.empty(projections * levels * 2 * 2 * n, dtype=np.uint32)
        self._acc_hi = np.zeros((levels, projections * 2, 3), dtype=np.uint64)
        self._acc_lo = np.zeros((levels, projections * 2, 3), dtype=np.uint64)
        self._done = False

    def __repr__(self) -> str:
        return f"<Sketcher moduli={len(self._moduli)} N={self._n} key=redacted>"

    def _draw(self) -> npt.NDArray[np.uint32]:
        out, step = self._words, Keystream.CHUNK_WORDS
        for start in range(0, out.size, step):
            stop = min(start + step, out.size)
            out[start:stop] = self._stream.next_words(stop - start)
        return out

    def add(self, coefficients: npt.NDArray[np.uint64]) -> None:
        """Fold one ciphertext (its ``(2, L, N)`` coefficients, each reduced mod its prime) in."""
        if self._done:
            raise InvalidParameter("the sketch was already read; start a new Sketcher")
        levels, n, blk = len(self._moduli), self._n, self._block
        if coefficients.shape != (2, levels, n) or coefficients.dtype != np.uint64:
            raise InvalidParameter(
                f"sketch input must be uint64 of shape (2, {levels}, {n}), found "
                f"{coefficients.dtype} {coefficients.shape}"
            )
        # R, in keystream order: (poly, prime, block, projection * 2 + part, coefficient in block)
        r = self._draw().reshape(2, levels, n // blk, self._p * 2, blk).astype(np.uint64)
        r &= self._masks
        # X: the coefficients in three 20-bit parts: (poly, prime, block, part, coefficient in block)
        low = np.uint64((1 << _PART_BITS) - 1)
        a = coefficients.reshape(2, levels, n // blk, 1, blk)
        x = np.empty((2, levels, n // blk, 3, blk), dtype=np.uint64)
        np.bitwise_and(a[:, :, :, 0], low, out=x[:, :, :, 0])
        np.right_shift(a[:, :, :, 0], np.uint64(_PART_BITS), out=x[:, :, :, 1])
        x[:, :, :, 1] &= low
        np.right_shift(a[:, :, :, 0], np.uint64(2 * _PART_BITS), out=x[:, :, :, 2])
        sums = np.einsum("plbkn,plban->plbka", r, x)  # each < 2^63: exact in uint64
        self._acc_hi += (sums >> np.uint64(32)).sum(axis=(0, 2), dtype=np.uint64)
        self._acc_lo += (sums & _LOW32).sum(axis=(0, 2), dtype=np.uint64)

    def value(self) -> tuple[int, ...]:
        """``(<R_p, ct|q_l> mod q_l)`` for p in projections, l in primes (projection-major)."""
        self._done = True
        hi, lo = self._acc_hi.tolist(), self._acc_lo.tolist()
        out = []
        for p in range(self._p):
            for level, q in enumerate(self._moduli):
                total = 0
                for b in range(2):
                    for a in range(3):
                        part = (hi[level][2 * p + b][a] << 32) + lo[level][2 * p + b][a]
                        total += part << (_R_PART_BITS * b + _PART_BITS * a)
                out.append(total % q)
        return tuple(out)


def sealed_sketch_bytes(levels: int, projections: int = PROJECTIONS) -> int:
    """Size of one sealed sketch: nonce, ``P * L`` u64 values, tag."""
    return NONCE_BYTES + 8 * projections * levels + TAG_BYTES


def _aad(config: CKKSRoundConfig, client_id: int, chunks_digest: bytes) -> bytes:
    return b"secagg-ckks/v2/sketch" + config.digest() + u64(config.round) + u32(client_id) + chunks_digest


def seal_sketch(key: SecretBytes, config: CKKSRoundConfig, client_id: int, chunks_digest: bytes,
                values: Sequence[int]) -> bytes:
    """AEAD-seal ``values`` under the round's sketch-seal key, bound to the client's upload."""
    return seal(key, struct.pack(f">{len(values)}Q", *values), _aad(config, client_id, chunks_digest))


def open_sketch(key: SecretBytes, config: CKKSRoundConfig, receipt: Receipt, levels: int,
                projections: int = PROJECTIONS) -> tuple[int, ...]:
    """Open one contributor's sealed sketch; :class:`AuthenticationFailed` if it does not open."""
    what = f"sealed sketch of client {receipt.client_id}"
    if len(receipt.sealed_sketch) != sealed_sketch_bytes(levels, projections):
        raise AuthenticationFailed(what)
    raw = open_sealed(key, receipt.sealed_sketch, _aad(config, receipt.client_id, receipt.chunks_digest),
                      what=what)
    return struct.unpack(f">{projections * levels}Q", raw)


def verify_aggregate(key: CKKSKey, config: CKKSRoundConfig, receipts: Sequence[Receipt],
                     ciphertexts: Sequence[Any], session: SealSession,
                     moduli: Sequence[int]) -> None:
    """Raise :class:`CheckFailed` unless ``<R, aggregate>`` equals the sum of the announced
    contributors' sealed sketches, mod every prime at the level (see the module docstring)."""
    levels, projections = len(moduli), projections_for(moduli)
    seal_key = key.derive(config, SKETCH_SEAL_PURPOSE)
    expected = [0] * (projections * levels)
    for receipt in receipts:
        try:
            values = open_sketch(seal_key, config, receipt, levels, projections)
        except AuthenticationFailed:
            raise CheckFailed(
                "aggregate", Check.SKETCH_SEAL,
                f"the sealed sketch of client {receipt.client_id} does not open although that "
                f"client signed it: client {receipt.client_id} is faulty or malicious",
            ) from None
        expected = [e + v for e, v in zip(expected, values, strict=True)]
    sketcher = Sketcher(key.derive(config, SKETCH_PURPOSE), list(moduli), session.n, projections)
    for ct in ciphertexts:
        sketcher.add(session.coefficients(ct, what="aggregate ciphertext"))
    got = sketcher.value()
    mods = [q for _ in range(projections) for q in moduli]
    if any((e - g) % q for e, g, q in zip(expected, got, mods, strict=True)):
        raise CheckFailed(
            "aggregate", Check.SKETCH,
            f"the aggregate is not the sum of the {len(receipts)} announced uploads (its "
            "secret projection differs from the sum of their sketches); refusing to decrypt",
        )
