"""ChaCha20-Poly1305 with the caller's associated data (RFC 8439).

.. danger:: Part of :mod:`secagg.hazmat`. Keys must come from :func:`derive_key` with a
   context unique to the sender, receiver and round; nonces are random (12 bytes), which is safe
   for the handful of messages each such key ever seals.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.hazmat.handles import SecretBytes

__all__ = ["NONCE_BYTES", "TAG_BYTES", "open_sealed", "seal"]

NONCE_BYTES = 12
TAG_BYTES = 16


def seal(key: SecretBytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt and authenticate; returns ``nonce || ciphertext || tag``."""
    if len(key) != 32:
        raise InvalidParameter(f"AEAD key must be 32 bytes, found {len(key)}")
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key.expose_secret_bytes()).encrypt(
        nonce, plaintext, associated_data
    )


def open_sealed(key: SecretBytes, blob: bytes, associated_data: bytes, *, what: str) -> bytes:
    """Decrypt ``blob`` from :func:`seal`; any failure is one opaque :class:`AuthenticationFailed`."""
    if len(key) != 32:
        raise InvalidParameter(f"AEAD key must be 32 bytes, found {len(key)}")
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise AuthenticationFailed(what)
    try:
        return ChaCha20Poly1305(key.expose_secret_bytes()).decrypt(
            blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated_data
        )
    except InvalidTag:
        raise AuthenticationFailed(what) from None
