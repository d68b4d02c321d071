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
    "SealKeys",
    "SealSession",
    "max_blob_bytes",
]

KEY_SEED_BYTES = 64  # SEAL's prng_seed_type: 8 x uint64
_SEAL_MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr mode, reserved, size
_MAX_CIPHERTEXT_POLYS = 2
_DYN_ARRAY_PREFIX = _HEADER.size + 8  # a DynArray's own SEAL header, then its u64 element count


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

