"""HKDF-SHA256 bound to its full context (RFC 5869).

.. danger:: Part of :mod:`secagg.hazmat`. A key derived for one :class:`KeyContext` must never be
   used for another purpose; the context is the only thing that keeps two keys apart.

Every key in secagg is derived as
``HKDF-SHA256(ikm, salt=SHA256(b"secagg-salt" || session), info=context.info())``, where the
context encodes protocol, version, session, round, purpose and the *ordered* pair of parties.
:func:`hkdf_sha256` is the bare RFC 5869 function underneath, tested against the RFC's vectors.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import InvalidParameter
from secagg.hazmat.handles import SecretBytes

__all__ = ["KeyContext", "Purpose", "derive_key", "hkdf_sha256"]

_PROTOCOL_TAG = b"secagg"
_MAX_PARTY = 2**32 - 1
_HKDF_MAX_LENGTH = 255 * 32  # RFC 5869 section 2.3: L <= 255 * HashLen


class Purpose(enum.Enum):
    """What a derived key is for. The value is the label that goes into HKDF's ``info``."""

    PAIRWISE_MASK = "pairwise-mask"
    SELF_MASK = "self-mask"
    SHARE_ENCRYPTION = "share-encryption"
    SEALED_BOX = "sealed-box"
    NOISE_SEED = "noise-seed"
    SKETCH = "ckks-sketch"  # the projections of the verifiable CKKS aggregate
    SKETCH_SEAL = "ckks-sketch-seal"  # the AEAD key hiding each upload's sketch from the server
    SESSION_STATE = "session-state"  # sealing a client session between Flower calls
    THRESHOLD_SESSION_STATE = "threshold-session-state"  # the same, threshold CKKS sessions


@dataclass(frozen=True, slots=True)
class KeyContext:
    """Everything a derived key is bound to.

    ``pair`` is ordered: (src, dst) for directional keys, (min, max) for symmetric ones; the
    recipe decides and both sides must agree. ``session`` identifies the federation round
    instance (for masking, the config digest).
    """

    protocol: str
    version: int
    session: bytes
    round: int
    purpose: Purpose
    pair: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if not isinstance(self.protocol, str) or not 1 <= len(self.protocol.encode()) <= 64:
            found = (
                f"{len(self.protocol.encode())} bytes"
                if isinstance(self.protocol, str)
                else type(self.protocol).__name__
            )
            raise InvalidParameter(
                f"KeyContext.protocol must be 1-64 bytes of UTF-8, found {found}"
            )
        if not isinstance(self.session, bytes):
            raise InvalidParameter(
                f"KeyContext.session must be bytes, found {type(self.session).__name__}"
            )
        if not (0 <= self.version < 2**16):
            raise InvalidParameter(f"KeyContext.version must be in [0, 2^16), found {self.version}")
        if not (0 <= self.round < 2**63):
            raise InvalidParameter(f"KeyContext.round must be in [0, 2^63), found {self.round}")
        if (
            not isinstance(self.pair, tuple)
            or len(self.pair) != 2
            or not all(isinstance(p, int) and 0 <= p <= _MAX_PARTY for p in self.pair)
        ):
            raise InvalidParameter(
                f"KeyContext.pair must be two ints in [0, 2^32), found {self.pair!r}"
            )
        if not isinstance(self.purpose, Purpose):
            raise InvalidParameter("KeyContext.purpose must be a Purpose member")

    def info(self) -> bytes:
        """The canonical, injective encoding used as HKDF ``info``."""
        proto = self.protocol.encode()
        label = self.purpose.value.encode()
        return b"".join(
            [
                _PROTOCOL_TAG,
                struct.pack(">B", len(proto)),
                proto,
                struct.pack(">HQ", self.version, self.round),
                struct.pack(">B", len(label)),
                label,
                struct.pack(">II", *self.pair),
                hashlib.sha256(self.session).digest(),
            ]
        )


def hkdf_sha256(ikm: SecretBytes, *, salt: bytes, info: bytes, length: int) -> SecretBytes:
    """Bare HKDF-SHA256 (RFC 5869): extract with ``salt``, expand with ``info`` to ``length`` bytes.

    Use :func:`derive_key`, which fixes ``salt`` and ``info`` from a :class:`KeyContext`; this is
    the function underneath, exposed so the RFC 5869 test vectors exercise our own code path.
    """
    if not 1 <= length <= _HKDF_MAX_LENGTH:
        raise InvalidParameter(
            f"HKDF-SHA256 length must be 1-{_HKDF_MAX_LENGTH} bytes, found {length}"
        )
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info)
    return SecretBytes(hkdf.derive(ikm.expose_secret_bytes()), label="hkdf-output")


def derive_key(ikm: SecretBytes, context: KeyContext, *, length: int = 32) -> SecretBytes:
    """Derive ``length`` bytes from ``ikm`` bound to ``context``."""
    if not 16 <= length <= 64:
        raise InvalidParameter(f"derived key length must be 16-64 bytes, found {length}")
    okm = hkdf_sha256(
        ikm,
        salt=hashlib.sha256(b"secagg-salt" + context.session).digest(),
        info=context.info(),
        length=length,
    )
    return SecretBytes(okm.expose_secret_bytes(), label=context.purpose.value)
