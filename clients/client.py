"""One enterprise's side of a round: budget check, DP training, update out, aggregate in.

This is what a server runtime, the demo or a Flower client calls::

    client = EnterpriseClient.create(records, ledger=PrivacyLedger.open(...))
    update = client.train_round(DPConfig(target_epsilon=1.0))   # update.vector, update.spec
    ...  # protect update.vector with secagg (masking / CKKS), receive the mean of all updates
    client.apply_aggregate(mean_update)

Every client built with the same ``build_model`` arguments starts from the same adapters and head,
and applying the same aggregate leaves all of them with the same trainable parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.dp import GaussianSteps, noise_multiplier
from secagg.dp.ledger import LedgerEntry, PrivacyLedger
from secagg.encoding import ParamSpec

from .data import Record
from .model import EncoderKind, EnterpriseModel, build_model, load_tokenizer, make_dataset
from .trainer import DPConfig, evaluate, train_private
from .updates import (
    apply_aggregate,
    extract_update,
    get_trainable_vector,
    set_trainable_vector,
    trainable_spec,
)

__all__ = ["EnterpriseClient", "RoundUpdate"]


@dataclass(frozen=True, slots=True)
class RoundUpdate:
    """A round's result: the update vector (after - before) with its spec, and what it cost."""

    vector: npt.NDArray[np.float32]
    spec: ParamSpec
    num_examples: int
    ledger_entry: LedgerEntry
    mean_loss: float

    def __repr__(self) -> str:  # never print the (private) update values
        return (f"RoundUpdate(dim={self.vector.shape[0]}, num_examples={self.num_examples}, "
                f"round={self.ledger_entry.round}, total_epsilon={self.ledger_entry.total_epsilon:.4g})")


class EnterpriseClient:
    """An enterprise's model, data and privacy ledger."""

    def __init__(self, *, model: EnterpriseModel, tokenizer: Any, records: Sequence[Record],
                 ledger: PrivacyLedger) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.records = list(records)
        self.ledger = ledger
        self.spec = trainable_spec(model)
        self.base = get_trainable_vector(model, self.spec)

    @classmethod
    def create(cls, records: Sequence[Record], *, ledger: PrivacyLedger,
               encoder: EncoderKind | str = EncoderKind.MINILM, lora_rank: int = 8,
               seed: int = 0) -> EnterpriseClient:
        """Build the common starting model (same ``seed`` everywhere) around this data."""
        model = build_model(encoder=encoder, lora_rank=lora_rank, seed=seed)
        return cls(model=model, tokenizer=load_tokenizer(), records=records, ledger=ledger)

    def plan(self, config: DPConfig) -> GaussianSteps:
        """The mechanism ``config`` will run on this data (sigma calibrated if a target is given)."""
        n = len(self.records)
        q, steps = config.sample_rate(n), config.steps(n)
        sigma = config.noise_multiplier
        if sigma is None:
            assert config.target_epsilon is not None  # DPConfig guarantees one of the two
            sigma = noise_multiplier(target_epsilon=config.target_epsilon, sample_rate=q,
                                     steps=steps, delta=config.delta, accountant=config.accountant)
        return GaussianSteps(q, sigma, steps)

    def train_round(self, config: DPConfig, *, progress: bool = True) -> RoundUpdate:
        """Check the budget, train with DP-SGD from the common base, record, return the update.

        Raises :class:`secagg.dp.ledger.BudgetExceeded` before any training if the round would
        overspend. The model keeps its local weights until :meth:`apply_aggregate`.
        """
        planned = self.plan(config)
        self.ledger.check(planned, delta=config.delta)
        dataset = make_dataset(self.records, self.tokenizer, max_length=config.max_length)
        # train with the sigma just checked: no second calibration, and the mechanism trained is
        # exactly the one the budget allowed
        fixed = replace(config, target_epsilon=None, noise_multiplier=planned.noise_multiplier)
        report = train_private(self.model, dataset, fixed, progress=progress)
        entry = self.ledger.record(report.gaussian_steps, delta=config.delta,
                                   epsilon_rdp=report.epsilon_rdp, epsilon_prv=report.epsilon_prv)
        vector = extract_update(self.model, self.base, self.spec)
        return RoundUpdate(vector=vector, spec=self.spec, num_examples=len(self.records),
                           ledger_entry=entry, mean_loss=report.mean_loss)

    def apply_aggregate(self, aggregate: npt.ArrayLike) -> None:
        """Set the model to base + ``aggregate`` (the released mean update); it is the new base."""
        self.base = apply_aggregate(self.model, self.base, aggregate, self.spec)

    def restore_base(self, vector: npt.ArrayLike) -> None:
        """Set the model to a saved combined model (``vector`` from :attr:`base`), e.g. after a
        restart; raises if it does not fit this model's trainable parameters."""
        base = np.asarray(vector, dtype=np.float32)
        set_trainable_vector(self.model, base, self.spec)
        self.base = base.copy()

    def evaluate(self, records: Sequence[Record], *, max_length: int = 32) -> float:
        """Accuracy on ``records``."""
        return evaluate(self.model, make_dataset(records, self.tokenizer, max_length=max_length))
