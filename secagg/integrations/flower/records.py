"""What the Flower mod and workflow put in Flower's records, and the model <-> vector mapping.

Every protocol message travels as the bytes of :mod:`secagg.masking.wire` in one ``ConfigRecord``
named :data:`PROTOCOL_RECORD`, inside Flower ``train`` messages. The first message of a round
(:data:`SETUP`) also carries the strategy's own content (the global model and its config) and
the round's :class:`~secagg.masking.MaskingConfig` and model layout; the client trains on it,
and its reply carries the key advertisement and the ClientApp's metrics, never its model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import InvalidParameter

__all__ = [
    "ARRAYS_KEY",
    "CONFIG",
    "LAYOUT",
    "PAYLOAD",
    "PROTOCOL_RECORD",
    "SETUP",
    "STAGE",
    "STEP",
    "WEIGHT_KEY",
    "layout_of",
    "to_arrayrecord",
    "vector_of",
]

PROTOCOL_RECORD: Final = "secagg"  # the ConfigRecord carrying the protocol, both directions
STAGE: Final = "stage"  # SETUP or STEP
SETUP: Final = "setup"  # round config + strategy content; reply: key advertisement + metrics
STEP: Final = "step"  # any later protocol message; reply: the client's answer
CONFIG: Final = "config"  # MaskingConfig.to_dict() as JSON
LAYOUT: Final = "layout"  # ParamSpec JSON of the model the round aggregates
WEIGHT_KEY: Final = "weight-key"  # the metric holding the client's weight (number of examples)
PAYLOAD: Final = "payload"  # wire-encoded protocol message
ARRAYS_KEY: Final = "arrays-key"  # (reply to SETUP) the name of the ClientApp's ArrayRecord


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
