"""HKDF-SHA256 bound to its full context (RFC 5869).

.. danger:: Part of :mod:`secagg.hazmat`. A key derived for one :class:`KeyContext` must never be
   used for another purpose; the context is the only thing that keeps two keys apart.

Every key in secagg is derived as ``HKDF-SHA256(ikm, salt=SHA256(session), info=context)``, where
the context encodes protocol, version, session, round, purpose and the *ordered* pair of parties.
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

__all__ = ["KeyContext", "Purpose", "derive_key"]

_PROTOCOL_TAG = b"secagg"
_MAX_PARTY = 2**32 - 1


class Purpose(enum.Enum):
    """What a derived key is for. The value is the label that goes into HKDF's ``info``."""

    PAIRWISE_MASK = "pairwise-mask"
    SELF_MASK = "self-mask"
    SHARE_ENCRYPTION = "share-encryption"
    SEALED_BOX = "sealed-box"
    NOISE_SEED = "noise-seed"


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
        if not self.protocol or len(self.protocol) > 64:
            raise InvalidParameter("KeyContext.protocol must be 1-64 characters")
        if not (0 <= self.version < 2**16):
            raise InvalidParameter(f"KeyContext.version must be in [0, 2^16), found {self.version}")
        if not (0 <= self.round < 2**63):
            raise InvalidParameter(f"KeyContext.round must be in [0, 2^63), found {self.round}")
        if not all(0 <= p <= _MAX_PARTY for p in self.pair):
            raise InvalidParameter(f"KeyContext.pair entries must be in [0, 2^32), found {self.pair}")
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


def derive_key(ikm: SecretBytes, context: KeyContext, *, length: int = 32) -> SecretBytes:
    """Derive ``length`` bytes from ``ikm`` bound to ``context``."""
    if not 16 <= length <= 64:
        raise InvalidParameter(f"derived key length must be 16-64 bytes, found {length}")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=length,
        salt=hashlib.sha256(b"secagg-salt" + context.session).digest(),
        info=context.info(),
    )
    return SecretBytes(hkdf.derive(ikm.expose_secret_bytes()), label=context.purpose.value)
