"""Exceptions, grouped by what the caller should do about them.

* :class:`InvalidParameter` -- fix the arguments and call again.
* :class:`ProtocolAbort` -- the round cannot go on (carries the stage and a reason).
* :class:`NotEnoughParticipants` -- too few clients remain; the round ends cleanly.
* :class:`AuthenticationFailed` -- deliberately opaque: says nothing about why.
* :class:`RejectedMessage` -- one message was refused; the round goes on for everyone else.
* :class:`AlreadyUsed` -- a one-shot object (a session stage, a key) was used twice.

No message built by this package contains secret material.
"""

from __future__ import annotations

import enum

__all__ = [
    "AlreadyUsed",
    "AuthenticationFailed",
    "ErrorCode",
    "InvalidParameter",
    "NotEnoughParticipants",
    "ProtocolAbort",
    "RejectedMessage",
    "SecAggError",
]


class SecAggError(Exception):
    """Base class of every error raised by secagg."""


class InvalidParameter(SecAggError, ValueError):
    """A parameter, config or input does not satisfy a documented rule."""


class ProtocolAbort(SecAggError):
    """The protocol cannot continue at ``stage``.

    ``culprit`` names the client whose own signed or committed messages prove it caused the
    abort, when they do (a driver may leave it out of later rounds); None otherwise.
    """

    def __init__(self, stage: str, reason: str, *, culprit: int | None = None) -> None:
        super().__init__(f"protocol aborted at stage '{stage}': {reason}")
        self.stage = stage
        self.reason = reason
        self.culprit = culprit


class NotEnoughParticipants(ProtocolAbort):
    """Fewer than the threshold of clients remain at ``stage``."""

    def __init__(self, stage: str, have: int, need: int, detail: str = "") -> None:
        reason = f"{have} participant(s) remain but the threshold is {need}"
        if detail:
            reason += f" ({detail})"
        super().__init__(stage, reason)
        self.have = have
        self.need = need


class AuthenticationFailed(SecAggError):
    """A tag, signature or token did not verify. Intentionally carries no detail."""

    def __init__(self, what: str = "message") -> None:
        super().__init__(f"authentication failed for {what}")


class ErrorCode(enum.StrEnum):
    """Why a message was refused, as a code a transport can map (never by matching text)."""

    REPLAYED = "replayed"  # the very message was already accepted
    CONFLICTING_MESSAGE = "conflicting_message"  # a different message for a stage already answered
    ROUND_COMPLETE = "round_complete"
    WRONG_STAGE = "wrong_stage"  # a message for another stage than the current one
    NOT_EXPECTED = "not_expected"  # the sender is not (or no longer) awaited at this stage
    WRONG_SENDER = "wrong_sender"
    INVALID_MESSAGE = "invalid_message"  # malformed, wrong size, bad signature, wrong config


class RejectedMessage(SecAggError):
    """A single message was refused; the sender is treated as dropped, others continue."""

    def __init__(self, sender: int | None, reason: str,
                 code: ErrorCode = ErrorCode.INVALID_MESSAGE) -> None:
        who = "unknown sender" if sender is None else f"client {sender}"
        super().__init__(f"message from {who} rejected: {reason}")
        self.sender = sender
        self.reason = reason
        self.code = code


class AlreadyUsed(SecAggError):
    """A one-shot object was used again (a stage replayed, a key reused)."""
