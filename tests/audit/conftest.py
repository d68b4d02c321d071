"""Audit fixtures: a small slice of a shipped enterprise and ledgers made through the ledger API."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from secagg.dp import GaussianSteps, epsilon
from secagg.dp.ledger import PrivacyLedger
from secagg_clients.data import Record, enterprise_path, load_enterprise


@pytest.fixture(scope="session")
def records() -> list[Record]:
    return load_enterprise("energy_utility")[:64]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    lines = enterprise_path("energy_utility").read_text().splitlines()[:65]  # header + 64
    path = tmp_path / "energy.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_ledger(path: Path, rounds: list[tuple[float, float, int]], *, delta: float = 1e-5,
                budget: float = 8.0) -> Path:
    ledger = PrivacyLedger.open(path, enterprise="energy_utility", budget_epsilon=budget,
                                delta=delta)
    for q, sigma, steps in rounds:
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"opacus\..*")
        kw = dict(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=delta)
        ledger.record(GaussianSteps(q, sigma, steps), delta=delta,
                      epsilon_rdp=epsilon(accountant="rdp", **kw),  # type: ignore[arg-type]
                      epsilon_prv=epsilon(accountant="prv", **kw))  # type: ignore[arg-type]
    return path
