"""``plain``: float32 uploads summed with no protection at all (benchmarks only).

It exists so ``secagg bench e2e`` can compare a secure round with a plaintext one over the same
server and client runtime; the server offers it only when started with ``--allow-plain``
(:func:`secagg_server.modes.default_modes` with ``allow_plain=True``).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from secagg.errors import InvalidParameter, NotEnoughParticipants
from secagg.identity import Roster

from .base import ModeSpec, Rejected, RoundFailed

__all__ = ["PLAIN_MAGIC", "PLAIN_MODE", "PlainRound", "plain_config"]

PLAIN_MAGIC = b"SAGP"
_PLAIN_HEADER = struct.Struct("<4sI")


def plain_config(num_clients: int, index: int, options: dict[str, Any],
                  roster: Roster | None = None) -> dict[str, Any]:
    length = options.get("vector_length")
    if not isinstance(length, int) or length < 1:
        raise InvalidParameter("plain rounds need an integer 'vector_length' >= 1")
    max_weight = options.get("max_weight", 1)
    if not isinstance(max_weight, int) or max_weight < 1:
        raise InvalidParameter("'max_weight' must be an integer >= 1")
    return {"protocol": "secagg-plain", "num_clients": num_clients, "vector_length": length,
            "max_weight": max_weight, "round": index}


class PlainRound:
    """One stage: each client uploads ``SAGP | u32 weight | float32[vector_length]`` (LE)."""

    def __init__(self, config: dict[str, Any], participants: frozenset[int],
                 roster: Roster | None = None) -> None:
        self.length = int(config["vector_length"])
        self.max_weight = int(config["max_weight"])
        self.participants = participants
        self.sum = np.zeros(self.length, dtype=np.float64)
        self.weights: dict[int, int] = {}
        self._done = False

    @property
    def stage(self) -> str:
        return "done" if self._done else "upload"

    @property
    def expected(self) -> frozenset[int]:
        return frozenset() if self._done else self.participants - set(self.weights)

    @property
    def done(self) -> bool:
        return self._done

    def max_message_bytes(self) -> int:
        return _PLAIN_HEADER.size + 4 * self.length

    def claimed_sender(self, body: bytes) -> int | None:
        return None  # the upload carries no party id: the token says who sent it

    def receive(self, client_id: int, body: bytes) -> None:
        want = f"{self.max_message_bytes()} bytes: SAGP, u32 weight, {self.length} float32 (LE)"
        if self._done:
            raise Rejected(409, "round_complete", "the round is already complete")
        if client_id in self.weights:
            raise Rejected(409, "replayed", f"client {client_id} already uploaded")
        if len(body) != self.max_message_bytes() or body[:4] != PLAIN_MAGIC:
            raise Rejected(400, "invalid_message", f"upload is {len(body)} bytes or lacks the "
                           "SAGP magic", want)
        weight = _PLAIN_HEADER.unpack_from(body)[1]
        if not 1 <= weight <= self.max_weight:
            raise Rejected(400, "invalid_message", f"weight {weight} is outside [1, "
                           f"{self.max_weight}]", want)
        vec = np.frombuffer(body, dtype="<f4", offset=_PLAIN_HEADER.size)
        if not np.isfinite(vec).all():
            raise Rejected(400, "invalid_message", "update holds NaN or infinity", want)
        self.sum += weight * vec.astype(np.float64)
        self.weights[client_id] = weight

    def advance(self) -> dict[int, bytes]:
        self._done = True
        if not self.weights:
            raise RoundFailed(str(NotEnoughParticipants("upload", 0, 1)))
        return {}

    def result(self) -> tuple[dict[str, Any], bytes]:
        survivors = sorted(self.weights)
        meta = {"kind": "plain", "dtype": "<f4", "length": self.length,
                "total_weight": sum(self.weights.values()), "survivors": survivors,
                "dropped": sorted(self.participants - set(survivors))}
        return meta, self.sum.astype("<f4").tobytes()


PLAIN_MODE = ModeSpec("plain", plain_config, PlainRound)
