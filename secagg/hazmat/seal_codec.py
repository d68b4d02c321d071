"""The TenSEAL/SEAL codec: contexts, seeded key generation, compact ciphertexts, checked loading.

.. danger:: Part of :mod:`secagg.hazmat`. This module does exactly what it is asked: it will
   decrypt any ciphertext it is handed and return the exact, unrounded decoding, which leaks the
   secret key (Li and Micciancio, "On the Security of Homomorphic Encryption on Approximate
   Numbers", EUROCRYPT 2021). Only :mod:`secagg.ckks` may use it: the recipe decrypts only the
   round's aggregate and rounds the result before it leaves the client.

What it relies on from SEAL (bundled in TenSEAL as ``tenseal.sealapi``), never reimplemented:

* ``KeyGenerator`` over a context whose random generator is ``Blake2xbPRNGFactory(seed)``: the
  secret key is a deterministic function of a 64-byte seed, so the key ceremony moves 64 sealed
  bytes and the secret key is never serialised anywhere.
* ``Encryptor.encrypt_symmetric`` returning a ``Serializable``: SEAL replaces the uniformly random
  polynomial ``c1`` with the PRNG seed it was expanded from, halving the ciphertext.
* ``Ciphertext.load`` (re-expands the seed, checks coefficients are reduced mod q) and
  ``Evaluator.add_inplace``; both need the public parameters only.
* ``Ciphertext.save`` and the zstd that SEAL itself links (``ZSTD_decompress``, exported by
  TenSEAL's ``_sealapi_cpp`` module) for :meth:`SealSession.coefficients`, a read-only copy of a
  loaded ciphertext's RNS coefficients (the CKKS upload sketches of :mod:`secagg.ckks.sketch`).

TenSEAL's bindings serialise through file paths only; the bytes go through an anonymous
in-memory file (``memfd_create``), never through the disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from secagg.errors import InvalidParameter
from secagg.hazmat.handles import SecretBytes, Unpicklable

__all__ = [
    "KEY_SEED_BYTES",
    "CiphertextRejected",
    "CoefficientEmbedding",
    "SealKeys",
    "SealSession",
    "max_blob_bytes",
    "seal_primes",
]

KEY_SEED_BYTES = 64  # SEAL's prng_seed_type: 8 x uint64
_SEAL_MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr mode, reserved, size
_MAX_CIPHERTEXT_POLYS = 2
_DYN_ARRAY_PREFIX = _HEADER.size + 8  # a DynArray's own SEAL header, then its u64 element count
_PRNG_BLAKE2XB = 1  # SEAL's prng_type::blake2xb, the generator a seeded ciphertext names


class _Zstd:
    """``ZSTD_decompress`` from the zstd that SEAL links (TenSEAL exports it); loaded once."""

    _lib: Any = None

    @classmethod
    def decompress_into(cls, src: bytes, dst: npt.NDArray[np.uint8], *, what: str) -> int:
        if cls._lib is None:
            path = getattr(sys.modules.get(seal.Ciphertext.__module__), "__file__", None)
            try:
                lib = ctypes.CDLL(path)
                lib.ZSTD_decompress.restype = ctypes.c_size_t
                lib.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                                                ctypes.c_size_t]
                lib.ZSTD_isError.restype = ctypes.c_uint
                lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
            except (OSError, AttributeError, TypeError):
                raise InvalidParameter(
                    "this TenSEAL build does not export SEAL's zstd (ZSTD_decompress); reading "
                    "ciphertext coefficients needs TenSEAL 0.3's wheels"
                ) from None
            cls._lib = lib
        n = int(cls._lib.ZSTD_decompress(dst.ctypes.data, dst.size, src, len(src)))
        if cls._lib.ZSTD_isError(n):
            raise CiphertextRejected(f"{what}: its zstd payload does not decompress")
        return n

    @classmethod
    def decompress(cls, src: bytes, capacity: int, *, what: str = "a SEAL object") -> bytes:
        """The decompressed bytes (at most ``capacity``)."""
        dst = np.empty(capacity, dtype=np.uint8)
        n = cls.decompress_into(src, dst, what=what)
        return dst[:n].tobytes()


class CiphertextRejected(InvalidParameter):
    """A serialised ciphertext does not match the round's parameters; says which rule failed."""


