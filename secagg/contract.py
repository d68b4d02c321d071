"""The typed contract between the aggregation service and its clients, transport-free.

One place for what both sides of the HTTP service must agree on: the routes, the headers, the
error codes (as an enum that the protocol's refusals carry, so the server maps codes to HTTP
statuses and never matches text), the released result (:class:`ReleasedAggregate`, one type and
one codec for every mode), and the plain benchmark wire format. The server (``secagg_server``)
and the client runtime (``secagg_clients``) both import it; it imports neither.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter

__all__ = [
    "Header",
    "InboxState",
    "PlainUpload",
    "ReleasedAggregate",
    "Route",
    "decode_plain",
    "encode_plain",
    "http_status",
]


class Route:
    """The service's paths (version 1)."""

    HEALTH: Final = "/healthz"
    ME: Final = "/v1/me"
    ROUNDS: Final = "/v1/rounds"
    NEXT_ROUND: Final = "/v1/rounds/next"

    @staticmethod
    def round(round_id: int) -> str:
        return f"/v1/rounds/{int(round_id)}"

    @staticmethod
    def messages(round_id: int) -> str:
        return f"/v1/rounds/{int(round_id)}/messages"

    @staticmethod
    def inbox(round_id: int) -> str:
        return f"/v1/rounds/{int(round_id)}/inbox"

    @staticmethod
    def result(round_id: int) -> str:
        return f"/v1/rounds/{int(round_id)}/result"

    @staticmethod
    def cancel(round_id: int) -> str:
        return f"/v1/rounds/{int(round_id)}/cancel"


class Header:
    """Response headers the client runtime reads."""

    STATE: Final = "X-Secagg-State"
    STAGE_NO: Final = "X-Secagg-Stage-No"
    ACCEPTED_STAGE: Final = "X-Secagg-Accepted-Stage"
    RESULT: Final = "X-Secagg-Result"


class InboxState(enum.StrEnum):
    """What ``X-Secagg-State`` says about a client's inbox."""

    WAITING = "waiting"
    MESSAGE = "message"
    DONE = "done"
    FAILED = "failed"


_STATUS: Final = {  # ErrorCode value -> HTTP status (the codes live in secagg.errors)
    "replayed": 409, "conflicting_message": 409, "round_complete": 409, "wrong_stage": 409,
    "not_expected": 409, "wrong_sender": 403, "invalid_message": 400,
}


def http_status(code: str) -> int:
    """The HTTP status for a protocol refusal's :class:`secagg.errors.ErrorCode`."""
    return _STATUS.get(str(code), 400)


@dataclass(frozen=True)
class ReleasedAggregate:
    """What a completed round releases, in every mode: one type, one codec.

    ``values`` is the sum of the survivors' (weighted) updates for masking and plain rounds;
    for CKKS it is empty and ``payload`` holds the encrypted aggregate only the enterprises can
    decrypt (``encrypted`` is true). ``layout_digest`` names the model layout (the
    :class:`~secagg.encoding.ParamSpec` digest) the round was opened for.
    """

    mode: str
    round_id: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...] = ()
    excluded: tuple[int, ...] = ()
    total_weight: float | None = None
    layout_digest: str = ""
    encrypted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def mean(self, total: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The weighted mean from the released sum ``total``."""
        if self.total_weight is None or not self.total_weight > 0:
            raise InvalidParameter("this result has no positive total weight to average by")
        return np.asarray(total, dtype=np.float64) / float(self.total_weight)

    def to_header(self) -> str:
        """The JSON that travels in the ``X-Secagg-Result`` header."""
        return json.dumps({
            "mode": self.mode, "round": self.round_id, "survivors": list(self.survivors),
            "dropped": list(self.dropped), "excluded": list(self.excluded),
            "total_weight": self.total_weight, "layout_digest": self.layout_digest,
            "encrypted": self.encrypted, **({"extra": self.extra} if self.extra else {}),
        }, sort_keys=True)

    @classmethod
    def from_header(cls, text: str) -> ReleasedAggregate:
        """Parse :meth:`to_header`'s JSON, naming the field that is wrong."""
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidParameter("the result header is not JSON") from None
        if not isinstance(data, dict):
            raise InvalidParameter("the result header must be a JSON object")

        def ids(name: str) -> tuple[int, ...]:
            value = data.get(name, [])
            if not isinstance(value, list) or not all(
                    isinstance(i, int) and not isinstance(i, bool) for i in value):
                raise InvalidParameter(f"result field '{name}' must be a list of client ids")
            return tuple(value)

        mode, round_id = data.get("mode"), data.get("round")
        if not isinstance(mode, str) or not isinstance(round_id, int) or isinstance(round_id, bool):
            raise InvalidParameter("result fields 'mode' (string) and 'round' (integer) are required")
        weight = data.get("total_weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int | float)
                                   or not math.isfinite(weight)):
            raise InvalidParameter("result field 'total_weight' must be a finite number or null")
        extra = data.get("extra", {})
        return cls(mode=mode, round_id=round_id, survivors=ids("survivors"),
                   dropped=ids("dropped"), excluded=ids("excluded"),
                   total_weight=None if weight is None else float(weight),
                   layout_digest=str(data.get("layout_digest", "")),
                   encrypted=bool(data.get("encrypted", False)),
                   extra=extra if isinstance(extra, dict) else {})


# ---- the plain wire format (benchmarks only: no protection at all) -----------------------------

PLAIN_MAGIC: Final = b"SAGP"
_PLAIN_HEADER: Final = struct.Struct("<4sI")


@dataclass(frozen=True)
class PlainUpload:
    """One decoded plain upload: the float32 update and its integer weight."""

    update: npt.NDArray[np.float32]
    weight: int


def encode_plain(update: npt.ArrayLike, weight: int) -> bytes:
    """``SAGP | weight u32 | float32 little-endian values``."""
    vec = np.ascontiguousarray(update, dtype="<f4").ravel()
    if isinstance(weight, bool) or not 1 <= int(weight) < 2**32:
        raise InvalidParameter(f"plain upload weight must be an integer in [1, 2^32), found {weight}")
    return _PLAIN_HEADER.pack(PLAIN_MAGIC, int(weight)) + vec.tobytes()


def plain_size(length: int) -> int:
    """Bytes of a plain upload of ``length`` values."""
    return _PLAIN_HEADER.size + 4 * length


def decode_plain(body: bytes, length: int) -> PlainUpload:
    """Parse :func:`encode_plain`'s bytes for ``length`` values; clear errors on anything else."""
    if len(body) != plain_size(length):
        raise InvalidParameter(f"plain upload is {len(body)} bytes; {length} values need "
                               f"{plain_size(length)}")
    magic, weight = _PLAIN_HEADER.unpack_from(body)
    if magic != PLAIN_MAGIC:
        raise InvalidParameter("not a plain upload (bad magic)")
    if weight < 1:
        raise InvalidParameter("plain upload weight must be >= 1")
    vec = np.frombuffer(body, dtype="<f4", offset=_PLAIN_HEADER.size)
    if not np.all(np.isfinite(vec)):
        raise InvalidParameter("plain upload holds NaN or infinite values")
    return PlainUpload(update=vec, weight=int(weight))
