"""The checks on a message's envelope, before its stage looks at the body: the server's on a
client message (:func:`check_envelope`), a client's on a server message (:func:`addressing_refusal`).

Each names what was wrong and carries an :class:`~secagg.errors.ErrorCode`, so the service maps
refusals to HTTP statuses by code, never by text.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from secagg.errors import ErrorCode, RejectedMessage
from secagg.masking import messages as m
from secagg.masking.config import Stage

__all__ = ["addressing_refusal", "check_envelope"]


def check_envelope(msg: m.ClientMessage, size: int, *, stage: Stage, digest: bytes, round_: int,
                   expected_type: type[Any], answered: Container[int],
                   expected: Container[int], participants: Container[int], limit: int) -> None:
    """Raise :class:`RejectedMessage` unless ``msg`` is for this round, config and stage, from a
    client still expected at it, within the stage's size limit."""
    sender = msg.party
    if msg.digest != digest:
        raise RejectedMessage(sender, "config digest mismatch: the client runs this round "
                              "with different parameters")
    if msg.round != round_:
        raise RejectedMessage(sender, f"message is for round {msg.round}; this is round {round_}")
    if not isinstance(msg, expected_type):
        raise RejectedMessage(sender, f"expected {expected_type.__name__} at stage "
                              f"'{stage.value}', found {type(msg).__name__}",
                              ErrorCode.WRONG_STAGE)
    if sender in answered:
        raise RejectedMessage(sender, f"a second, different message for stage '{stage.value}'",
                              ErrorCode.CONFLICTING_MESSAGE)
    if sender not in expected:
        why = "is not a participant" if sender not in participants else \
            "dropped at an earlier stage"
        raise RejectedMessage(sender, f"client {sender} {why}; not expected at '{stage.value}'",
                              ErrorCode.NOT_EXPECTED)
    if size > limit:
        raise RejectedMessage(sender, f"message is {size} bytes; the limit at '{stage.value}' "
                              f"is {limit}")


def addressing_refusal(msg: m.ServerMessage, digest: bytes, round_: int, me: int) -> str | None:
    """Why a client must refuse a server message not meant for its config, round or id."""
    if msg.digest != digest:
        return "message is for a different round config (config digest mismatch)"
    if msg.round != round_:
        return f"message is for round {msg.round}, this session is round {round_}"
    if msg.party != me:
        return f"message is addressed to client {msg.party}"
    return None
