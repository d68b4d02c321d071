"""The privacy ledger: a durable per-enterprise record of every round's DP-SGD spend.

A JSON file, rewritten atomically (temporary file in the same directory, fsync, ``os.replace``,
fsync of the directory), so a crash leaves the old ledger or the new one, never half of either.
Each entry keeps the mechanism (sample rate, noise multiplier, steps, delta) and its epsilon by
RDP and PRV; the total is recomputed by composing all entries in the ledger's accountant (Opacus),
never by adding epsilons. :meth:`PrivacyLedger.check` refuses a round that would take the total past
the budget, *before* any training. Entries hold no time stamps: the same run gives the same file.
One writer per ledger file (one process per enterprise). The enterprise client
(``secagg_clients``) keeps it; it lives in the library so that ``secagg privacy ledger`` reads it
without the client side.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from secagg.dp import Accountant, GaussianSteps, PrivacySpend, epsilon_of_history
from secagg.dp.accounting import check_delta
from secagg.errors import InvalidParameter, SecAggError

__all__ = ["BudgetExceeded", "LedgerEntry", "PrivacyLedger"]

FORMAT = "secagg-privacy-ledger/1"
_TERMS = ("enterprise", "budget_epsilon", "delta", "accountant", "rounds")


class BudgetExceeded(SecAggError):
    """Training this round would spend more than the enterprise's privacy budget."""


@dataclass(frozen=True, slots=True)
class LedgerEntry(PrivacySpend):
    """One recorded round: what it spent, its number, and the composed total after it."""

    round: int
    total_epsilon: float

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, **asdict(self)}  # "round" first, as the file shows it


def _entry(raw: Any, where: str) -> LedgerEntry:
    """A stored round, checked field by field (a corrupt ledger must not be spent from)."""
    if not isinstance(raw, dict):
        raise InvalidParameter(f"{where}: expected a JSON object, found {type(raw).__name__}")
    names = [f.name for f in fields(LedgerEntry)]
    if sorted(raw) != sorted(names):
        raise InvalidParameter(
            f"{where}: expected exactly the fields {names}, found {sorted(raw)}"
        )
    for name in ("round", "steps"):
        if type(raw[name]) is not int:
            raise InvalidParameter(f"{where}: '{name}' must be an integer, found {raw[name]!r}")
    for name in names:
        if not (isinstance(raw[name], int | float) and not isinstance(raw[name], bool)
                and math.isfinite(raw[name])):
            raise InvalidParameter(f"{where}: '{name}' must be a finite number, found {raw[name]!r}")
    entry = LedgerEntry(**raw)
    try:
        entry.gaussian_steps  # noqa: B018 -- validates sample_rate, noise_multiplier, steps
    except InvalidParameter as exc:
        raise InvalidParameter(f"{where}: {exc}") from None
    return entry