class _MemFile:
    """A path SEAL's ``std::fstream`` can open, backed by anonymous memory where possible."""

    def __init__(self) -> None:
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        if hasattr(os, "memfd_create"):
            self._fd = os.memfd_create("secagg-seal", os.MFD_CLOEXEC)
            self.path = f"/proc/self/fd/{self._fd}"
        else:  # pragma: no cover - non-Linux fallback: a private temporary directory
            self._dir = tempfile.TemporaryDirectory(prefix="secagg-seal-")
            self.path = str(Path(self._dir.name) / "blob")
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def read(self) -> bytes:
        size = os.fstat(self._fd).st_size
        return os.pread(self._fd, size, 0)

    def write(self, data: bytes) -> None:
        # Overwrite in place and trim: cheaper than truncating to zero (no page re-faults).
        os.pwrite(self._fd, data, 0)
        if os.fstat(self._fd).st_size != len(data):
            os.ftruncate(self._fd, len(data))

    def close(self) -> None:
        os.close(self._fd)
        if self._dir is not None:  # pragma: no cover
            self._dir.cleanup()

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            self.close()


def _encryption_parameters(n: int, bits: Sequence[int]) -> Any:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(n)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(n, list(bits)))
    return parms


def _context(parms: Any) -> Any:
    ctx = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise InvalidParameter(f"SEAL rejected the CKKS parameters: {ctx.parameters_error_message()}")
    return ctx


@functools.cache
def seal_primes(n: int, bits: tuple[int, ...]) -> tuple[int, ...]:
    """The primes SEAL picks for ``CoeffModulus::Create(n, bits)`` (each the largest prime below
    ``2^b`` that is 1 mod 2n): the values every party of a round reduces by."""
    return tuple(int(q.value()) for q in seal.CoeffModulus.Create(n, list(bits)))


