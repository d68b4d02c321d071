"""Canaries for the one-run audit (Steinke, Nasr and Jagielski 2023, section 6).

* White-box gradient canaries: canary ``j`` is a row of the training set whose per-example
  gradient is replaced (by :mod:`.instrument`) with a Dirac direction: ``sign_j * norm`` on one
  trainable coordinate ``j``, zero elsewhere; distinct canaries get distinct coordinates, so
  they do not interfere with each other. The row carries :data:`CANARY_TAG` in its first sensor
  field (real sensors are normalised into [-5, 5], so it cannot collide) and its canary index in
  the second. ``norm`` is far above the clip norm: a pipeline that clips scales it down to the
  clip norm, one that does not lets it through.
* Black-box input canaries: odd records (random nonsense words, random label, extreme sensors),
  trained on like any record and scored by the released model's loss on them.

Which canaries are included is drawn here (probability 1/2 each) from the audit's own seed: the
auditor's choice, not a secret of the pipeline. Every canary row is in the training set, included
or not: an excluded one carries :data:`EXCLUDED_TAG` (input canaries) or its index (gradient
canaries), and :mod:`.instrument` zeroes its per-example gradient, which is exactly "not in the
data" for DP-SGD (a zero gradient adds nothing, clipped or not). So the set's size, the batches'
layout and the random streams drawn for them (Poisson coins, dropout masks) do not depend on
which canaries are included, and the white-box scores may use them without seeing the bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from secagg.errors import InvalidParameter

from ..data import LABELS, SENSOR_FIELDS, Record

__all__ = ["CANARY_TAG", "EXCLUDED_TAG", "GradientCanaries", "gradient_canaries",
           "input_canaries", "tagged_rows"]

CANARY_TAG = 1.0e6
#: first sensor field of an excluded input canary's row (its gradient is zeroed)
EXCLUDED_TAG = 2.0e6
#: gradient canary norm, in clip norms (the auditor's choice: big enough to expose no clipping)
NORM_IN_CLIPS = 100.0
_SYLLABLES = ("zor", "quix", "vel", "thra", "mok", "plin", "gu", "ysk", "dra", "fen", "wob")


@dataclass(frozen=True)
class GradientCanaries:
    """m Dirac directions over the model's trainable parameters, and which were included."""

    params: tuple[nn.Parameter, ...]  #: the trainable parameters, in model order
    param_index: np.ndarray  #: [m] which parameter each canary sits in
    offset: np.ndarray  #: [m] flat offset inside that parameter
    sign: np.ndarray  #: [m] +1 or -1
    norm: float  #: the canary gradient's norm (before any clipping)
    included: np.ndarray  #: [m] bool

    @property
    def count(self) -> int:
        return int(self.sign.size)


def gradient_canaries(model: nn.Module, *, count: int, clip_norm: float,
                      rng: np.random.Generator) -> GradientCanaries:
    params = tuple(p for p in model.parameters() if p.requires_grad)
    sizes = np.array([p.numel() for p in params])
    total = int(sizes.sum())
    if count > total:
        raise InvalidParameter(
            f"canaries must be at most the model's {total} trainable coordinates (one Dirac "
            f"direction each), found {count}; lower --canaries"
        )
    flat = rng.choice(total, size=count, replace=False)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pidx = np.searchsorted(starts, flat, side="right") - 1
    return GradientCanaries(
        params=params, param_index=pidx, offset=flat - starts[pidx],
        sign=rng.choice(np.array([-1.0, 1.0]), size=count), norm=NORM_IN_CLIPS * clip_norm,
        included=rng.random(count) < 0.5,
    )


def tagged_rows(indices: np.ndarray, *, max_length: int, cls_id: int, sep_id: int,
                num_labels: int) -> tuple[torch.Tensor, ...]:
    """Training rows for the gradient canaries ``indices`` (all of them, included or not: the
    instrument zeroes the excluded ones' gradients): (ids, mask, sensors, labels)."""
    n = int(indices.size)
    ids = torch.zeros((n, max_length), dtype=torch.long)
    ids[:, 0], ids[:, 1] = cls_id, sep_id
    mask = torch.zeros((n, max_length), dtype=torch.long)
    mask[:, :2] = 1
    sensors = torch.zeros((n, len(SENSOR_FIELDS)), dtype=torch.float32)
    sensors[:, 0] = CANARY_TAG
    sensors[:, 1] = torch.as_tensor(indices, dtype=torch.float32)
    labels = torch.as_tensor(np.arange(n) % num_labels, dtype=torch.long)
    return ids, mask, sensors, labels


def input_canaries(*, count: int, rng: np.random.Generator) -> tuple[list[Record], np.ndarray]:
    """``count`` odd records and which of them are included."""
    records = []
    for _ in range(count):
        words = ["".join(rng.choice(_SYLLABLES, size=3)) for _ in range(6)]
        sensors = tuple(float(v) for v in rng.choice([-40.0, 900.0], size=len(SENSOR_FIELDS)))
        records.append(Record(text=" ".join(words), sensors=sensors,
                              label=int(rng.integers(len(LABELS)))))
    return records, rng.random(count) < 0.5
