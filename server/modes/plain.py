"""``plain``: float32 uploads summed with no protection at all (benchmarks only).

It exists so ``secagg bench e2e`` can compare a secure round with a plaintext one over the same
server and client runtime; the server offers it only when started with ``--allow-plain``
(:func:`secagg_server.modes.default_modes` with ``allow_plain=True``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from secagg.contract import PLAIN_MAGIC, ReleasedAggregate, decode_plain, plain_size
from secagg.errors import InvalidParameter, NotEnoughParticipants
from secagg.identity import Roster

from .base import (
    ModeSpec,
    Rejected,
    RoundFailed,
    known_options,
    layout_option,
    vector_length_option,
)

__all__ = ["PLAIN_MAGIC", "PLAIN_MODE", "PlainRound", "plain_config"]


def plain_config(num_clients: int, index: int, options: dict[str, Any],
                  roster: Roster | None = None) -> dict[str, Any]:
    known_options("plain", options, ("vector_length", "max_weight"))
    layout = layout_option("plain", options)
    if layout is not None:
        options = {**options, "vector_length": layout.size}
    length = vector_length_option("plain", options)
    max_weight = options.get("max_weight", 1)
    if not isinstance(max_weight, int) or max_weight < 1:
        raise InvalidParameter("'max_weight' must be an integer >= 1")
    return {"protocol": "secagg-plain", "num_clients": num_clients, "vector_length": length,
            "max_weight": max_weight, "round": index,
            "layout_digest": "" if layout is None else layout.digest().hex()}


class PlainRound:
    """One stage: each client uploads ``SAGP | u32 weight | float32[vector_length]`` (LE)."""

    def __init__(self, config: dict[str, Any], participants: frozenset[int],
                 roster: Roster | None = None) -> None:
        self.length = int(config["vector_length"])
        self.max_weight = int(config["max_weight"])
        self.round = int(config["round"])
        self.layout_digest = str(config.get("layout_digest", ""))
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
        return plain_size(self.length)

    def claimed_sender(self, body: bytes) -> int | None:
        return None  # the upload carries no party id: the token says who sent it

    def receive(self, client_id: int, body: bytes) -> None:
        want = f"{self.max_message_bytes()} bytes: SAGP, u32 weight, {self.length} float32 (LE)"
        if self._done:
            raise Rejected(409, "round_complete", "the round is already complete")
        if client_id in self.weights:
            raise Rejected(409, "replayed", f"client {client_id} already uploaded")
        try:
            upload = decode_plain(body, self.length)  # the one plain wire format (secagg.contract)
        except InvalidParameter as exc:
            raise Rejected(400, "invalid_message", str(exc), want) from None
        if not upload.weight <= self.max_weight:
            raise Rejected(400, "invalid_message", f"weight {upload.weight} is outside [1, "
                           f"{self.max_weight}]", want)
        self.sum += upload.weight * upload.update.astype(np.float64)
        self.weights[client_id] = upload.weight

    def advance(self) -> dict[int, bytes]:
        self._done = True
        if not self.weights:
            raise RoundFailed(str(NotEnoughParticipants("upload", 0, 1)))
        return {}

    def result(self) -> tuple[ReleasedAggregate, bytes]:
        survivors = sorted(self.weights)
        meta = ReleasedAggregate(
            mode="plain", round_id=self.round, survivors=tuple(survivors),
            dropped=tuple(sorted(self.participants - set(survivors))),
            total_weight=float(sum(self.weights.values())), layout_digest=self.layout_digest,
            extra={"dtype": "<f4", "length": self.length})
        return meta, self.sum.astype("<f4").tobytes()


PLAIN_MODE = ModeSpec("plain", plain_config, PlainRound)
