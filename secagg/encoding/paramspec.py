"""A parameter dict <-> one float32 vector, with the layout recorded in a :class:`ParamSpec`.

Secure aggregation works on one flat vector; models are dicts of named tensors. The spec is the
contract between the two: both sides of a round must hold the same spec (its digest goes into the
protocol config), and every mismatch is reported by name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter

__all__ = ["ParamSpec", "TensorSpec"]

_ALLOWED_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """The ordered names, shapes and dtypes of a parameter dict."""

    tensors: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise InvalidParameter(f"ParamSpec tensor names must be unique; repeated: {dup[:5]}")
        for t in self.tensors:
            if t.dtype not in _ALLOWED_DTYPES:
                raise InvalidParameter(
                    f"tensor '{t.name}' has dtype {t.dtype}; expected one of {sorted(_ALLOWED_DTYPES)}"
                )
            if any(d < 0 for d in t.shape):
                raise InvalidParameter(f"tensor '{t.name}' has a negative dimension {t.shape}")

    @classmethod
    def from_arrays(cls, params: Mapping[str, Any]) -> ParamSpec:
        """The spec of ``params`` (numpy arrays or anything with ``.shape`` and ``.dtype``)."""
        tensors = []
        for name, arr in params.items():
            dtype = str(arr.dtype).removeprefix("torch.")
            tensors.append(TensorSpec(str(name), tuple(int(d) for d in arr.shape), dtype))
        return cls(tuple(tensors))

    @property
    def size(self) -> int:
        """Total number of scalars."""
        return sum(t.size for t in self.tensors)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    def flatten(self, params: Mapping[str, Any]) -> npt.NDArray[np.float32]:
        """Concatenate ``params`` in spec order into one float32 vector."""
        missing = [n for n in self.names if n not in params]
        extra = [n for n in params if n not in set(self.names)]
        if missing or extra:
            raise InvalidParameter(
                f"parameter names do not match the spec: missing {missing[:5]}, unexpected {extra[:5]}"
            )
        out = np.empty(self.size, dtype=np.float32)
        offset = 0
        for t in self.tensors:
            arr = np.asarray(params[t.name], dtype=np.float32)
            if tuple(arr.shape) != t.shape:
                raise InvalidParameter(
                    f"tensor '{t.name}' has shape {tuple(arr.shape)}; the spec expects {t.shape}"
                )
            out[offset : offset + t.size] = arr.reshape(-1)
            offset += t.size
        if not np.all(np.isfinite(out)):
            bad, offset = [], 0
            for t in self.tensors:
                if not np.all(np.isfinite(out[offset : offset + t.size])):
                    bad.append(t.name)
                offset += t.size
            raise InvalidParameter(
                f"non-finite values (nan/inf, or beyond float32 range) in tensor(s) {bad[:5]}"
            )
        return out

    def unflatten(self, vector: npt.ArrayLike) -> dict[str, npt.NDArray[Any]]:
        """Split a vector back into named arrays with the spec's shapes (float32 for 16-bit types)."""
        vec = np.asarray(vector)
        if vec.ndim != 1 or vec.shape[0] != self.size:
            raise InvalidParameter(
                f"vector has shape {vec.shape}; the spec expects ({self.size},)"
            )
        out: dict[str, npt.NDArray[Any]] = {}
        offset = 0
        for t in self.tensors:
            dtype = np.float64 if t.dtype == "float64" else np.float32
            out[t.name] = vec[offset : offset + t.size].astype(dtype).reshape(t.shape)
            offset += t.size
        return out

    def to_json(self) -> str:
        return json.dumps(
            [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.tensors],
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> ParamSpec:
        try:
            items = json.loads(text)
            return cls(
                tuple(TensorSpec(str(i["name"]), tuple(int(d) for d in i["shape"]), str(i["dtype"]))
                      for i in items)
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidParameter(f"ParamSpec JSON is malformed: {exc}") from None

    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON: equal specs, equal digests."""
        return hashlib.sha256(self.to_json().encode()).digest()

    def check_round(self, layout_digest: bytes) -> None:
        """Refuse a round opened for another model layout, naming both layouts.

        Two models of equal size would otherwise be summed silently, parameter i of one with
        parameter i of the other. A round that names no layout (empty digest) is checked on size
        only, by the protocol.
        """
        mine = self.digest()
        if layout_digest and not hmac.compare_digest(layout_digest, mine):
            raise InvalidParameter(
                f"the round is for model layout {layout_digest.hex()[:16]}..., this model's layout "
                f"is {mine.hex()[:16]}... ({len(self.tensors)} tensors, {self.size} parameters): "
                "the enterprises are not fine-tuning the same model; refusing to take part")