class PrivacyLedger:
    """An enterprise's budget (epsilon at ``delta`` under ``accountant``) and its spent rounds."""

    def __init__(self, path: Path, *, enterprise: str, budget_epsilon: float, delta: float,
                 accountant: Accountant, entries: list[LedgerEntry]) -> None:
        self.path = path
        self.enterprise = enterprise
        self.budget_epsilon = budget_epsilon
        self.delta = delta
        self.accountant = accountant
        self._entries = entries

    @classmethod
    def open(cls, path: str | Path, *, enterprise: str, budget_epsilon: float, delta: float,
             accountant: Accountant | str = Accountant.RDP) -> PrivacyLedger:
        """Open the ledger at ``path``, creating it if absent; its stored terms must match."""
        if not (math.isfinite(budget_epsilon) and budget_epsilon > 0):
            raise InvalidParameter(f"budget_epsilon must be a finite number > 0, found {budget_epsilon}")
        check_delta(delta)
        acc = Accountant.parse(accountant)
        p = Path(path)
        if p.exists():
            ledger = cls.load(p)
            for field, want, have in (("enterprise", enterprise, ledger.enterprise),
                                      ("budget_epsilon", budget_epsilon, ledger.budget_epsilon),
                                      ("delta", delta, ledger.delta),
                                      ("accountant", acc, ledger.accountant)):
                if want != have:
                    raise InvalidParameter(
                        f"ledger {str(p)!r} was created with {field}={have!r}, but {want!r} was "
                        "asked; a budget cannot be changed after spending starts (use a new ledger "
                        "file only if the data set is new)"
                    )
            return ledger
        ledger = cls(p, enterprise=enterprise, budget_epsilon=budget_epsilon, delta=delta,
                     accountant=acc, entries=[])
        ledger._save()
        return ledger

    @classmethod
    def load(cls, path: str | Path) -> PrivacyLedger:
        """Read an existing ledger (for display or to continue spending)."""
        p = Path(path)
        try:
            doc = json.loads(p.read_text())
        except FileNotFoundError:
            raise InvalidParameter(f"ledger file {str(p)!r} does not exist") from None
        except OSError as exc:
            raise InvalidParameter(f"ledger file {str(p)!r} cannot be read: {exc}") from None
        except ValueError as exc:
            raise InvalidParameter(f"ledger file {str(p)!r} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise InvalidParameter(f"{str(p)!r} is not a privacy ledger (format {FORMAT!r})")
        missing = [k for k in _TERMS if k not in doc]
        if missing:
            raise InvalidParameter(f"ledger {str(p)!r} is malformed: missing field(s) {missing}")
        if not isinstance(doc["rounds"], list):
            raise InvalidParameter(f"ledger {str(p)!r} is malformed: 'rounds' must be a list")
        entries = [_entry(e, f"ledger {str(p)!r} round {n}")
                   for n, e in enumerate(doc["rounds"], start=1)]
        try:
            budget, delta = float(doc["budget_epsilon"]), float(doc["delta"])
        except (TypeError, ValueError):
            raise InvalidParameter(
                f"ledger {str(p)!r} is malformed: budget_epsilon and delta must be numbers"
            ) from None
        return cls(p, enterprise=str(doc["enterprise"]), budget_epsilon=budget, delta=delta,
                   accountant=Accountant.parse(doc["accountant"]), entries=entries)

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    def spent(self) -> float:
        """Total epsilon so far: all rounds composed in the ledger's accountant."""
        return self._total([e.gaussian_steps for e in self._entries])

    def remaining(self) -> float:
        return max(0.0, self.budget_epsilon - self.spent())

    def _total(self, history: list[GaussianSteps]) -> float:
        return epsilon_of_history(history, delta=self.delta, accountant=self.accountant)

    def check(self, planned: GaussianSteps, *, delta: float) -> float:
        """The total epsilon if ``planned`` runs; raises :class:`BudgetExceeded` past the budget."""
        if delta != self.delta:
            raise InvalidParameter(
                f"round delta={delta} differs from the ledger's delta={self.delta}; train with "
                "the ledger's delta"
            )
        total = self._total([e.gaussian_steps for e in self._entries] + [planned])
        if total > self.budget_epsilon:
            raise BudgetExceeded(
                f"enterprise '{self.enterprise}': this round (q={planned.sample_rate:.4g}, "
                f"sigma={planned.noise_multiplier:.4g}, steps={planned.steps}) would bring epsilon "
                f"to {total:.4g} > budget {self.budget_epsilon:g} at delta={self.delta:g} "
                f"({self.accountant.value}); spent so far {self.spent():.4g}. Lower the round's "
                "target_epsilon or steps, raise its noise, or stop training"
            )
        return total

    def record(self, planned: GaussianSteps, *, delta: float, epsilon_rdp: float,
               epsilon_prv: float) -> LedgerEntry:
        """Check, append and durably save one round; returns the new entry."""
        total = self.check(planned, delta=delta)
        entry = LedgerEntry(
            sample_rate=planned.sample_rate, noise_multiplier=planned.noise_multiplier,
            steps=planned.steps, delta=delta, epsilon_rdp=epsilon_rdp, epsilon_prv=epsilon_prv,
            round=len(self._entries) + 1, total_epsilon=total,
        )
        self._entries.append(entry)
        try:
            self._save()
        except OSError:
            self._entries.pop()
            raise
        return entry

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "enterprise": self.enterprise, "budget_epsilon": self.budget_epsilon,
            "delta": self.delta, "accountant": self.accountant.value,
            "rounds": [e.to_dict() for e in self._entries],
        }

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.to_dict(), indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
