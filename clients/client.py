"""One enterprise's side of a round: budget check, DP training, update out, aggregate in.

This is what a server runtime, the demo or a Flower client calls::

    client = EnterpriseClient.create(records, ledger=PrivacyLedger.open(...))
    update = client.train_round(DPConfig(target_epsilon=1.0), server_round_id="fed/7",
                                mode="masking")   # update.vector, update.spec
    ...  # protect update.vector with secagg (masking / CKKS), receive the mean of all updates
    client.apply_aggregate(mean_update)

Every client built with the same ``build_model`` arguments starts from the same adapters and head,
and applying the same aggregate leaves all of them with the same trainable parameters.

Budget: before any training the round's cost is checked against the ledger, and a round whose
noise multiplier would exceed ``max_noise_multiplier`` (:data:`MAX_NOISE_MULTIPLIER` by default)
is refused too. :meth:`EnterpriseClient.train_round` charges the ledger as soon as it has trained
(its caller releases the update); a runtime that trains before it knows the round
(:mod:`secagg_clients.federated`) uses :meth:`~EnterpriseClient.train` and charges with
:meth:`~EnterpriseClient.charge` once the round is open and before anything is sent, keyed by the
server round id so that a retry never charges twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.dp import GaussianSteps, noise_multiplier
from secagg.dp.ledger import BudgetExceeded, LedgerEntry, PrivacyLedger, ProtectionMode
from secagg.encoding import ParamSpec
from secagg.errors import InvalidParameter

from .data import Record
from .model import EncoderKind, EnterpriseModel, build_model, load_tokenizer, make_dataset
from .trainer import DPConfig, TrainReport, evaluate, train_private
from .updates import (
    apply_aggregate,
    extract_update,
    get_trainable_vector,
    set_trainable_vector,
    trainable_spec,
)

__all__ = ["MAX_NOISE_MULTIPLIER", "EnterpriseClient", "RoundUpdate", "TrainedRound"]

#: Default ceiling on a round's noise multiplier. With the shipped recipe (expected batch 96) the
#: noise added to each step's averaged clipped gradient has standard deviation sigma / 96 of the
#: clip norm per coordinate; at 8 that is 1/12 of the clip norm on every one of ~76k coordinates,
#: i.e. a noise vector ~23 times longer than the largest possible signal per step. The recipe runs
#: at sigma 1.9 (epsilon 8, 2 rounds) and 3.2 (epsilon 4); 8 leaves room for stricter budgets and
#: fewer records, and refuses the regime where leftover budget is stretched over a round (the
#: issue's sigma 466 trained to local accuracy 0.28). A ceiling, not a guarantee of utility.
MAX_NOISE_MULTIPLIER = 8.0


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


@dataclass(frozen=True, slots=True)
class TrainedRound:
    """A trained, not yet charged round: its update, the mechanism it ran and what it cost."""

    vector: npt.NDArray[np.float32]
    spec: ParamSpec
    num_examples: int
    report: TrainReport
    clip_norm: float

    def __repr__(self) -> str:  # never print the (private) update values
        return (f"TrainedRound(dim={self.vector.shape[0]}, num_examples={self.num_examples}, "
                f"sigma={self.report.noise_multiplier:.4g}, uncharged)")


def check_noise_ceiling(planned: GaussianSteps, max_noise_multiplier: float | None) -> None:
    """Refuse (:class:`BudgetExceeded`, one line) a round noisier than the ceiling."""
    if max_noise_multiplier is not None and planned.noise_multiplier > max_noise_multiplier:
        raise BudgetExceeded(
            f"this round needs noise multiplier {planned.noise_multiplier:.4g} > the ceiling "
            f"{max_noise_multiplier:g} (q={planned.sample_rate:.4g}, steps={planned.steps}): its "
            "update would be mostly noise; raise the round's target epsilon, train fewer "
            "steps, or raise max_noise_multiplier knowingly")


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

    def train_round(self, config: DPConfig, *, progress: bool = True,
                    server_round_id: str | None = None,
                    mode: ProtectionMode | str | None = None,
                    max_noise_multiplier: float | None = MAX_NOISE_MULTIPLIER) -> RoundUpdate:
        """Check the budget, train with DP-SGD from the common base, record, return the update.

        Raises :class:`secagg.dp.ledger.BudgetExceeded` before any training if the round would
        overspend or need a noise multiplier above ``max_noise_multiplier``. A
        ``server_round_id`` already charged is refused before training (its update was trained
        and charged once). The model keeps its local weights until :meth:`apply_aggregate`.
        """
        if server_round_id is not None and self.ledger.entry_for(server_round_id) is not None:
            raise InvalidParameter(f"server round {server_round_id!r} is already charged to the "
                                   "ledger; a round is trained and charged once")
        trained = self.train(config, progress=progress, max_noise_multiplier=max_noise_multiplier)
        entry = self.charge(trained, server_round_id=server_round_id, mode=mode)
        return RoundUpdate(vector=trained.vector, spec=self.spec, num_examples=len(self.records),
                           ledger_entry=entry, mean_loss=trained.report.mean_loss)

    def train(self, config: DPConfig, *, progress: bool = True,
              max_noise_multiplier: float | None = MAX_NOISE_MULTIPLIER) -> TrainedRound:
        """Check the budget and the noise ceiling, then train; charges nothing (see :meth:`charge`).

        The caller must :meth:`charge` the result before releasing anything derived from it.
        """
        planned = self.plan(config)
        check_noise_ceiling(planned, max_noise_multiplier)
        self.ledger.check(planned, delta=config.delta)
        dataset = make_dataset(self.records, self.tokenizer, max_length=config.max_length)
        # train with the sigma just checked: no second calibration, and the mechanism trained is
        # exactly the one the budget allowed
        fixed = replace(config, target_epsilon=None, noise_multiplier=planned.noise_multiplier)
        report = train_private(self.model, dataset, fixed, progress=progress)
        vector = extract_update(self.model, self.base, self.spec)
        return TrainedRound(vector=vector, spec=self.spec, num_examples=len(self.records),
                            report=report, clip_norm=config.max_grad_norm)

    def charge(self, trained: TrainedRound, *, server_round_id: str | None = None,
               mode: ProtectionMode | str | None = None) -> LedgerEntry:
        """Record ``trained`` in the ledger (durably) before its update is sent; idempotent per
        ``server_round_id`` (charging the same round again returns its entry)."""
        r = trained.report
        return self.ledger.record(r.gaussian_steps, delta=r.delta, epsilon_rdp=r.epsilon_rdp,
                                  epsilon_prv=r.epsilon_prv, server_round_id=server_round_id,
                                  mode=mode, clip_norm=trained.clip_norm,
                                  layout_digest=trained.spec.digest())

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
