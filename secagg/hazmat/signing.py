"""Ed25519 signatures (RFC 8032) for the active-server mode.

.. danger:: Part of :mod:`secagg.hazmat`. Sign only canonical encodings that carry their own
   domain label; a signature over ambiguous bytes can be replayed in another context.
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.hazmat.handles import Unpicklable

__all__ = ["SigningKey", "export_private_bytes_for_storage", "signing_key_from_private_bytes",
           "verify_signature"]


class SigningKey(Unpicklable):
    """An Ed25519 private key. Redacted, unpicklable."""

    __slots__ = ("_private", "public_bytes")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_bytes: bytes = private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"<SigningKey public={self.public_bytes[:4].hex()}... private=redacted>"

    def __eq__(self, other: object) -> bool:
        """By value, in constant time (the private keys are compared, never exposed)."""
        if not isinstance(other, SigningKey):
            return NotImplemented
        mine, theirs = self._private.private_bytes_raw(), other._private.private_bytes_raw()
        return hmac.compare_digest(mine, theirs)

    def __hash__(self) -> int:
        raise TypeError("SigningKey is unhashable: hashing would leak it through dict timing")



def verify_signature(public: bytes, signature: bytes, message: bytes, *, what: str) -> None:
    """Raise :class:`AuthenticationFailed` unless ``signature`` is valid. Never returns a bool."""
    if len(public) != 32:
        raise InvalidParameter(f"Ed25519 public key must be 32 bytes, found {len(public)}")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise AuthenticationFailed(what) from None


def signing_key_from_private_bytes(raw: bytes) -> SigningKey:
    """Rebuild an Ed25519 key from its 32-byte seed (an identity file's contents)."""
    if len(raw) != 32:
        raise InvalidParameter(f"Ed25519 private key must be 32 bytes, found {len(raw)}")
    return SigningKey(Ed25519PrivateKey.from_private_bytes(raw))


def export_private_bytes_for_storage(key: SigningKey) -> bytes:
    """The 32-byte seed of ``key``, to be written to a 0600 identity file. The only way out."""
    return key._private.private_bytes_raw()
