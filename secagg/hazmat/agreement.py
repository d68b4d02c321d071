"""X25519 key agreement (RFC 7748) in a handle that keeps the private key in.

.. danger:: Part of :mod:`secagg.hazmat`. The raw shared secret is never a key: always pass it
   through :func:`secagg.hazmat.kdf.derive_key` with the full context.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secagg.errors import InvalidParameter
from secagg.hazmat.handles import SecretBytes, Unpicklable

__all__ = ["X25519KeyPair", "validate_public_key"]

PUBLIC_KEY_BYTES = 32


_PROBE = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))  # a fixed, public probe key


def validate_public_key(public: bytes, *, what: str = "X25519 public key",
                        probe_low_order: bool = True) -> X25519PublicKey:
    """Parse a peer's public key, or raise :class:`InvalidParameter` naming ``what``.

    Low-order points (the all-zero key and its kin) are refused: a key exchange with one gives
    the all-zero secret, the same for every party, so a peer advertising one would either share
    its secrets in the clear or make its neighbours abort. ``cryptography`` detects them by the
    all-zero exchange output; we run that exchange with a fixed public probe key.
    ``probe_low_order=False`` skips the probe for a caller that runs its own exchange with the
    key at once (:meth:`X25519KeyPair.exchange` refuses low-order points too).
    """
    if not isinstance(public, bytes) or len(public) != PUBLIC_KEY_BYTES:
        size = len(public) if isinstance(public, bytes) else type(public).__name__
        raise InvalidParameter(f"{what} must be {PUBLIC_KEY_BYTES} bytes, found {size}")
    key = X25519PublicKey.from_public_bytes(public)
    if not probe_low_order:
        return key
    try:
        _PROBE.exchange(key)
    except ValueError:
        raise InvalidParameter(f"{what} is a low-order point (it would give an all-zero shared "
                               "secret); generate a real key") from None
    return key


class X25519KeyPair(Unpicklable):
    """An X25519 private key with its public half. Redacted, unpicklable."""

    __slots__ = ("_private", "public_bytes")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public_bytes: bytes = private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> X25519KeyPair:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, secret: SecretBytes) -> X25519KeyPair:
        """Rebuild a key pair, e.g. from a Shamir reconstruction."""
        raw = secret.expose_secret_bytes()
        if len(raw) != 32:
            raise InvalidParameter(f"X25519 private key must be 32 bytes, found {len(raw)}")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def export_private_bytes_for_sharing(self) -> SecretBytes:
        """The private key, to be Shamir-shared. The only way it leaves the handle."""
        return SecretBytes(self._private.private_bytes_raw(), label="x25519-private-key")

    def exchange(self, peer_public: bytes) -> SecretBytes:
        """Raw X25519 shared secret with ``peer_public`` (rejects low-order points)."""
        peer = validate_public_key(peer_public, probe_low_order=False)  # exchange checks it
        try:
            shared = self._private.exchange(peer)
        except ValueError as exc:  # all-zero output: a low-order point
            raise InvalidParameter("peer X25519 public key is a low-order point") from exc
        return SecretBytes(shared, label="x25519-shared-secret")

    def __repr__(self) -> str:
        return f"<X25519KeyPair public={self.public_bytes[:4].hex()}... private=redacted>"

    def __eq__(self, other: object) -> bool:
        """By value, in constant time (the private keys are compared, never exposed)."""
        if not isinstance(other, X25519KeyPair):
            return NotImplemented
        mine, theirs = self._private.private_bytes_raw(), other._private.private_bytes_raw()
        return hmac.compare_digest(mine, theirs)

    def __hash__(self) -> int:
        raise TypeError("X25519KeyPair is unhashable: hashing would leak it through dict timing")

