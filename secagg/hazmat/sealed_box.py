"""Seal bytes to a recipient's X25519 public key (HPKE-style: X25519 + HKDF + ChaCha20-Poly1305).

.. danger:: Part of :mod:`secagg.hazmat`. Anonymous sender: use it for confidentiality through
   an untrusted relay, and authenticate the sender separately where that matters.

Blob layout: ``ephemeral_public (32) || nonce || ciphertext || tag``. The key is bound to the
context, the ephemeral key and the recipient key; the AAD also covers the caller's bytes.
"""

from __future__ import annotations

from dataclasses import replace

from secagg.errors import AuthenticationFailed
from secagg.hazmat.aead import open_sealed, seal
from secagg.hazmat.agreement import X25519KeyPair, validate_public_key
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import KeyContext, Purpose, derive_key

__all__ = ["open_box", "seal_to"]


def _box_key(shared: SecretBytes, context: KeyContext, eph: bytes, recipient: bytes) -> SecretBytes:
    bound = replace(context, purpose=Purpose.SEALED_BOX, session=context.session + eph + recipient)
    return derive_key(shared, bound)


def seal_to(recipient_public: bytes, plaintext: bytes, context: KeyContext, aad: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` so only the holder of ``recipient_public``'s private key can read it."""
    validate_public_key(recipient_public, what="recipient public key")
    eph = X25519KeyPair.generate()
    key = _box_key(eph.exchange(recipient_public), context, eph.public_bytes, recipient_public)
    return eph.public_bytes + seal(key, plaintext, context.info() + aad)


def open_box(recipient: X25519KeyPair, blob: bytes, context: KeyContext, aad: bytes = b"") -> bytes:
    """Open a :func:`seal_to` blob; any failure is an opaque :class:`AuthenticationFailed`."""
    if len(blob) < 32:
        raise AuthenticationFailed("sealed box")
    eph = blob[:32]
    try:
        shared = recipient.exchange(eph)
    except Exception:
        raise AuthenticationFailed("sealed box") from None
    key = _box_key(shared, context, eph, recipient.public_bytes)
    return open_sealed(key, blob[32:], context.info() + aad, what="sealed box")
