"""White-box instrumentation of Opacus's DP optimizer for one audited run, and the planted bugs.

:func:`instrumented` patches two methods of :class:`opacus.optimizers.DPOptimizer` (inherited
by the client's :class:`~secagg_clients.secure_noise.CsprngDPOptimizer`) for the length of a
``with`` block and restores them after:

* ``clip_and_accumulate``: the per-example gradients of the gradient-canary rows in the batch
  (found by :class:`CanaryTap`) are replaced with their Dirac directions if the canary is
  included and with zero if not, those of excluded input canaries with zero, then Opacus's own
  clipping runs -- or, with :attr:`Plant.NO_CLIPPING`, a sum without clipping (the noise stays
  calibrated to the clip norm: the bug of forgetting to clip);
* ``scale_grad``: before Opacus divides by the batch size, ``p.grad`` is the clipped sum plus the
  noise -- the privatised update of the step. Its value on every canary coordinate is recorded,
  in clip norms and signed by the canary's direction.

Beside it, per step, the auditor's own account of what the *other* rows of the batch (records and
input canaries, not the gradient canaries) put on each canary coordinate: their per-example
gradients at this step's model, clipped as the claim says (Opacus's flat rule), summed. The
white-box scores subtract it, so a canary's coordinate holds its own contribution plus noise
(without it the real gradients on those coordinates swamp the canaries: at m = 1000 on 64
records they hid halved noise from the noise check). It is a function of the run's iterates and
of data the auditor holds, never of the gradient canaries' inclusion bits, so the guesses stay a
legitimate post-processing for the one-run bounds (computed the same way under every plant).

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

from .canaries import CANARY_TAG, EXCLUDED_TAG, GradientCanaries

__all__ = ["CanaryTap", "Plant", "Recorder", "instrumented"]


class Plant(enum.Enum):
    """A bug planted on purpose: the audit must catch each one."""

    NOISE_HALVED = "noise-halved"  #: the pipeline adds half the noise the ledger records
    NO_CLIPPING = "no-clipping"  #: per-example gradients are summed without clipping
    SAMPLE_RATE_MISREPORTED = "sample-rate-misreported"  #: full batches, ledger says q


class CanaryTap(nn.Module):
    """Wraps the model: notes which batch rows are gradient canaries and which are excluded
    input canaries, feeds both zero sensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = torch.zeros(0, dtype=torch.long)
        self.canary = torch.zeros(0, dtype=torch.long)
        self.excluded = torch.zeros(0, dtype=torch.long)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                sensors: torch.Tensor) -> torch.Tensor:
        tagged = sensors[:, 0] == CANARY_TAG
        out_rows = sensors[:, 0] == EXCLUDED_TAG
        self.rows = torch.nonzero(tagged).flatten()
        self.canary = sensors[tagged, 1].long()
        self.excluded = torch.nonzero(out_rows).flatten()
        if bool(tagged.any()) or bool(out_rows.any()):
            sensors = sensors.clone()
            sensors[tagged | out_rows] = 0.0
        out: torch.Tensor = self.model(input_ids, attention_mask, sensors)
        return out


class Recorder:
    """Per step: the privatised update on each canary coordinate, in clip norms, signed."""

    def __init__(self, canaries: GradientCanaries, clip_norm: float) -> None:
        self.canaries = canaries
        self.clip_norm = clip_norm
        self.steps: list[np.ndarray] = []
        self.present: list[np.ndarray] = []  #: per step, which canaries were in the batch
        #: per step, the clipped sum of the other rows' gradients on each canary coordinate
        self.others: list[np.ndarray] = []

    def matrix(self) -> np.ndarray:
        return np.stack(self.steps) if self.steps else np.zeros((0, self.canaries.count))

    def corrected(self) -> np.ndarray:
        """:meth:`matrix` less the other rows' clipped gradients: canary plus noise."""
        if not self.steps:
            return self.matrix()
        return np.asarray(self.matrix() - np.stack(self.others), dtype=np.float64)


@contextmanager
def instrumented(tap: CanaryTap, canaries: GradientCanaries, recorder: Recorder, *,
                 no_clipping: bool) -> Iterator[None]:
    original_clip = DPOptimizer.clip_and_accumulate
    original_scale = DPOptimizer.scale_grad
    where = {id(p): n for n, p in enumerate(canaries.params)}
    sign_t = torch.as_tensor(canaries.sign, dtype=torch.float32)

    def clip_and_accumulate(self: Any) -> None:
        present = np.zeros(canaries.count, dtype=bool)
        if self.params and self.params[0].grad_sample.shape[0] == 0:
            # an empty Poisson batch: the trainer skipped the forward pass, so the tap still
            # holds the previous batch's rows; this step has no canary and no other row
            empty = torch.zeros(0, dtype=torch.long)
            tap.rows, tap.canary, tap.excluded = empty, empty, empty
        if tap.excluded.numel():
            for p in self.params:
                p.grad_sample[tap.excluded] = 0.0
        if tap.rows.numel():
            all_idx = tap.canary.numpy()
            keep = canaries.included[all_idx]  # excluded gradient canaries stay at zero
            idx, kept_rows = all_idx[keep], tap.rows[torch.as_tensor(np.flatnonzero(keep))]
            present[idx] = True
            for p in self.params:
                gs = p.grad_sample
                gs[tap.rows] = 0.0
                n = where.get(id(p))
                if n is None:
                    continue
                mine = canaries.param_index[idx] == n
                if mine.any():
                    flat = gs.view(gs.shape[0], -1)
                    rows = kept_rows[torch.as_tensor(np.flatnonzero(mine))]
                    cols = torch.as_tensor(canaries.offset[idx[mine]])
                    flat[rows, cols] = (canaries.norm * sign_t[idx[mine]]).to(flat.dtype)
        recorder.present.append(present)
        recorder.others.append(_others_on_canaries(self, tap.rows))
        if not no_clipping:
            original_clip(self)
            return
        for p in self.params:  # the planted bug: Opacus's loop with the clip factor left out
            _check_processed_flag(p.grad_sample)
            grad = self._get_flat_grad_sample(p).to(p.dtype).sum(dim=0)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)

    def _others_on_canaries(opt: Any, canary_rows: torch.Tensor) -> np.ndarray:
        """Sum over non-canary rows of min(1, C / (|g| + 1e-6)) g, on the canary coordinates."""
        gss = [p.grad_sample for p in opt.params]
        batch = gss[0].shape[0] if gss else 0
        out = np.zeros(canaries.count)
        if batch == 0:
            return out
        norms = torch.stack([g.reshape(batch, -1).norm(2, dim=-1) for g in gss], dim=1).norm(2,
                                                                                           dim=1)
        factor = (opt.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        factor[canary_rows] = 0.0
        for p in opt.params:
            n = where.get(id(p))
            if n is None:
                continue
            mine = np.flatnonzero(canaries.param_index == n)
            if mine.size:
                flat = p.grad_sample.detach().reshape(batch, -1)
                cols = flat[:, torch.as_tensor(canaries.offset[mine])].double()
                out[mine] = (factor.double() @ cols).numpy()
        return np.asarray(out * canaries.sign / recorder.clip_norm, dtype=np.float64)

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
