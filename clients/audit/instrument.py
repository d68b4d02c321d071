"""White-box instrumentation of Opacus's DP optimizer for one audited run, and the planted bugs.

:func:`instrumented` patches two methods of :class:`opacus.optimizers.DPOptimizer` (inherited
by the client's :class:`~secagg_clients.secure_noise.CsprngDPOptimizer`) for the length of a
``with`` block and restores them after:

* ``clip_and_accumulate``: the per-example gradients of the gradient-canary rows in the batch
  (found by :class:`CanaryTap`) are replaced with their Dirac directions, then Opacus's own
  clipping runs -- or, with :attr:`Plant.NO_CLIPPING`, a sum without clipping (the noise stays
  calibrated to the clip norm: the bug of forgetting to clip);
* ``scale_grad``: before Opacus divides by the batch size, ``p.grad`` is the clipped sum plus the
  noise -- the privatised update of the step. Its value on every canary coordinate is recorded,
  in clip norms and signed by the canary's direction.

Everything else (Poisson sampling, the secure noise, the accountant) is the pipeline's own code.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import nn

from .canaries import CANARY_TAG, GradientCanaries

__all__ = ["CanaryTap", "Plant", "Recorder", "instrumented"]


class Plant(enum.Enum):
    """A bug planted on purpose: the audit must catch each one."""

    NOISE_HALVED = "noise-halved"  #: the pipeline adds half the noise the ledger records
    NO_CLIPPING = "no-clipping"  #: per-example gradients are summed without clipping
    SAMPLE_RATE_MISREPORTED = "sample-rate-misreported"  #: full batches, ledger says q


class CanaryTap(nn.Module):
    """Wraps the model: notes which batch rows are gradient canaries, feeds them zero sensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = torch.zeros(0, dtype=torch.long)
        self.canary = torch.zeros(0, dtype=torch.long)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                sensors: torch.Tensor) -> torch.Tensor:
        tagged = sensors[:, 0] == CANARY_TAG
        self.rows = torch.nonzero(tagged).flatten()
        self.canary = sensors[tagged, 1].long()
        if bool(tagged.any()):
            sensors = sensors.clone()
            sensors[tagged] = 0.0
        out: torch.Tensor = self.model(input_ids, attention_mask, sensors)
        return out


class Recorder:
    """Per step: the privatised update on each canary coordinate, in clip norms, signed."""

    def __init__(self, canaries: GradientCanaries, clip_norm: float) -> None:
        self.canaries = canaries
        self.clip_norm = clip_norm
        self.steps: list[np.ndarray] = []
        self.present: list[np.ndarray] = []  #: per step, which canaries were in the batch

    def matrix(self) -> np.ndarray:
        return np.stack(self.steps) if self.steps else np.zeros((0, self.canaries.count))


@contextmanager
def instrumented(tap: CanaryTap, canaries: GradientCanaries, recorder: Recorder, *,
                 no_clipping: bool) -> Iterator[None]:
    original_clip = DPOptimizer.clip_and_accumulate
    original_scale = DPOptimizer.scale_grad
    where = {id(p): n for n, p in enumerate(canaries.params)}
    sign_t = torch.as_tensor(canaries.sign, dtype=torch.float32)

    def clip_and_accumulate(self: Any) -> None:
        present = np.zeros(canaries.count, dtype=bool)
        if tap.rows.numel():
            idx = tap.canary.numpy()
            present[idx] = True
            for p in self.params:
                n = where.get(id(p))
                if n is None:
                    continue
                gs = p.grad_sample
                gs[tap.rows] = 0.0
                mine = canaries.param_index[idx] == n
                if mine.any():
                    flat = gs.view(gs.shape[0], -1)
                    rows = tap.rows[torch.as_tensor(np.flatnonzero(mine))]
                    cols = torch.as_tensor(canaries.offset[idx[mine]])
                    flat[rows, cols] = (canaries.norm * sign_t[idx[mine]]).to(flat.dtype)
        recorder.present.append(present)
        if not no_clipping:
            original_clip(self)
            return
        for p in self.params:  # the planted bug: Opacus's loop with the clip factor left out
            _check_processed_flag(p.grad_sample)
            grad = self._get_flat_grad_sample(p).to(p.dtype).sum(dim=0)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)

    def scale_grad(self: Any) -> None:
        values = np.zeros(canaries.count)
        for p in self.params:
            n = where.get(id(p))
            if n is None or p.grad is None:
                continue
            mine = np.flatnonzero(canaries.param_index == n)
            if mine.size:
                flat = p.grad.detach().reshape(-1)
                values[mine] = flat[torch.as_tensor(canaries.offset[mine])].double().numpy()
        recorder.steps.append(values * canaries.sign / recorder.clip_norm)
        original_scale(self)

    DPOptimizer.clip_and_accumulate = clip_and_accumulate
    DPOptimizer.scale_grad = scale_grad
    try:
        yield
    finally:
        DPOptimizer.clip_and_accumulate = original_clip
        DPOptimizer.scale_grad = original_scale
