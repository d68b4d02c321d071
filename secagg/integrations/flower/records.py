"""What the Flower mods and workflows put in Flower's records, and the model <-> vector mapping.

Every protocol message travels as bytes (the protocol's own wire format) in one ``ConfigRecord``
named :data:`PROTOCOL_RECORD`, inside Flower ``train`` messages. The first message of a round
(:data:`SETUP`) carries the round's config and model layout, and its reply the client's first
protocol message (its key advertisement). The strategy's own content (the global model and its
config) rides with the protocol message of the stage at which the clients train (masking: the
share delivery; threshold CKKS: the share delivery too), whose reply is the masked or encrypted
upload with the ClientApp's metrics, never its model nor its weight. So a client's update exists
only within that one ClientApp call and is never part of the state kept between calls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import InvalidParameter

_log = logging.getLogger(__name__)

__all__ = [
    "ARRAYS_KEY",
    "CONFIG",
    "LAYOUT",
    "PAYLOAD",
    "PROTOCOL_RECORD",
    "SETUP",
    "STAGE",
    "STEP",
    "layout_of",
    "payload_of",
    "set_weight",
    "setup_messages",
    "step_messages",
    "strip_weight",
    "to_arrayrecord",
    "vector_of",
    "weight_of",
]

PROTOCOL_RECORD: Final = "secagg"  # the ConfigRecord carrying the protocol, both directions
STAGE: Final = "stage"  # SETUP or STEP
SETUP: Final = "setup"  # round config + model layout; reply: the first protocol message
STEP: Final = "step"  # any later protocol message (at the training stage with the strategy's
# content); reply: the client's answer (at the training stage with the ClientApp's metrics)
CONFIG: Final = "config"  # the round's config as JSON (MaskingConfig or ThresholdRoundConfig)
LAYOUT: Final = "layout"  # ParamSpec JSON of the model the round aggregates
PAYLOAD: Final = "payload"  # wire-encoded protocol message
ARRAYS_KEY: Final = "arrays-key"  # (training reply) the name of the ClientApp's ArrayRecord


def _numpy(record: ArrayRecord) -> dict[str, npt.NDArray[Any]]:
    return {name: array.numpy() for name, array in record.items()}


def layout_of(record: ArrayRecord) -> ParamSpec:
    """The names, shapes and dtypes of ``record`` (floating-point arrays only). Read from the
    arrays themselves: the legacy path's Arrays (from ``Parameters``) carry no dtype."""
    return ParamSpec.from_arrays(_numpy(record))


def vector_of(record: ArrayRecord, layout: ParamSpec) -> npt.NDArray[np.float32]:
    """``record`` as one float32 vector in ``layout``'s order; refuses another layout by name."""
    arrays = _numpy(record)
    layout.check_round(ParamSpec.from_arrays(arrays).digest())
    return layout.flatten(arrays)


def to_arrayrecord(vector: npt.ArrayLike, layout: ParamSpec) -> ArrayRecord:
    """The inverse of :func:`vector_of`, each array in its layout's dtype."""
    arrays: Mapping[str, npt.NDArray[Any]] = layout.unflatten(vector)
    out: dict[str, Array] = {}
    for spec in layout.tensors:
        arr = arrays[spec.name]
        if spec.dtype in ("float16", "float32", "float64"):
            arr = arr.astype(spec.dtype)
        out[spec.name] = Array(np.ascontiguousarray(arr))
    if not out:
        raise InvalidParameter("the model layout holds no arrays")
    return ArrayRecord(out)


def setup_messages(nodes: Iterable[int], *, config_json: str, layout: ParamSpec,
                   group_id: str) -> list[Message]:
    """A round's first messages: the round's config and model layout, to every node."""
    setup = ConfigRecord({STAGE: SETUP, CONFIG: config_json, LAYOUT: layout.to_json()})
    return [Message(RecordDict({PROTOCOL_RECORD: setup}), dst_node_id=node,
                    message_type=MessageType.TRAIN, group_id=group_id) for node in nodes]


def step_messages(outgoing: Mapping[int, bytes], node_of: Mapping[int, int], *,
                  group_id: str, contents: Mapping[int, RecordDict] | None = None
                  ) -> list[Message]:
    """A later stage's messages: client id -> protocol bytes, each to that client's node. With
    ``contents`` (node -> the strategy's content: the global model and its config), the stage
    at which the clients train: each message carries its node's content too."""
    out = []
    for party, data in outgoing.items():
        node = node_of[party]
        record = ConfigRecord({STAGE: STEP, PAYLOAD: data})
        body = RecordDict()
        if contents is not None:
            body = RecordDict(dict(contents[node].items()))
        body[PROTOCOL_RECORD] = record
        out.append(Message(body, dst_node_id=node, message_type=MessageType.TRAIN,
                           group_id=group_id))
    return out


def payload_of(reply: Message) -> tuple[bytes, ConfigRecord]:
    """The protocol bytes a client's reply carries, and their record; refuses a reply without."""
    record = reply.content.config_records.get(PROTOCOL_RECORD)
    payload = record.get(PAYLOAD) if record is not None else None
    if record is None or not isinstance(payload, bytes):
        raise InvalidParameter("the reply carries no secure-aggregation message")
    return payload, record


def weight_of(content: RecordDict, keys: Iterable[str], max_weight: int) -> int:
    """The client's weight: the first of metrics ``keys`` the reply holds (1 if none), capped at
    ``max_weight``."""
    found = [rec[key] for key in keys for rec in content.metric_records.values() if key in rec]
    if not found:
        return 1
    value = found[0]
    if isinstance(value, list) or not value >= 1:
        raise InvalidParameter("the client's weight metric must be a number >= 1")
    if float(value) > max_weight:  # an infinite one included, which round() cannot take
        _log.warning("weight capped at the round's max_weight %d", max_weight)
        return max_weight
    return round(float(value))


def strip_weight(content: RecordDict, keys: Iterable[str]) -> None:
    """Remove the metrics named ``keys`` (the client's weight) from every MetricRecord of
    ``content``."""
    for record in content.metric_records.values():
        for key in keys:
            if key in record:
                del record[key]


def set_weight(content: RecordDict, key: str, weight: int) -> None:
    """Put ``weight`` under metric ``key`` where the client's ClientApp reported it (the first
    MetricRecord, or a new one named ``metrics``)."""
    records = content.metric_records
    if not records:
        content["metrics"] = MetricRecord({key: weight})
        return
    next(iter(records.values()))[key] = weight
