"""Secret-bearing handles: values that refuse to be printed, compared or pickled.

.. danger:: Part of :mod:`secagg.hazmat`. Exporting the raw bytes needs the explicit,
   greppable :meth:`SecretBytes.expose_secret_bytes` call.
"""

from __future__ import annotations

import hmac
from typing import Any, NoReturn

__all__ = ["SecretBytes", "Unpicklable", "refuse_pickle"]


def refuse_pickle(obj: object) -> NoReturn:
    """Raise the error every secret handle raises on pickling or copying."""
    raise TypeError(
        f"{type(obj).__name__} holds secret material and cannot be pickled or copied; "
        "persist it only through an explicit export call"
    )


class Unpicklable:
    """Mixin for every object that holds secret material: pickling and copying raise.

    A copy would outlive the owner's control of the secret (in a pickle on disk, in a forked
    worker), so there is no way to make one short of an explicit export call.
    """

    __slots__ = ()

    def __reduce__(self) -> NoReturn:
        refuse_pickle(self)

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        refuse_pickle(self)

    def __copy__(self) -> NoReturn:
        refuse_pickle(self)

    def __deepcopy__(self, memo: Any) -> NoReturn:
        refuse_pickle(self)


class SecretBytes(Unpicklable):
    """An immutable byte string that is secret (a seed, a private key, a share).

    ``repr``/``str`` are redacted, pickling raises, and equality is constant time.
    """

    __slots__ = ("_label", "_value")

    def __init__(self, value: bytes, *, label: str = "secret") -> None:
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"{label} must be bytes, found {type(value).__name__}")
        self._value = bytes(value)
        self._label = label

    def expose_secret_bytes(self) -> bytes:
        """Return the raw secret. Every call site is a place secrets leave a handle."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._label}: {len(self._value)} bytes, redacted>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretBytes):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        raise TypeError("SecretBytes is unhashable: hashing would leak it through dict timing")