class CoefficientEmbedding:
    """Real vectors as polynomial *coefficients* through SEAL's own slot encoder.

    SEAL's CKKS encoder takes ``N/2`` complex slots ``z`` and builds the plaintext
    ``round(scale * sigma^-1(z))``, where ``sigma`` is the canonical embedding: slot ``i`` is the
    polynomial evaluated at ``zeta^(3^i mod 2N)``, ``zeta = exp(i pi / N)`` (SEAL >= 3.6's slot
    order). Handing it ``z = sigma(c)`` for a real vector ``c`` of ``N`` values makes the plaintext
    ``round(scale * c)`` coefficient by coefficient, and decoding a decryption and applying
    ``sigma^-1`` returns ``(sum of plaintexts + noise) / scale`` coefficient by coefficient. The
    encryption noise then stays what it is per coefficient (sigma 3.2) instead of being summed over
    ``N`` coefficients into every slot (``3.2 * sqrt(N/2)`` per real): about 6 bits of precision for
    the same modulus at N=8192. Both maps are float64 FFTs (numpy); their rounding error is ~1e-16
    relative, far below the integer rounding of the encoder. :meth:`self_test` checks the slot
    order against the linked SEAL (a plaintext built at scale 1 from fractional values must decode
    to their exact rounding), so a SEAL that orders slots differently fails loudly.
    """

    __slots__ = ("_n", "_pos", "_twist")

    def __init__(self, n: int) -> None:
        self._n = n
        gen = np.array([pow(3, i, 2 * n) for i in range(n // 2)], dtype=np.int64)
        self._pos = (gen - 1) // 2  # index m of zeta^(2m+1) in the odd-power FFT
        self._twist = np.exp(1j * np.pi * np.arange(n) / n)

    def slots(self, coefficients: npt.NDArray[np.float64]) -> npt.NDArray[np.complex128]:
        """``sigma(c)``: the ``N/2`` slot values whose SEAL encoding has coefficients ``c``."""
        full = np.fft.ifft(coefficients * self._twist) * self._n
        out: npt.NDArray[np.complex128] = full[self._pos]
        return out

    def coefficients(self, slots: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``sigma^-1(z)``: the real coefficients of a decoded plaintext's slot values."""
        z = np.asarray(slots, dtype=np.complex128)
        full = np.empty(self._n, dtype=np.complex128)
        full[self._pos] = z
        full[self._n - 1 - self._pos] = np.conj(z)
        out: npt.NDArray[np.float64] = np.ascontiguousarray(
            (np.fft.fft(full) / self._n * np.conj(self._twist)).real)
        return out

    def self_test(self, encoder: Any, parms_id: Any) -> None:
        rng = np.random.default_rng(0)  # a fixed test pattern, not secret
        c = rng.uniform(-1000.0, 1000.0, self._n)
        plain = seal.Plaintext()
        encoder.encode(self.slots(c).tolist(), parms_id, 1.0, plain)
        back = self.coefficients(encoder.decode_complex(plain))
        if not np.allclose(back, np.round(c), rtol=0.0, atol=1e-6):
            raise InvalidParameter(
                "this SEAL orders CKKS slots differently from SEAL 3.6-4.x (generator 3); the "
                "coefficient encoding cannot be used with it"
            )


def max_blob_bytes(n: int, level_primes: int) -> int:
    """Upper bound on a serialised 2-polynomial ciphertext (with a little compression slack)."""
    return 2 * n * level_primes * 8 + 4096


class SealSession:
    """Public CKKS material for one parameter set: context, encoder, evaluator, checked I/O.

    Holds nothing secret, so the server may own one. ``level_primes`` picks the level every
    ciphertext of the round must be at.
    """

    def __init__(
        self,
        *,
        poly_modulus_degree: int,
        coeff_modulus_bits: Sequence[int],
        level_primes: int,
        scale_bits: int,
    ) -> None:
        self.n = poly_modulus_degree
        self.bits = tuple(coeff_modulus_bits)
        self.scale = float(2**scale_bits)
        self.context = _context(_encryption_parameters(self.n, self.bits))
        self.level_primes = level_primes
        self.parms_id = self._parms_id_with(level_primes)
        self.encoder = seal.CKKSEncoder(self.context)
        self.evaluator = seal.Evaluator(self.context)
        self._file = _MemFile()
        self._embedding: CoefficientEmbedding | None = None
        self._layout: _SeededLayout | None = None

    @property
    def embedding(self) -> CoefficientEmbedding:
        """The coefficient encoding for this ring (built and checked against SEAL once)."""
        if self._embedding is None:
            emb = CoefficientEmbedding(self.n)
            emb.self_test(self.encoder, self.parms_id)
            self._embedding = emb
        return self._embedding

    def _seeded_layout(self) -> _SeededLayout:
        if self._layout is None:
            self._layout = _SeededLayout(self)
        return self._layout

    def split_seeded(self, blob: bytes, *, what: str) -> tuple[npt.NDArray[np.uint64], bytes]:
        """``(c0, seed)`` of a seeded ciphertext SEAL serialised at the round's level: ``c0`` as
        ``(primes, N)`` uint64 residues and SEAL's 64-byte PRNG seed for ``c1``.

        The rest of SEAL's serialisation is fixed by the round's parameters; it is rebuilt from
        them and compared byte for byte, so :meth:`join_seeded` provably gives SEAL back the same
        object (and a SEAL layout change fails here, loudly)."""
        return self._seeded_layout().split(blob, what=what)

    def join_seeded(self, c0: npt.NDArray[np.uint64], seed: bytes) -> bytes:
        """SEAL's (uncompressed) serialisation of the seeded ciphertext ``(c0, seed)``: the inverse
        of :meth:`split_seeded`; :meth:`load` it to expand ``c1`` and check it."""
        return self._seeded_layout().join(c0, seed)

    def join_full(self, polys: npt.NDArray[np.uint64]) -> bytes:
        """SEAL's (uncompressed) serialisation of the full ciphertext with ``(2, primes, N)`` data."""
        return self._seeded_layout().join_full(polys)

    def _parms_id_with(self, primes: int) -> Any:
        data = self.context.first_context_data()
        while data is not None:
            if len(data.parms().coeff_modulus()) == primes:
                return data.parms_id()
            data = data.next_context_data()
        raise InvalidParameter(f"no level of the chain {list(self.bits)} has {primes} prime(s)")

    @property
    def slots(self) -> int:
        return int(self.encoder.slot_count())

    # -- public-material operations (safe on the server) --------------------------------------

    def load(self, blob: bytes, *, what: str) -> Any:
        """Parse and check one ciphertext; raise :class:`CiphertextRejected` naming the rule."""
        limit = max_blob_bytes(self.n, self.level_primes)
        if len(blob) < _HEADER.size or len(blob) > limit:
            raise CiphertextRejected(
                f"{what}: {len(blob)} bytes, outside [{_HEADER.size}, {limit}] for N={self.n} at "
                f"{self.level_primes} prime(s); re-encrypt with the round's preset"
            )
        magic, hsize, _, _, compr, _, size = _HEADER.unpack_from(blob)
        if magic != _SEAL_MAGIC or hsize != _HEADER.size or size != len(blob):
            raise CiphertextRejected(
                f"{what}: not a SEAL object of {len(blob)} bytes (truncated or corrupted header)"
            )
        if compr not in (0, 1, 2):
            raise CiphertextRejected(f"{what}: unknown compression mode {compr}")
        self._file.write(blob)
        ct = seal.Ciphertext()
        try:
            ct.load(self.context, self._file.path)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise CiphertextRejected(f"{what}: SEAL could not load it ({exc})") from None
        self._check(ct, what=what)
        return ct

    def _check(self, ct: Any, *, what: str) -> None:
        if ct.parms_id() != self.parms_id:
            primes = ct.coeff_modulus_size()
            rule = "level" if primes != self.level_primes else "parameters"
            raise CiphertextRejected(
                f"{what}: wrong {rule}: encoded with {primes} prime(s) under other parameters or "
                f"level; the round expects N={self.n}, q={list(self.bits)} at "
                f"{self.level_primes} prime(s)"
            )
        if ct.size() != _MAX_CIPHERTEXT_POLYS:
            raise CiphertextRejected(f"{what}: has {ct.size()} polynomials, expected 2")
        if ct.poly_modulus_degree() != self.n or not ct.is_ntt_form():
            raise CiphertextRejected(f"{what}: not a CKKS ciphertext for N={self.n}")
        if ct.scale != self.scale:
            raise CiphertextRejected(
                f"{what}: scale 2^{np.log2(ct.scale):.2f}, expected 2^{np.log2(self.scale):.0f}"
            )
        if not seal.is_valid_for(ct, self.context):
            raise CiphertextRejected(f"{what}: coefficients are not reduced modulo q")

    @property
    def level_moduli(self) -> tuple[int, ...]:
        """The primes of the round's level (what every ciphertext's coefficients are reduced by)."""
        data = self.context.get_context_data(self.parms_id)
        return tuple(int(q.value()) for q in data.parms().coeff_modulus())

    def coefficients(self, ct: Any, *, what: str = "ciphertext") -> npt.NDArray[np.uint64]:
        """A read-only copy of a loaded (full) ciphertext's data: ``(polys, primes, N)`` uint64.

        The values are SEAL's own RNS limbs in NTT form, each reduced modulo its prime, as
        :meth:`add_inplace` adds them. They come from :meth:`dump` (SEAL's serialisation) and
        SEAL's zstd; the layout is checked (sizes, the nested array header) and three
        coefficients are compared with SEAL's own element accessor, so a SEAL layout change
        fails loudly instead of returning wrong numbers. A seeded ``Serializable`` has no c1:
        :meth:`load` its bytes first.
        """
        polys, primes, n = int(ct.size()), int(ct.coeff_modulus_size()), int(ct.poly_modulus_degree())
        count = polys * primes * n
        raw = self.dump(ct)
        magic, hsize, _, _, compr, _, size = _HEADER.unpack_from(raw)
        if magic != _SEAL_MAGIC or hsize != _HEADER.size or size != len(raw):
            raise CiphertextRejected(f"{what}: SEAL wrote an unexpected header")
        payload = raw[_HEADER.size :]
        if compr == 0:
            body = np.frombuffer(payload, dtype=np.uint8)
        elif compr == 1:
            body = np.frombuffer(zlib.decompress(payload), dtype=np.uint8)
        elif compr == 2:
            body = np.empty(count * 8 + 4096, dtype=np.uint8)
            body = body[: _Zstd.decompress_into(payload, body, what=what)]
        else:
            raise CiphertextRejected(f"{what}: unknown compression mode {compr}")
        start = body.size - count * 8
        if start < _DYN_ARRAY_PREFIX:
            raise CiphertextRejected(f"{what}: serialisation is shorter than its {count} coefficients")
        inner = body[start - _DYN_ARRAY_PREFIX : start].tobytes()
        magic, hsize, _, _, _, _, size = _HEADER.unpack_from(inner)
        (elements,) = struct.unpack_from("<Q", inner, _HEADER.size)
        if magic != _SEAL_MAGIC or hsize != _HEADER.size or elements != count \
                or size != _DYN_ARRAY_PREFIX + count * 8:
            raise CiphertextRejected(f"{what}: unexpected SEAL ciphertext layout (a newer SEAL?)")
        out = body[start:].view("<u8").astype(np.uint64).reshape(polys, primes, n)
        for i in (0, count // 2, count - 1):
            if int(out.reshape(-1)[i]) != int(ct[i]):
                raise CiphertextRejected(f"{what}: coefficient {i} does not match SEAL's accessor")
        out.setflags(write=False)
        return out

    def add_inplace(self, acc: Any, other: Any) -> None:
        self.evaluator.add_inplace(acc, other)

    def dump(self, obj: Any) -> bytes:
        """Serialise a SEAL object: a full ciphertext (the aggregate) or a seeded ``Serializable``."""
        obj.save(self._file.path)
        return self._file.read()

    def keys_from_seed(self, seed: SecretBytes) -> SealKeys:
        """Rebuild the round's secret key from its 64-byte seed (see :class:`SealKeys`)."""
        return SealKeys(self, seed)


class SealKeys(Unpicklable):
    """The CKKS secret key, derived from a seed, with the encryptor and decryptor that use it.

    Redacted and unpicklable. The key itself never leaves: there is no export of the SEAL key,
    and the seed stays in the caller's :class:`SecretBytes`.
    """

    __slots__ = ("_decryptor", "_encryptor", "_session")

    def __init__(self, session: SealSession, seed: SecretBytes) -> None:
        raw = seed.expose_secret_bytes()
        if len(raw) != KEY_SEED_BYTES:
            raise InvalidParameter(f"CKKS key seed must be {KEY_SEED_BYTES} bytes, found {len(raw)}")
        words = list(struct.unpack("<8Q", raw))
        parms = _encryption_parameters(session.n, session.bits)
        parms.set_random_generator(seal.Blake2xbPRNGFactory(words))
        secret = seal.KeyGenerator(_context(parms)).secret_key()
        self._session = session
        self._encryptor = seal.Encryptor(session.context, secret)
        self._decryptor = seal.Decryptor(session.context, secret)

    def encrypt_coefficients(self, values: npt.NDArray[np.float64]) -> bytes:
        """Like :meth:`encrypt`, with the ``N`` reals as the plaintext's coefficients
        (:class:`CoefficientEmbedding`)."""
        s = self._session
        if values.shape != (s.n,):
            raise InvalidParameter(f"expected {s.n} coefficients, found {values.shape}")
        return self.encrypt(s.embedding.slots(values))

    def decrypt_coefficients(self, ct: Any) -> npt.NDArray[np.float64]:
        """Exact coefficient decoding of ``ct`` (inverse of :meth:`encrypt_coefficients`)."""
        return self._session.embedding.coefficients(self.decrypt_exact(ct))

    def encrypt(self, values: npt.NDArray[np.complex128]) -> bytes:
        """Encode ``values`` (one ciphertext's worth of complex slots) at the round's level and
        encrypt symmetrically; returns the seeded serialisation (c0 plus a PRNG seed)."""
        s = self._session
        if values.shape != (s.slots,):
            raise InvalidParameter(f"expected {s.slots} complex slots, found {values.shape}")
        plain = seal.Plaintext()
        s.encoder.encode(values.tolist(), s.parms_id, s.scale, plain)
        return s.dump(self._encryptor.encrypt_symmetric(plain))

    def decrypt_exact(self, ct: Any) -> npt.NDArray[np.complex128]:
        """Exact decoding of ``ct``. Leaks the key if released as is: round it first."""
        plain = seal.Plaintext()
        self._decryptor.decrypt(ct, plain)
        return np.asarray(self._session.encoder.decode_complex(plain), dtype=np.complex128)

    def __repr__(self) -> str:
        return "<SealKeys CKKS secret key: redacted>"



class _SeededLayout:
    """SEAL's serialisation of a 2-polynomial CKKS ciphertext at one level, field by field.

    ``Ciphertext::save``: parms_id (4 x u64), is_ntt_form (u8), size, N, primes (u64 each), scale
    (f64), correction factor (u64); the data as a nested ``DynArray`` (SEAL header, u64 count,
    the u64 residues, polynomial-major then prime-major). A seeded ciphertext stores c0 only in
    the array and then the seed as a nested SEAL object (header, prng type u8, 64-byte seed).
    """

    def __init__(self, session: SealSession) -> None:
        self.n, self.primes = session.n, session.level_primes
        probe = session.dump(seal.Ciphertext(session.context))  # SEAL's own header: its version
        magic, hsize, self.major, self.minor, _, _, _ = _HEADER.unpack_from(probe)
        if magic != _SEAL_MAGIC or hsize != _HEADER.size:
            raise InvalidParameter("this SEAL writes an unexpected serialisation header")
        self.prefix = (
            struct.pack("<4Q", *session.parms_id)
            + struct.pack("<BQQQdQ", 1, 2, self.n, self.primes, session.scale, 1)
        )
        self.c0_count = self.primes * self.n

    def _header(self, compr: int, size: int) -> bytes:
        return _HEADER.pack(_SEAL_MAGIC, _HEADER.size, self.major, self.minor, compr, 0, size)

    def _array(self, count: int) -> bytes:
        return self._header(0, _DYN_ARRAY_PREFIX + 8 * count) + struct.pack("<Q", count)

    def _seed(self, seed: bytes) -> bytes:
        return self._header(0, _HEADER.size + 1 + KEY_SEED_BYTES) + bytes([_PRNG_BLAKE2XB]) + seed

    def _outer(self, body: bytes) -> bytes:
        return self._header(0, _HEADER.size + len(body)) + body

    def join(self, c0: npt.NDArray[np.uint64], seed: bytes) -> bytes:
        if c0.shape != (self.primes, self.n) or len(seed) != KEY_SEED_BYTES:
            raise InvalidParameter(f"a seeded ciphertext is ({self.primes}, {self.n}) residues and "
                                   f"a {KEY_SEED_BYTES}-byte seed")
        return self._outer(self.prefix + self._array(self.c0_count)
                           + c0.astype("<u8", copy=False).tobytes() + self._seed(seed))

    def join_full(self, polys: npt.NDArray[np.uint64]) -> bytes:
        if polys.shape != (2, self.primes, self.n):
            raise InvalidParameter(f"a ciphertext is (2, {self.primes}, {self.n}) residues")
        return self._outer(self.prefix + self._array(2 * self.c0_count)
                           + polys.astype("<u8", copy=False).tobytes())

    def split(self, blob: bytes, *, what: str) -> tuple[npt.NDArray[np.uint64], bytes]:
        if len(blob) < _HEADER.size:
            raise CiphertextRejected(f"{what}: shorter than a SEAL header")
        magic, hsize, _, _, compr, _, size = _HEADER.unpack_from(blob)
        if magic != _SEAL_MAGIC or hsize != _HEADER.size or size != len(blob):
            raise CiphertextRejected(f"{what}: not a SEAL object of {len(blob)} bytes")
        payload = blob[_HEADER.size:]
        expect = len(self.prefix) + _DYN_ARRAY_PREFIX + 8 * self.c0_count + _HEADER.size + 1 \
            + KEY_SEED_BYTES
        if compr == 2:
            body = np.empty(expect + 1, dtype=np.uint8)
            body = body[: _Zstd.decompress_into(payload, body, what=what)]
            raw = body.tobytes()
        elif compr == 1:
            raw = zlib.decompress(payload)
        elif compr == 0:
            raw = payload
        else:
            raise CiphertextRejected(f"{what}: unknown compression mode {compr}")
        if len(raw) != expect:
            raise CiphertextRejected(f"{what}: {len(raw)} bytes of seeded ciphertext, expected {expect}")
        start = len(self.prefix) + _DYN_ARRAY_PREFIX
        c0 = np.frombuffer(raw, dtype="<u8", count=self.c0_count, offset=start)
        seed = raw[expect - KEY_SEED_BYTES:]
        seed_header = self._seed(seed)[:-KEY_SEED_BYTES]
        if raw[:start] != self.prefix + self._array(self.c0_count) \
                or raw[start + 8 * self.c0_count: expect - KEY_SEED_BYTES] != seed_header:
            raise CiphertextRejected(f"{what}: not a seeded ciphertext of the round's parameters and "
                                     "level (or a SEAL serialisation this codec does not know)")
        return c0.astype(np.uint64).reshape(self.primes, self.n), seed
