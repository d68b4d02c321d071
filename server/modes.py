"""Protection modes as adapters over the sans-IO server sessions of :mod:`secagg`.

The HTTP layer and the round coordinator only know :class:`RoundProtocol`: take a client's bytes,
say who is still awaited, close a stage, release a result. Each mode maps that onto its protocol
core, so the service never holds its own copy of a protocol. CKKS mode plugs in by registering a
:class:`ModeSpec` whose adapter wraps the CKKS server session (``register_mode``).

``plain`` sums float32 uploads with no protection at all. It exists so ``secagg bench e2e`` can
compare a secure round with a plaintext one over the same server and client runtime; the server
refuses it unless started with ``--allow-plain``.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from secagg.errors import InvalidParameter, NotEnoughParticipants, ProtocolAbort, RejectedMessage
from secagg.masking import MaskingConfig, ServerSession, Stage, wire

__all__ = ["MODES", "ModeSpec", "Rejected", "RoundFailed", "RoundProtocol", "register_mode"]

PLAIN_MAGIC = b"SAGP"
_PLAIN_HEADER = struct.Struct("<4sI")


class Rejected(Exception):
    """A client message was refused (HTTP ``status``); the round state is unchanged."""

    def __init__(self, status: int, code: str, detail: str, expected: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.expected = status, code, detail, expected


class RoundFailed(Exception):
    """The round cannot complete (too few clients, a protocol abort)."""


class RoundProtocol(Protocol):
    """What the coordinator needs from one round of one mode. Must be deterministic: the same
    accepted messages and advances in the same order rebuild the same state (crash recovery)."""

    @property
    def stage(self) -> str: ...
    @property
    def expected(self) -> frozenset[int]: ...
    @property
    def done(self) -> bool: ...
    def max_message_bytes(self) -> int: ...
    def claimed_sender(self, body: bytes) -> int | None: ...
    def receive(self, client_id: int, body: bytes) -> None: ...
    def advance(self) -> dict[int, bytes]: ...
    def result(self) -> tuple[dict[str, Any], bytes]: ...


@dataclass(frozen=True)
class ModeSpec:
    """``make_config(num_clients, round_index, options)`` -> JSON config stored with the round;
    ``build(config, participants)`` -> a fresh :class:`RoundProtocol` for it."""

    name: str
    make_config: Callable[[int, int, dict[str, Any]], dict[str, Any]]
    build: Callable[[dict[str, Any], frozenset[int]], RoundProtocol]


MODES: dict[str, ModeSpec] = {}


def register_mode(spec: ModeSpec) -> None:
    MODES[spec.name] = spec


# ---- masking ---------------------------------------------------------------------------------

_MASKING_OPTIONS = {"vector_length", "clip", "value_bits", "max_weight", "dropout_rate",
                    "corrupt_rate", "full_graph", "neighbours", "threshold", "noise_headroom"}


def _masking_config(num_clients: int, index: int, options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - _MASKING_OPTIONS - {"active"}
    if unknown:
        raise InvalidParameter(f"unknown masking option(s) {sorted(unknown)}; allowed: "
                               f"{sorted(_MASKING_OPTIONS)}")
    if options.get("active"):
        raise InvalidParameter("active mode needs each client's enrolled signing key; this server "
                               "does not enrol signing keys yet, so 'active' must be false")
    if "vector_length" not in options:
        raise InvalidParameter("masking rounds need 'vector_length' (parameters per update)")
    kwargs = {k: options[k] for k in _MASKING_OPTIONS if k in options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-federation dropout notes; the operator chose n
        cfg = MaskingConfig.create(num_clients=num_clients, round=index, **kwargs)
    return cfg.to_dict()


_REJECT_CODES = (  # how a RejectedMessage reason starts -> (HTTP status, code)
    ("replayed message", 409, "replayed"),
    ("a second, different message", 409, "conflicting_message"),
    ("the round is already complete", 409, "round_complete"),
    ("expected ", 409, "wrong_stage"),
)


class MaskingRound:
    """Adapter over :class:`secagg.masking.ServerSession` (party ids = enrolment ids)."""

    def __init__(self, config: dict[str, Any], participants: frozenset[int]) -> None:
        self.config = MaskingConfig.from_dict(config)
        self.session = ServerSession(self.config, participants=participants)

    @property
    def stage(self) -> str:
        return self.session.stage.value

    @property
    def expected(self) -> frozenset[int]:
        return self.session.expected

    @property
    def done(self) -> bool:
        return self.session.stage is Stage.DONE

    def max_message_bytes(self) -> int:
        return self.session.max_message_bytes()

    def claimed_sender(self, body: bytes) -> int | None:
        try:
            return wire.peek_header(body).party
        except InvalidParameter:
            return None

    def receive(self, client_id: int, body: bytes) -> None:
        try:
            self.session.receive(body)
        except RejectedMessage as exc:
            want = f"a {self.session.stage.value!r} stage message (see secagg.masking.wire)"
            if exc.sender is not None:  # it decoded: a state conflict, or a bad field (400)
                if "; not expected at " in exc.reason:
                    raise Rejected(409, "not_expected", str(exc), want) from None
                for prefix, status, code in _REJECT_CODES:
                    if exc.reason.startswith(prefix):
                        raise Rejected(status, code, str(exc), want) from None
            raise Rejected(400, "invalid_message", str(exc), want) from None
        except (ValueError, struct.error, KeyError, TypeError) as exc:
            raise Rejected(400, "invalid_message", f"malformed message: {type(exc).__name__}: "
                           f"{exc}") from None

    def advance(self) -> dict[int, bytes]:
        try:
            return self.session.advance_bytes()
        except ProtocolAbort as exc:  # NotEnoughParticipants included
            raise RoundFailed(str(exc)) from None

    def result(self) -> tuple[dict[str, Any], bytes]:
        agg = self.session.result
        meta = {"kind": "masking", "dtype": "<u4", "length": int(agg.total.size),
                "total_weight": agg.total_weight, "survivors": list(agg.survivors),
                "dropped": list(agg.dropped)}
        return meta, agg.total.astype("<u4", copy=False).tobytes()


register_mode(ModeSpec("masking", _masking_config, MaskingRound))


# ---- plain (no protection; benchmarks only) --------------------------------------------------

def _plain_config(num_clients: int, index: int, options: dict[str, Any]) -> dict[str, Any]:
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

    def __init__(self, config: dict[str, Any], participants: frozenset[int]) -> None:
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


PLAIN_MODE = ModeSpec("plain", _plain_config, PlainRound)
