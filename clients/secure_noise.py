"""Opacus with cryptographically secure randomness, without torchcsprng.

Opacus's ``secure_mode=True`` needs torchcsprng, which has no build for torch 2.13 (checked with
pip: no distribution). DP-SGD's guarantee needs two random sources an attacker cannot predict:

* the Gaussian noise: :class:`CsprngDPOptimizer` overrides :meth:`DPOptimizer.add_noise` and draws
  it from :func:`secagg.dp.csprng.secure_normal` (AES-256-CTR keyed from ``os.urandom``, float64
  Box-Muller), summing 4 normals and dividing by 2 exactly as Opacus's secure mode does to defeat
  floating-point attacks on the sampler (Holohan and Braghin 2021, section 5.1);
* the Poisson batch sampling: :class:`CsprngPoissonSampler` draws each record's inclusion from the
  same kind of keystream.

:class:`SecurePrivacyEngine` is Opacus's :class:`PrivacyEngine` with those two parts swapped in;
everything else (per-sample gradients, clipping, the accountant hook) is Opacus's own code.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.data_loader import dtype_safe, shape_safe, wrap_collate_with_empty
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import default_collate

from secagg.dp.csprng import secure_normal, secure_uniform

__all__ = ["CsprngDPOptimizer", "CsprngPoissonSampler", "SecurePrivacyEngine"]


def _secure_gaussian(n: int, std: float) -> torch.Tensor:
    """``n`` float64 draws of N(0, std^2): (n1+n2+n3+n4)/2 of CSPRNG normals."""
    return torch.from_numpy(secure_normal(4 * n).reshape(4, n).sum(axis=0) * (0.5 * std))


class CsprngDPOptimizer(DPOptimizer):  # type: ignore[misc]
    """Opacus's flat-clipping DP optimizer whose noise comes from an AES-CTR keystream."""

    def add_noise(self) -> None:
        """One keystream per step for all parameters (not one key set-up per tensor), then split."""
        std = self.noise_multiplier * self.max_grad_norm
        grads = [p.summed_grad for p in self.params]
        for g in grads:
            _check_processed_flag(g)
        sizes = [g.numel() for g in grads]
        total = sum(sizes)
        flat = _secure_gaussian(total, std) if std else torch.zeros(total, dtype=torch.float64)
        for p, g, noise in zip(self.params, grads, torch.split(flat, sizes), strict=True):
            p.grad = (g + noise.to(dtype=g.dtype, device=g.device).view_as(g)).view_as(p)
            _mark_as_processed(g)


class CsprngPoissonSampler(UniformWithReplacementSampler):  # type: ignore[misc]
    """Poisson sampling (each record independently with ``sample_rate``) from a CSPRNG."""

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            u = secure_uniform(self.num_samples)
            yield np.flatnonzero(u < self.sample_rate).tolist()


class SecurePrivacyEngine(PrivacyEngine):  # type: ignore[misc]
    """:class:`opacus.PrivacyEngine` with CSPRNG noise and CSPRNG Poisson sampling."""

    def __init__(self, *, accountant: str = "rdp") -> None:
        with warnings.catch_warnings():
            # Opacus warns that its own secure RNG is off; ours replaces it (module docstring)
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            super().__init__(accountant=accountant, secure_mode=False)

    def _prepare_optimizer(self, *, optimizer: torch.optim.Optimizer, noise_multiplier: float,
                           max_grad_norm: Any, expected_batch_size: int,
                           loss_reduction: str = "mean", distributed: bool = False,
                           clipping: str = "flat", noise_generator: Any = None,
                           grad_sample_mode: str = "hooks", **kwargs: Any) -> DPOptimizer:
        if distributed or clipping != "flat" or grad_sample_mode != "hooks":
            raise ValueError("SecurePrivacyEngine supports flat clipping in hooks mode only")
        if noise_generator is not None:
            raise ValueError("a seeded noise generator is refused in the secure mode")
        if isinstance(optimizer, DPOptimizer):
            optimizer = optimizer.original_optimizer
        return CsprngDPOptimizer(
            optimizer=optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size, loss_reduction=loss_reduction,
            generator=None, secure_mode=False, **kwargs,
        )

    def _prepare_data_loader(self, data_loader: DataLoader[Any], *, poisson_sampling: bool,
                             distributed: bool, batch_first: bool = True,
                             rand_on_empty: bool = False) -> DataLoader[Any]:
        if not poisson_sampling or distributed:
            raise ValueError("SecurePrivacyEngine needs poisson_sampling=True, non-distributed")
        dataset = data_loader.dataset
        first = dataset[0]
        sampler = CsprngPoissonSampler(
            num_samples=len(dataset),  # type: ignore[arg-type]
            sample_rate=1 / len(data_loader),
            steps=len(data_loader),
        )
        collate = wrap_collate_with_empty(
            collate_fn=data_loader.collate_fn or default_collate,
            batch_first=batch_first,
            rand_on_empty=rand_on_empty,
            sample_empty_shapes=[(0, *shape_safe(x)) for x in first],
            dtypes=[dtype_safe(x) for x in first],
        )
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)

