"""The released model: a loss-threshold membership-inference attack, with DP and without.

The enterprise's records are split in two at random (seeded): the members train the model, the
non-members never touch it. The enterprise's own pipeline (:func:`~secagg_clients.model.build_model`)
is trained twice from the same initial weights on the members: once with DP-SGD
(:func:`~secagg_clients.trainer.train_private`, the secure noise, the ledger round's noise
multiplier, the same epochs and expected batch) and once without
(:func:`~secagg_clients.trainer.train_nonprivate`). Each trained model is what a round would
release; the attacker (Yeom et al. 2018) scores every record by minus its loss under the model and
guesses "member" above a threshold. The AUC over all thresholds is reported (0.5: chance), with
the chance band of the Mann-Whitney null for this many records and the largest gap between true
and false positive rates (the attack's advantage).

A DP-SGD run at epsilon bounds the advantage at (e^eps - 1 + 2 delta)/(e^eps + 1) for one record
(Humphries et al. 2020); the report prints that bound beside the measured advantage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from secagg.errors import InvalidParameter

from ..data import Record
from .server_view import auc

__all__ = ["ReleasedModel", "advantage", "released_model_mia"]


def advantage(pos: npt.NDArray[np.float64], neg: npt.NDArray[np.float64]) -> float:
    """max over thresholds of TPR - FPR (the membership advantage)."""
    best = 0.0
    for thr in np.concatenate([pos, neg]):
        best = max(best, float(np.mean(pos >= thr) - np.mean(neg >= thr)))
    return best


@dataclass(frozen=True)
class ReleasedModel:
    members: int
    nonmembers: int
    epochs: int
    batch_size: int
    noise_multiplier: float
    epsilon: float
    delta: float
    auc_dp: float
    auc_plain: float
    advantage_dp: float
    advantage_plain: float
    train_loss_dp: float
    train_loss_plain: float
    member_losses_plain: npt.NDArray[np.float64]
    nonmember_losses_plain: npt.NDArray[np.float64]
    member_losses_dp: npt.NDArray[np.float64]
    nonmember_losses_dp: npt.NDArray[np.float64]

    @property
    def auc_sd(self) -> float:
        m, n = self.members, self.nonmembers
        return math.sqrt((m + n + 1) / (12.0 * m * n))

    @property
    def advantage_bound(self) -> float:
        e = math.exp(min(self.epsilon, 700.0))
        return min(1.0, (e - 1 + 2 * self.delta) / (e + 1))

    @property
    def dp_within_bound(self) -> bool:
        """The DP model's measured advantage does not exceed what its epsilon allows, plus the
        sampling slack of this many records (3 null standard deviations of the AUC, doubled)."""
        return self.advantage_dp <= self.advantage_bound + 6 * self.auc_sd

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": self.members, "nonmembers": self.nonmembers, "epochs": self.epochs,
            "batch_size": self.batch_size, "noise_multiplier": self.noise_multiplier,
            "epsilon": self.epsilon, "delta": self.delta,
            "auc_dp": self.auc_dp, "auc_no_dp": self.auc_plain,
            "advantage_dp": self.advantage_dp, "advantage_no_dp": self.advantage_plain,
            "advantage_bound_dp": self.advantage_bound, "auc_null_sd": self.auc_sd,
            "dp_within_bound": self.dp_within_bound,
            "train_loss_dp": self.train_loss_dp, "train_loss_no_dp": self.train_loss_plain,
            "mean_loss": {"dp": {"members": float(self.member_losses_dp.mean()),
                                 "nonmembers": float(self.nonmember_losses_dp.mean())},
                          "no_dp": {"members": float(self.member_losses_plain.mean()),
                                    "nonmembers": float(self.nonmember_losses_plain.mean())}},
        }


@torch.no_grad()
def _losses(model: torch.nn.Module, data: torch.utils.data.TensorDataset) -> npt.NDArray[np.float64]:
    model.eval()
    ids, mask, sensors, labels = data.tensors
    loss = torch.nn.functional.cross_entropy(model(ids, mask, sensors), labels, reduction="none")
    return np.asarray(loss.double().numpy(), dtype=np.float64)


def released_model_mia(
    records: Sequence[Record], *, noise_multiplier: float, epochs: int = 10,
    batch_size: int | None = None, learning_rate: float = 3e-2, delta: float = 1e-5,
    encoder: str = "minilm", clip_norm: float = 1.0, seed: int = 0, progress: bool = False,
    adapter_lr_scale: float | None = None,
) -> ReleasedModel:
    """Train the pipeline with and without DP on half of ``records``; attack both models."""
    from secagg.dp import Accountant, epsilon

    from ..model import build_model, load_tokenizer, make_dataset
    from ..trainer import ADAPTER_LR_SCALE, DPConfig, train_nonprivate, train_private

    if len(records) < 8:
        raise InvalidParameter(f"the released-model attack needs at least 8 records, found "
                               f"{len(records)}")
    order = np.random.default_rng(seed).permutation(len(records))
    half = len(records) // 2
    members = [records[i] for i in order[:half]]
    nonmembers = [records[i] for i in order[half:2 * half]]
    tokenizer = load_tokenizer()
    train = make_dataset(members, tokenizer)
    held = make_dataset(nonmembers, tokenizer)
    batch = batch_size if batch_size is not None else max(1, half // 3)
    scale = ADAPTER_LR_SCALE if adapter_lr_scale is None else adapter_lr_scale

    plain = build_model(encoder=encoder, seed=seed)
    loss_plain = train_nonprivate(plain, train, epochs=epochs, batch_size=batch,
                                  learning_rate=learning_rate, seed=seed, progress=progress,
                                  adapter_lr_scale=scale)
    dp = build_model(encoder=encoder, seed=seed)
    report = train_private(dp, train, DPConfig(
        epochs=epochs, batch_size=batch, learning_rate=learning_rate, max_grad_norm=clip_norm,
        delta=delta, noise_multiplier=noise_multiplier, adapter_lr_scale=scale),
        progress=progress)
    eps = epsilon(sample_rate=report.sample_rate, noise_multiplier=report.noise_multiplier,
                  steps=report.steps, delta=delta, accountant=Accountant.PRV)
    mp, npl = _losses(plain, train), _losses(plain, held)
    md, nd = _losses(dp, train), _losses(dp, held)
    return ReleasedModel(
        members=len(members), nonmembers=len(nonmembers), epochs=epochs, batch_size=batch,
        noise_multiplier=report.noise_multiplier, epsilon=eps, delta=delta,
        auc_dp=auc(-md, -nd), auc_plain=auc(-mp, -npl),
        advantage_dp=advantage(-md, -nd), advantage_plain=advantage(-mp, -npl),
        train_loss_dp=report.mean_loss, train_loss_plain=loss_plain,
        member_losses_plain=mp, nonmember_losses_plain=npl, member_losses_dp=md,
        nonmember_losses_dp=nd,
    )
