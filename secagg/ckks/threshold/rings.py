"""RNS residues in and out of SEAL objects, for the threshold CKKS core.

.. danger:: Hazmat-level helper of :mod:`secagg.ckks.threshold`: it builds SEAL secret keys from
   raw residues and reads decryptions exactly. Only the threshold recipe uses it.

TenSEAL's ``sealapi`` gives no pointer to an object's coefficients (``Ciphertext.data()`` returns
the first coefficient's value), so residues move through SEAL's own serialisation: objects are
written with ``compr_mode none`` in SEAL's layout and loaded with SEAL's checked ``load`` (which
validates parameters and that every residue is reduced), and read back through ``save`` and the
zstd SEAL links. Every ring operation (sampling, NTT, products) stays in SEAL:

* :meth:`RingContext.common_a`: a uniform polynomial expanded by SEAL from a 64-byte seed, by
  loading a *seeded* ciphertext (SEAL's own compact form: ``c0``, then the PRNG type and seed from
  which SEAL's ``sample_poly_uniform`` re-expands ``c1``). With a public seed that is the common
  ``a`` of a chunk; with a fresh secret seed it is a uniformly random secret polynomial.
* :meth:`RingContext.to_ntt`: SEAL's ``transform_to_ntt`` of coefficient-form polynomials.
* products ``a * s`` come from ``Decryptor.decrypt`` of ``(c0, a)`` under a key built with
  :meth:`RingContext.secret_key` (``c0 + a*s`` in NTT form).

Sums and differences of residues modulo each prime are done here in numpy (:func:`add_mod`).
Functions that a generic codec would want (reading a plaintext/secret key, building SEAL objects
from residues, expanding a seed) live here rather than in :mod:`secagg.hazmat.seal_codec`.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from secagg.ckks.threshold.params import ThresholdParams
from secagg.errors import InvalidParameter
from secagg.hazmat.seal_codec import (
    CoefficientEmbedding,  # the compact wire format's, shared
    _Zstd,  # SEAL's own zstd, loaded once for both
)

__all__ = ["CoefficientEmbedding", "RingContext", "add_mod", "neg_mod", "sub_mod"]

_MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr mode, reserved, size
_CT_META = struct.Struct("<4QBQQQdQ")  # parms_id, is_ntt, size, N, primes, scale, correction
_PT_META = struct.Struct("<4QQd")  # parms_id, coeff_count, scale
_PRNG_BLAKE2XB = 1
SEED_BYTES = 64

Residues = npt.NDArray[np.uint64]


def add_mod(x: Residues, y: Residues, moduli: Residues) -> Residues:
    """(x + y) mod q_j, residues of shape (..., primes, N) below primes < 2^62."""
    q = moduli[:, None]
    s = x + y
    return np.where(s >= q, s - q, s)


def sub_mod(x: Residues, y: Residues, moduli: Residues) -> Residues:
    q = moduli[:, None]
    return np.where(x >= y, x - y, x + (q - y))


def neg_mod(x: Residues, moduli: Residues) -> Residues:
    q = moduli[:, None]
    return np.where(x == 0, x, q - x)


class RingContext:
    """SEAL context and residue I/O for one :class:`ThresholdParams`. Holds nothing secret."""

    def __init__(self, params: ThresholdParams) -> None:
        self.params = params
        self.n = params.poly_modulus_degree
        p = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        p.set_poly_modulus_degree(self.n)
        p.set_coeff_modulus(seal.CoeffModulus.Create(self.n, list(params.coeff_modulus_bits)))
        self.context = seal.SEALContext(p, True, seal.SEC_LEVEL_TYPE.TC128)
        if not self.context.parameters_set():
            raise InvalidParameter(f"SEAL rejected the parameters: "
                                   f"{self.context.parameters_error_message()}")
        self.parms_id = self.context.first_parms_id()
        self.key_parms_id = self.context.key_parms_id()
        data = self.context.get_context_data(self.parms_id)
        self.moduli = np.array([q.value() for q in data.parms().coeff_modulus()], dtype=np.uint64)
        key = self.context.key_context_data()
        self.key_moduli = np.array([q.value() for q in key.parms().coeff_modulus()],
                                   dtype=np.uint64)
        self.primes = int(self.moduli.size)
        self.scale = float(2.0 ** params.scale_bits)
        self.encoder = seal.CKKSEncoder(self.context)
        self.evaluator = seal.Evaluator(self.context)
        self._fd = os.memfd_create("secagg-threshold", os.MFD_CLOEXEC)
        self._path = f"/proc/self/fd/{self._fd}"
        # SEAL's version bytes, for the headers we write (taken from an object SEAL wrote)
        probe = seal.Plaintext()
        self.encoder.encode([0.0], self.parms_id, self.scale, probe)
        probe.save(self._path)
        head = os.pread(self._fd, _HEADER.size, 0)
        self._version = (head[3], head[4])
        self._seeded_prefix: bytes | None = None
        self._embedding = None
        self._codec: Any = None
        if params.embedding == "coefficients":
            self._embedding = CoefficientEmbedding(self.n)
            self._embedding.self_test(self.encoder, self.parms_id)  # SEAL's slot order, checked

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.close(self._fd)

    @property
    def codec(self) -> Any:
        """The :class:`~.digits.DigitCodec` of a ring with the digit embedding (built once)."""
        if self._codec is None:
            from secagg.ckks.threshold.digits import DigitCodec  # it builds on this module

            self._codec = DigitCodec(self)
        return self._codec

    @property
    def slots(self) -> int:
        return self.n // 2

    # -- raw serialisation ------------------------------------------------------------------

    def _header(self, size: int) -> bytes:
        return _HEADER.pack(_MAGIC, _HEADER.size, self._version[0], self._version[1], 0, 0, size)

    def _dynarray(self, values: Residues) -> bytes:
        payload = struct.pack("<Q", values.size) + np.ascontiguousarray(values, "<u8").tobytes()
        return self._header(_HEADER.size + len(payload)) + payload

    def _object(self, body: bytes) -> bytes:
        return self._header(_HEADER.size + len(body)) + body

    def _load(self, obj: Any, blob: bytes) -> Any:
        os.pwrite(self._fd, blob, 0)
        os.ftruncate(self._fd, len(blob))
        obj.load(self.context, self._path)
        return obj

    def _body(self, obj: Any, words: int) -> bytes:
        obj.save(self._path)
        raw = os.pread(self._fd, os.fstat(self._fd).st_size, 0)
        magic, hsize, _, _, compr, _, size = _HEADER.unpack_from(raw)
        if magic != _MAGIC or hsize != _HEADER.size or size != len(raw):
            raise InvalidParameter("SEAL wrote an unexpected header")
        if compr == 0:
            return raw[_HEADER.size:]
        if compr == 2:
            return _Zstd.decompress(raw[_HEADER.size:], words * 8 + 4096)
        raise InvalidParameter(f"unexpected SEAL compression mode {compr}")

    def _tail(self, obj: Any, count: int) -> Residues:
        body = self._body(obj, count)
        start = len(body) - count * 8
        magic, _hsize, _, _, _, _, size = _HEADER.unpack_from(body, start - 24)
        (elements,) = struct.unpack_from("<Q", body, start - 8)
        if magic != _MAGIC or elements != count or size != 24 + count * 8:
            raise InvalidParameter("unexpected SEAL layout (a newer SEAL?)")
        return np.frombuffer(body, dtype="<u8", offset=start, count=count).astype(np.uint64)

    # -- readers ----------------------------------------------------------------------------

    def read_ct(self, ct: Any) -> Residues:
        """A full ciphertext's residues, shape (2, primes, N)."""
        k = int(ct.coeff_modulus_size())
        out = self._tail(ct, 2 * k * self.n).reshape(2, k, self.n)
        for i in (0, k * self.n + 1, 2 * k * self.n - 1):
            if int(out.reshape(-1)[i]) != int(ct[i]):
                raise InvalidParameter("ciphertext residue does not match SEAL's accessor")
        return out

    def read_plain(self, pt: Any) -> Residues:
        """An NTT-form plaintext's residues at the data level, shape (primes, N)."""
        count = int(pt.coeff_count())
        out = self._tail(pt, count).reshape(-1, self.n)
        if int(out[0, 3]) != int(pt[3]):
            raise InvalidParameter("plaintext residue does not match SEAL's accessor")
        return out

    def read_secret(self, sk: Any) -> Residues:
        """A SEAL secret key's NTT residues at the data level, shape (primes, N)."""
        full = self._tail(sk, self.key_moduli.size * self.n).reshape(-1, self.n)
        return full[: self.primes].copy()

    # -- builders ---------------------------------------------------------------------------

    def ciphertext(self, polys: Residues, *, ntt: bool = True) -> Any:
        """Load (c0, c1) residues, shape (2, primes, N), as a ciphertext at the data level."""
        polys = np.asarray(polys, dtype=np.uint64)
        if polys.shape != (2, self.primes, self.n):
            raise InvalidParameter(f"expected residues of shape (2, {self.primes}, {self.n})")
        meta = _CT_META.pack(*self.parms_id, int(ntt), 2, self.n, self.primes, self.scale, 1)
        return self._load(seal.Ciphertext(), self._object(meta + self._dynarray(polys)))

    def plaintext(self, residues: Residues) -> Any:
        """An NTT-form plaintext at the data level with the round's scale (for decoding)."""
        residues = np.asarray(residues, dtype=np.uint64)
        meta = _PT_META.pack(*self.parms_id, residues.size, self.scale)
        return self._load(seal.Plaintext(), self._object(meta + self._dynarray(residues)))

    def secret_key(self, residues: Residues) -> Any:
        """A SEAL secret key whose data-level NTT residues are ``residues`` (primes, N).

        The special prime's residues are zero: no key switching happens, and decryption at the
        data level reads only the data primes."""
        full = np.zeros((self.key_moduli.size, self.n), dtype=np.uint64)
        full[: self.primes] = residues
        meta = _PT_META.pack(*self.key_parms_id, full.size, 1.0)
        return self._load(seal.SecretKey(), self._object(meta + self._dynarray(full)))

    def common_a(self, seed: bytes) -> Any:
        """The ciphertext ``(0, a)`` with ``a`` expanded by SEAL (Blake2xb) from ``seed``."""
        if len(seed) != SEED_BYTES:
            raise InvalidParameter(f"a polynomial seed is {SEED_BYTES} bytes, found {len(seed)}")
        if self._seeded_prefix is None:
            meta = _CT_META.pack(*self.parms_id, 1, 2, self.n, self.primes, self.scale, 1)
            c0 = np.zeros(self.primes * self.n, dtype=np.uint64)
            info = self._object(bytes([_PRNG_BLAKE2XB]) + b"\0" * SEED_BYTES)
            blob = self._object(meta + self._dynarray(c0) + info)
            self._seeded_prefix = blob[:-SEED_BYTES]
        return self._load(seal.Ciphertext(), self._seeded_prefix + seed)

    def sum_uniform(self, seeds: Iterable[bytes]) -> Residues:
        """Residues (primes, N) of the sum of the uniform polynomials of ``seeds`` (SEAL adds)."""
        acc = None
        for seed in seeds:
            ct = self.common_a(seed)
            if acc is None:
                acc = ct
            else:
                self.evaluator.add_inplace(acc, ct)
        if acc is None:
            return np.zeros((self.primes, self.n), dtype=np.uint64)
        out: Residues = self.read_ct(acc)[1]
        return out

    def uniform(self, seed: bytes) -> Residues:
        """The residues (primes, N) of the uniform polynomial SEAL expands from ``seed``."""
        out: Residues = self.read_ct(self.common_a(seed))[1]
        return out

    def to_ntt(self, coeffs: Residues) -> Residues:
        """SEAL's NTT of two coefficient-form polynomials, shape (2, primes, N).

        SEAL refuses a ciphertext whose second polynomial is zero ("transparent"); callers pass
        two random polynomials (two smudging draws)."""
        ct = self.ciphertext(coeffs, ntt=False)
        self.evaluator.transform_to_ntt_inplace(ct)
        return self.read_ct(ct)

    def from_ntt(self, ntt: Residues) -> Residues:
        """SEAL's inverse NTT of two NTT-form polynomials, shape (2, primes, N) (the second must
        not be zero, see :meth:`to_ntt`)."""
        ct = self.ciphertext(ntt, ntt=True)
        self.evaluator.transform_from_ntt_inplace(ct)
        return self.read_ct(ct)

    def decrypt(self, decryptor: Any, ct: Any) -> Residues:
        """``c0 + c1*s`` (NTT residues) for the key inside ``decryptor``."""
        plain = seal.Plaintext()
        decryptor.decrypt(ct, plain)
        return self.read_plain(plain)

    def encode(self, values: npt.NDArray[np.complex128]) -> Any:
        plain = seal.Plaintext()
        self.encoder.encode(values.tolist(), self.parms_id, self.scale, plain)
        return plain

    def decode(self, residues: Residues) -> npt.NDArray[np.complex128]:
        return np.asarray(self.encoder.decode_complex(self.plaintext(residues)),
                          dtype=np.complex128)

    def pack(self, block: npt.NDArray[np.float64]) -> npt.NDArray[np.complex128]:
        """The slots that carry ``N`` reals under the parameters' embedding."""
        if block.shape != (self.n,):
            raise InvalidParameter(f"a chunk is {self.n} reals, found {block.shape}")
        if self._embedding is not None:
            return self._embedding.slots(block)
        half = self.slots
        out: npt.NDArray[np.complex128] = block[:half] + 1j * block[half:]
        return out

    def unpack(self, slots: npt.NDArray[np.complex128]) -> npt.NDArray[np.float64]:
        """The ``N`` reals a decoded chunk carries (inverse of :meth:`pack`)."""
        if self._embedding is not None:
            return self._embedding.coefficients(slots)
        return np.concatenate([slots.real, slots.imag])

    def decode_reals(self, residues: Residues) -> npt.NDArray[np.float64]:
        """Decode an NTT-form decryption into the ``N`` reals of its chunk."""
        return self.unpack(self.decode(residues))
