"""The accounting section: every ledger round recomputed, never read from the file's totals.

The ledger is read through :class:`secagg.dp.ledger.PrivacyLedger` only (its own checks name a
corrupt field). Each round's mechanism (sample rate, noise multiplier, steps) is composed at the
ledger's delta by Opacus's RDP accountant and by its PRV accountant; the two are independent
upper bounds, PRV the tighter, and a gap beyond :data:`DISAGREEMENT` is flagged so an auditor
looks at which one the enterprise's budget used. Sample-level only: the ledger records no
client-level mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from secagg.dp import Accountant, GaussianSteps, epsilon_of_history
from secagg.dp.ledger import PrivacyLedger

__all__ = ["DISAGREEMENT", "AccountingSection", "account_ledger"]

#: relative gap between the RDP and PRV epsilons above which the report flags the ledger
DISAGREEMENT = 0.02


@dataclass(frozen=True, slots=True)
class AccountingSection:
    enterprise: str
    delta: float
    accountant: str
    budget_epsilon: float
    #: per round: q, sigma, steps, this round alone by RDP/PRV, cumulative by RDP/PRV
    rounds: tuple[dict[str, float], ...]
    epsilon_rdp: float
    epsilon_prv: float
    spent: float
    remaining: float
    disagreement: float
    flagged: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "enterprise": self.enterprise, "level": "sample", "delta": self.delta,
            "accountant": self.accountant, "budget_epsilon": self.budget_epsilon,
            "epsilon_rdp": self.epsilon_rdp, "epsilon_prv": self.epsilon_prv,
            "spent": self.spent, "remaining": self.remaining,
            "disagreement": self.disagreement, "disagreement_flag": self.flagged,
            "disagreement_threshold": DISAGREEMENT, "rounds": list(self.rounds),
            "client_level": "not recorded in this ledger (no client-level mechanism per round)",
        }


def _eps(history: list[GaussianSteps], delta: float, acc: Accountant) -> float:
    return epsilon_of_history(history, delta=delta, accountant=acc)


def account_ledger(ledger: PrivacyLedger) -> AccountingSection:
    """Recompose every round of ``ledger`` by RDP and PRV (the file's totals are not read)."""
    history: list[GaussianSteps] = []
    rounds: list[dict[str, float]] = []
    for n, entry in enumerate(ledger.entries, start=1):
        steps = entry.gaussian_steps
        history.append(steps)
        rounds.append({
            "round": n, "sample_rate": steps.sample_rate,
            "noise_multiplier": steps.noise_multiplier, "steps": steps.steps,
            "epsilon_rdp": _eps([steps], ledger.delta, Accountant.RDP),
            "epsilon_prv": _eps([steps], ledger.delta, Accountant.PRV),
            "total_rdp": _eps(history, ledger.delta, Accountant.RDP),
            "total_prv": _eps(history, ledger.delta, Accountant.PRV),
        })
    rdp = rounds[-1]["total_rdp"] if rounds else 0.0
    prv = rounds[-1]["total_prv"] if rounds else 0.0
    spent = rdp if ledger.accountant is Accountant.RDP else prv
    gap = abs(rdp - prv) / min(rdp, prv) if min(rdp, prv) > 0 else 0.0
    return AccountingSection(
        enterprise=ledger.enterprise, delta=ledger.delta, accountant=ledger.accountant.value,
        budget_epsilon=ledger.budget_epsilon, rounds=tuple(rounds), epsilon_rdp=rdp,
        epsilon_prv=prv, spent=spent, remaining=max(0.0, ledger.budget_epsilon - spent),
        disagreement=gap, flagged=gap > DISAGREEMENT,
    )
