"""The checks every CKKS server session makes on a client message before reading it.

Shared by the dealer mode (:class:`secagg.ckks.ServerSession`) and the threshold mode
(:class:`secagg.ckks.threshold.session.ServerSession`): a body must be bytes, the round must be
open, the body within the current stage's size limit, and not one already accepted (a retried
post whose answer was lost). Each refusal is a :class:`~secagg.errors.RejectedMessage` whose code
lets the service answer a retry as such.
"""

from __future__ import annotations

import hashlib

from secagg.errors import ErrorCode, RejectedMessage

__all__ = ["admit"]


def admit(message: object, *, stage: str, done: bool, limit: int,
          seen: set[bytes]) -> tuple[bytes, bytes]:
    """``(body, fingerprint)`` of a message the stage ``stage`` may read; the caller adds the
    fingerprint to ``seen`` once it accepted the message (a refused one may come again)."""
    if not isinstance(message, bytes | bytearray | memoryview):
        raise RejectedMessage(None, f"a message must be bytes, found {type(message).__name__}")
    data = bytes(message)
    if done:
        raise RejectedMessage(None, "the round is already complete", ErrorCode.ROUND_COMPLETE)
    if len(data) > limit:
        raise RejectedMessage(None, f"message is {len(data)} bytes; the limit at stage "
                              f"{stage!r} is {limit}")
    fingerprint = hashlib.sha256(data).digest()
    if fingerprint in seen:
        raise RejectedMessage(None, "replayed message (already accepted in this round)",
                              ErrorCode.REPLAYED)
    return data, fingerprint
