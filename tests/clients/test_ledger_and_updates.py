"""The privacy ledger (durable, budget-enforcing, charged once) and the update exchange."""

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
from secagg_clients.federated import FederatedEnterprise, FederationPlan
from secagg_clients.model import EncoderKind
from secagg_clients.participants import RoundInfo
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
    a, b = (PrivacyLedger.load(tmp_path / f"{x}.json").entries for x in "ab")
    assert [e.gaussian_steps for e in a] == [e.gaussian_steps for e in b]  # time stamps differ
    assert [e.round for e in a] == [1, 2]
    assert a[1].total_epsilon > a[0].total_epsilon
    assert a[0].clip_norm == 1.0 and a[0].layout_digest == first.spec.digest().hex()
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


class Crash(Exception):
    """The process dies here (what a kill -9 would do to the loop)."""


class StubRuntime:
    """A server that opens ``round_id`` 7 (index 0) in ``mode`` plain and records what was asked;
    ``crash_in`` names the call that dies."""

    def __init__(self, crash_in: str | None = None) -> None:
        self.crash_in, self.calls = crash_in, []  # type: ignore[var-annotated]
        self.info = RoundInfo(round_id=7, index=0, mode="plain", config={}, client_id=0)

    def check_enrolment(self) -> dict[str, object]:
        return {"client_id": 0, "federation": "fed"}

    def peek_round(self, after: int) -> None:
        return None

    def check_layout(self, info: RoundInfo) -> None:
        self.calls.append("check_layout")

    def check_distributed_dp(self, info: RoundInfo, *, delta: float = 1e-5) -> None:
        pass

    def wait_for_round(self, after: int) -> RoundInfo:
        self.calls.append("wait_for_round")
        if self.crash_in == "wait_for_round":
            raise Crash
        return self.info

    def prepare(self, info: RoundInfo, vector: object, weight: int, *,
                delta: float = 1e-5) -> object:
        self.check_layout(info)  # as RuntimeClient.prepare does
        self.check_distributed_dp(info, delta=delta)
        self.calls.append("prepare")
        return None

    def take_part(self, info: RoundInfo, vector: object, weight: int, *,
                  on_release: object = None, party: object = None) -> object:
        self.calls.append("take_part")
        raise Crash if self.crash_in == "take_part" else AssertionError("not expected")

    def close(self) -> None:
        pass


def _enterprise(tmp_path: Path, records: list[Record], runtime: StubRuntime, *,
                budget: float = 8.0, **plan: object) -> FederatedEnterprise:
    terms: dict[str, object] = dict(rounds=1, budget_epsilon=budget, epochs=1, batch_size=16,
                                    encoder=TINY, lora_rank=4,
                                    noise_mode=NoiseMode.INSECURE_FAST)
    fed = FederationPlan(**{**terms, **plan})  # type: ignore[arg-type]
    client = EnterpriseClient.create(records, encoder=TINY, lora_rank=4,
                                     ledger=_ledger(tmp_path / "l.json", budget))
    return FederatedEnterprise(runtime, client, records[:8], name="energy_utility",  # type: ignore[arg-type]
                               plan=fed)


def test_client_at_its_budget_refuses_the_next_round_in_one_line_and_spends_nothing(
    tmp_path: Path, small_records: list[Record]
) -> None:
    spend = GaussianSteps(1 / 6, 1.0, 60)
    eps = epsilon(sample_rate=1 / 6, noise_multiplier=1.0, steps=60, delta=1e-5)
    budget = eps * 1.0001
    _ledger(tmp_path / "l.json", budget).record(spend, delta=1e-5, epsilon_rdp=eps,
                                                 epsilon_prv=eps)
    before = (tmp_path / "l.json").read_bytes()
    runtime = StubRuntime()
    ent = _enterprise(tmp_path, small_records, runtime, budget=budget)
    weights = [p.detach().clone() for p in ent.client.model.parameters()]
    with pytest.raises(BudgetExceeded) as refused:
        ent.run()
    line = str(refused.value)
    assert "\n" not in line
    for words in ("refusing round 1 of 1 before training", f"spent {eps:.4g}", "remaining",
                  "noise multiplier", "ceiling 8", "would bring the total to",
                  "--max-noise-multiplier"):
        assert words in line, (words, line)
    assert runtime.calls == []  # no round waited for, nothing sent
    assert (tmp_path / "l.json").read_bytes() == before  # nothing charged
    assert all(torch.equal(p, q) for p, q in zip(ent.client.model.parameters(), weights,
                                                 strict=True))
    # the same round fits once the knob the line names is turned (the ceiling raised)
    knob = float(line.split("--max-noise-multiplier ")[1].split()[0])
    assert knob > 8
    fits = FederationPlan(rounds=1, budget_epsilon=budget, epochs=1, batch_size=16,
                          max_noise_multiplier=knob * 1.01)
    assert fits.next_round(len(small_records), ent.client.ledger, rounds_done=0)


def test_spent_budget_names_no_knob_but_stopping(tmp_path: Path,
                                                 small_records: list[Record]) -> None:
    eps = epsilon(sample_rate=1 / 6, noise_multiplier=1.0, steps=60, delta=1e-5)
    _ledger(tmp_path / "l.json", eps).record(GaussianSteps(1 / 6, 1.0, 60), delta=1e-5,
                                              epsilon_rdp=eps, epsilon_prv=eps)
    ent = _enterprise(tmp_path, small_records, StubRuntime(), budget=eps)
    with pytest.raises(BudgetExceeded, match="cannot fit at any noise.*budget is spent"):
        ent.run()


def test_training_that_never_reached_a_round_is_not_charged_and_a_round_is_charged_once(
    tmp_path: Path, small_records: list[Record]
) -> None:
    # crash while waiting for the round: trained, but nothing was sent, so nothing is charged
    with pytest.raises(Crash):  # (two rounds planned: the restart below has budget left)
        _enterprise(tmp_path, small_records, StubRuntime("wait_for_round"), rounds=2).run()
    assert PrivacyLedger.load(tmp_path / "l.json").entries == ()
    # crash mid-round: charged once, before the first message
    runtime = StubRuntime("take_part")
    with pytest.raises(Crash):
        _enterprise(tmp_path, small_records, runtime, rounds=2).run()
    assert runtime.calls == ["wait_for_round", "check_layout", "prepare", "take_part"]
    (entry,) = PrivacyLedger.load(tmp_path / "l.json").entries
    assert (entry.server_round_id, entry.mode and entry.mode.value) == ("fed/7", "plain")
    # the restarted client finds round 7 still open: it refuses it instead of charging again
    runtime = StubRuntime()
    report = _enterprise(tmp_path, small_records, runtime).run()
    assert report.rounds[0].refused and "already took part" in str(report.rounds[0].reason)
    assert "take_part" not in runtime.calls
    assert len(PrivacyLedger.load(tmp_path / "l.json").entries) == 1
