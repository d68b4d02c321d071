"""How an enterprise trains across the federation's rounds: the plan, and the budget check that
refuses a round before any training (see :mod:`secagg_clients.federated`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from secagg.dp import Accountant, GaussianSteps, epsilon_of_history, noise_for_remaining_rounds
from secagg.dp.ledger import BudgetExceeded, PrivacyLedger
from secagg.errors import InvalidParameter

from .client import MAX_NOISE_MULTIPLIER
from .model import EncoderKind
from .trainer import DPConfig, NoiseMode

__all__ = ["FederationPlan"]


@dataclass(frozen=True, slots=True)
class FederationPlan:
    """How an enterprise trains across the federation's rounds."""

    rounds: int = 2
    budget_epsilon: float = 8.0
    delta: float = 1e-5
    # the DP recipe tuned for the enterprise task (see secagg_clients.trainer.DPConfig)
    epochs: int = 10
    batch_size: int = 96
    learning_rate: float = 3e-2
    max_grad_norm: float = 1.0
    max_length: int = 32
    noise_mode: NoiseMode = NoiseMode.SECURE
    encoder: EncoderKind = EncoderKind.MINILM
    lora_rank: int = 8
    test_fraction: float = 0.25
    weight: int = 1
    model_seed: int = 0  # the common starting model: the same in every enterprise
    #: refuse a round that would need more noise than this (see client.MAX_NOISE_MULTIPLIER)
    max_noise_multiplier: float = MAX_NOISE_MULTIPLIER

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_noise_multiplier) and self.max_noise_multiplier > 0):
            raise InvalidParameter(f"max_noise_multiplier must be a finite number > 0, found "
                                   f"{self.max_noise_multiplier}")
        if not (isinstance(self.rounds, int) and self.rounds >= 1):
            raise InvalidParameter(f"rounds must be an integer >= 1, found {self.rounds!r}")
        if not (math.isfinite(self.budget_epsilon) and self.budget_epsilon > 0):
            raise InvalidParameter(f"budget_epsilon must be a finite number > 0, found "
                                   f"{self.budget_epsilon}")

    def dp_config(self, num_records: int, history: Sequence[GaussianSteps] = (),
                  rounds_left: int | None = None,
                  accountant: Accountant = Accountant.RDP) -> DPConfig:
        """One round's training, with sigma such that ``history`` plus ``rounds_left`` such
        rounds (default: all ``rounds``) spend at most the budget."""
        probe = DPConfig(epochs=self.epochs, batch_size=self.batch_size,
                         learning_rate=self.learning_rate, max_grad_norm=self.max_grad_norm,
                         delta=self.delta, noise_multiplier=1.0, noise_mode=self.noise_mode,
                         max_length=self.max_length)
        sigma = noise_for_remaining_rounds(
            history, budget_epsilon=self.budget_epsilon, sample_rate=probe.sample_rate(num_records),
            steps=probe.steps(num_records), rounds=rounds_left or self.rounds, delta=self.delta,
            accountant=accountant)
        probe = replace(probe, accountant=accountant)
        return replace(probe, noise_multiplier=sigma)

    def next_round(self, num_records: int, ledger: PrivacyLedger, *, rounds_done: int) -> DPConfig:
        """The coming round's training, or :class:`BudgetExceeded` (one line) if the rounds left
        would need a noise multiplier above :attr:`max_noise_multiplier` or cannot fit the
        budget at all. Trains and charges nothing."""
        history = [e.gaussian_steps for e in ledger.entries]
        left = self.rounds - rounds_done
        try:
            config = self.dp_config(num_records, history, rounds_left=left,
                                    accountant=ledger.accountant)
            sigma = float(config.noise_multiplier or math.inf)
        except InvalidParameter:  # spent, or no sigma up to 1e4 fits
            sigma = math.inf
        ceiling = self.max_noise_multiplier
        if sigma <= ceiling:
            return config
        probe = DPConfig(epochs=self.epochs, batch_size=self.batch_size, delta=self.delta,
                         noise_multiplier=ceiling)
        q = probe.sample_rate(num_records)

        def total(rounds: int, epochs: int) -> float:
            steps = epochs * math.ceil(num_records / self.batch_size)
            more = [GaussianSteps(q, ceiling, steps)] * rounds
            return epsilon_of_history([*history, *more], delta=self.delta,
                                      accountant=ledger.accountant)

        spent, budget = ledger.spent(), self.budget_epsilon
        next_total = total(1, self.epochs)
        fit_rounds = next((k for k in range(left - 1, 0, -1) if total(k, self.epochs) <= budget), 0)
        fit_epochs = next((e for e in range(self.epochs - 1, 0, -1) if total(left, e) <= budget), 0)
        knobs = []
        if fit_rounds:
            knobs.append(f"--rounds {rounds_done + fit_rounds} ({fit_rounds} more)")
        if fit_epochs:
            knobs.append(f"--epochs {fit_epochs}")
        if math.isfinite(sigma):
            knobs.append(f"--max-noise-multiplier {sigma:.3g} (a noisier, less useful update)")
        if not knobs:
            knobs.append("none: the budget is spent for this data (stop; a new budget only for "
                         "new data)")
        need = "cannot fit at any noise" if not math.isfinite(sigma) else \
            f"would need noise multiplier {sigma:.3g} > ceiling {ceiling:g}"
        raise BudgetExceeded(
            f"refusing round {rounds_done + 1} of {self.rounds} before training: "
            f"'{ledger.enterprise}' spent {spent:.4g} of epsilon {budget:g} (delta {self.delta:g}, "
            f"{ledger.accountant.value}), remaining {max(0.0, budget - spent):.4g}; the {left} "
            f"round(s) left {need}, and the next at sigma {ceiling:g} would bring the total to "
            f"{next_total:.4g}; to fit: " + "; ".join(knobs))
