"""The privacy ledger (durable, budget-enforcing, deterministic) and the update exchange."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from secagg.cli import main
from secagg.dp import GaussianSteps, epsilon
from secagg.dp.ledger import BudgetExceeded, PrivacyLedger
from secagg.errors import InvalidParameter
from secagg_clients.client import EnterpriseClient
from secagg_clients.data import Record
from secagg_clients.model import EncoderKind
from secagg_clients.trainer import DPConfig, NoiseMode

TINY = EncoderKind.TEST_ONLY_TINY


def _ledger(path: Path, budget: float = 5.0) -> PrivacyLedger:
    return PrivacyLedger.open(path, enterprise="energy_utility", budget_epsilon=budget, delta=1e-5)


def _cfg(**kw: object) -> DPConfig:
    base: dict[str, object] = dict(epochs=1, batch_size=16, target_epsilon=1.5,
                                   noise_mode=NoiseMode.INSECURE_FAST, seed=11)
    base.update(kw)
    return DPConfig(**base)  # type: ignore[arg-type]


def test_ledger_survives_restart_and_blocks_past_budget(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    step = GaussianSteps(0.05, 1.0, 100)
    eps = epsilon(sample_rate=0.05, noise_multiplier=1.0, steps=100, delta=1e-5)
    budget = 1.2 * eps
    ledger = _ledger(path, budget=budget)
    ledger.record(step, delta=1e-5, epsilon_rdp=eps, epsilon_prv=eps)
    del ledger
    reopened = _ledger(path, budget=budget)  # a new process would do exactly this
    assert len(reopened.entries) == 1
    assert reopened.spent() == pytest.approx(eps)
    assert budget < epsilon(sample_rate=0.05, noise_multiplier=1.0, steps=200, delta=1e-5)
    with pytest.raises(BudgetExceeded, match="budget"):
        reopened.record(step, delta=1e-5, epsilon_rdp=eps, epsilon_prv=eps)
    assert len(_ledger(path, budget=budget).entries) == 1  # the refused round left no trace
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.json"]  # no temp files left


def test_ledger_terms_cannot_change(tmp_path: Path) -> None:
    _ledger(tmp_path / "l.json", budget=3.0)
    with pytest.raises(InvalidParameter, match="budget_epsilon"):
        _ledger(tmp_path / "l.json", budget=30.0)
    with pytest.raises(InvalidParameter, match="delta"):
        _ledger(tmp_path / "l.json", budget=3.0).check(GaussianSteps(0.1, 1.0, 1), delta=1e-6)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidParameter, match="not valid JSON"):
        PrivacyLedger.load(tmp_path / "bad.json")


def test_client_rounds_same_seed_give_identical_ledgers_and_updates(
    tmp_path: Path, small_records: list[Record]
) -> None:
    results = []
    for run in ("a", "b"):
        client = EnterpriseClient.create(small_records, ledger=_ledger(tmp_path / f"{run}.json"),
                                         encoder=TINY, lora_rank=4, seed=2)
        first = client.train_round(_cfg(), progress=False)
        client.apply_aggregate(first.vector)
        second = client.train_round(_cfg(), progress=False)
        results.append((first.vector, second.vector))
    a, b = (tmp_path / "a.json").read_bytes(), (tmp_path / "b.json").read_bytes()
    assert a == b
    doc = json.loads(a)
    assert [r["round"] for r in doc["rounds"]] == [1, 2]
    assert doc["rounds"][1]["total_epsilon"] > doc["rounds"][0]["total_epsilon"]
    assert all(np.array_equal(x, y) for x, y in zip(results[0], results[1], strict=True))


def test_training_past_budget_is_refused_before_training(
    tmp_path: Path, small_records: list[Record]
) -> None:
    client = EnterpriseClient.create(small_records, ledger=_ledger(tmp_path / "l.json", 1.6),
                                     encoder=TINY, lora_rank=4)
    client.train_round(_cfg(), progress=False)
    before = [p.detach().clone() for p in client.model.parameters()]
    with pytest.raises(BudgetExceeded, match="energy_utility"):
        client.train_round(_cfg(), progress=False)
    assert all(torch.equal(p, q) for p, q in zip(client.model.parameters(), before, strict=True))
    assert len(PrivacyLedger.load(tmp_path / "l.json").entries) == 1


def test_aggregate_updates_every_enterprise_identically(
    tmp_path: Path, small_records: list[Record]
) -> None:
    clients = [
        EnterpriseClient.create(small_records[i::2], encoder=TINY, lora_rank=4, seed=4,
                                ledger=_ledger(tmp_path / f"{i}.json"))
        for i in range(2)
    ]
    assert clients[0].spec.digest() == clients[1].spec.digest()
    updates = [c.train_round(_cfg(), progress=False) for c in clients]
    assert not np.array_equal(updates[0].vector, updates[1].vector)
    assert "vector" not in repr(updates[0]) and str(updates[0].vector[0]) not in repr(updates[0])
    mean = (updates[0].vector + updates[1].vector) / 2
    for c in clients:
        c.apply_aggregate(mean)
    states = [[p.detach() for p in c.model.parameters()] for c in clients]
    assert all(torch.equal(p, q) for p, q in zip(*states, strict=True))
    with pytest.raises(InvalidParameter, match="shape"):
        clients[0].apply_aggregate(mean[:-1])
    with pytest.raises(InvalidParameter, match="nan"):
        clients[0].apply_aggregate(np.full_like(mean, np.nan))


def test_cli_shows_the_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = _ledger(tmp_path / "l.json")
    ledger.record(GaussianSteps(0.05, 1.0, 50), delta=1e-5, epsilon_rdp=1.0, epsilon_prv=0.9)
    assert main(["privacy", "ledger", str(tmp_path / "l.json"), "--json",
                 str(tmp_path / "o.json")]) == 0
    out = capsys.readouterr().out
    assert "energy_utility" in out and "remaining" in out
    assert json.loads((tmp_path / "o.json").read_text())["rounds"][0]["steps"] == 50
    assert main(["privacy", "ledger", str(tmp_path / "missing.json")]) == 2
