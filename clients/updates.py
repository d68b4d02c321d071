"""The exchanged update: trainable parameters (LoRA adapters + sensor projection + head) as one
ParamSpec vector, and back.

Only trainable parameters enter the spec, so the frozen encoder never leaves the enterprise. The
update of a round is ``after - before`` of that vector; a released aggregate (the mean of the
enterprises' updates) is applied as ``base + aggregate`` to the round's common starting point, so
every enterprise that applies the same aggregate ends with bit-identical trainable parameters.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from secagg.encoding import ParamSpec
from secagg.errors import InvalidParameter

__all__ = ["apply_aggregate", "extract_update", "get_trainable_vector", "set_trainable_vector",
           "trainable_spec"]


def _named_trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def trainable_spec(model: nn.Module) -> ParamSpec:
    """The layout of the exchanged parameters (its digest belongs in the protocol config)."""
    params = _named_trainable(model)
    if not params:
        raise InvalidParameter("model has no trainable parameters; build it with build_model()")
    return ParamSpec.from_arrays(params)


def get_trainable_vector(model: nn.Module, spec: ParamSpec) -> npt.NDArray[np.float32]:
    """The trainable parameters, flattened in spec order."""
    return spec.flatten({n: p.detach().cpu().numpy() for n, p in _named_trainable(model).items()})


@torch.no_grad()
def set_trainable_vector(model: nn.Module, vector: npt.ArrayLike, spec: ParamSpec) -> None:
    """Overwrite the trainable parameters from a spec-ordered vector."""
    if trainable_spec(model).digest() != spec.digest():
        raise InvalidParameter(
            "the model's trainable parameters do not match the spec (names, shapes or dtypes "
            "differ); build every enterprise's model with the same build_model arguments"
        )
    arrays = spec.unflatten(vector)
    for name, p in _named_trainable(model).items():
        p.copy_(torch.from_numpy(np.ascontiguousarray(arrays[name])).to(p.dtype))


def extract_update(
    model: nn.Module, base: npt.NDArray[np.float32], spec: ParamSpec
) -> npt.NDArray[np.float32]:
    """This round's update: trainable parameters now minus ``base`` (the round's start)."""
    now = get_trainable_vector(model, spec)
    if base.shape != now.shape:
        raise InvalidParameter(f"base has shape {base.shape}; the spec expects {now.shape}")
    return (now - base).astype(np.float32)


def apply_aggregate(
    model: nn.Module, base: npt.NDArray[np.float32], aggregate: npt.ArrayLike, spec: ParamSpec
) -> npt.NDArray[np.float32]:
    """Set the trainable parameters to ``base + aggregate``; returns that vector (the next base)."""
    agg = np.asarray(aggregate, dtype=np.float32)
    if agg.shape != base.shape:
        raise InvalidParameter(
            f"aggregate has shape {agg.shape}; the spec expects {base.shape} (a mean update)"
        )
    if not np.all(np.isfinite(agg)):
        raise InvalidParameter("aggregate contains nan or inf; refuse to apply it")
    new = (base + agg).astype(np.float32)
    set_trainable_vector(model, new, spec)
    return new
