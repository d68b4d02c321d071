"""``secagg privacy ledger``: recomputed totals, the chain's status, signature verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secagg.cli import main
from secagg.dp import GaussianSteps, epsilon_of_history, noise_multiplier
from secagg.dp.ledger import PrivacyLedger
from secagg.identity import Identity, Roster

DELTA = 1e-5


def test_edited_totals_are_not_believed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bug report: totals edited to 0.7 made the command say 'spent 0.7 of 8'."""
    sigma = noise_multiplier(target_epsilon=7.987, sample_rate=0.05, steps=100, delta=DELTA)
    step = GaussianSteps(0.05, sigma, 100)
    truth = epsilon_of_history([step], delta=DELTA)
    path = tmp_path / "l.jsonl"
    ledger = PrivacyLedger.open(path, enterprise="energy_utility", budget_epsilon=8.0, delta=DELTA)
    ledger.record(step, delta=DELTA, epsilon_rdp=truth, epsilon_prv=truth, server_round_id="f/1",
                  mode="masking", clip_norm=1.0)
    lines = path.read_text().splitlines()
    entry = json.loads(lines[2])
    entry.update(total_epsilon=0.7, epsilon_rdp=0.7, epsilon_prv=0.7)
    lines[2] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")
    assert main(["privacy", "ledger", str(path), "--json", str(tmp_path / "o.json")]) == 1
    out = capsys.readouterr().out
    assert f"spent {truth:.4f} of 8" in out and "spent 0.7" not in out
    assert "chain: BROKEN at entry 1" in out
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["spent"] == pytest.approx(truth) and report["chain"]["first_bad"] == 1


def test_verify_a_signed_ledger_against_the_roster(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    me, other = Identity.generate("energy_utility"), Identity.generate("city_operations")
    Roster.of("fed", [me, other]).save(tmp_path / "roster.json")
    path = tmp_path / "l.jsonl"
    ledger = PrivacyLedger.open(path, enterprise="energy_utility", budget_epsilon=8.0, delta=DELTA,
                                identity=me)
    ledger.record(GaussianSteps(0.05, 1.0, 50), delta=DELTA, epsilon_rdp=1.0, epsilon_prv=1.0)
    argv = ["privacy", "ledger", str(path), "--verify"]
    assert main([*argv, "--roster", str(tmp_path / "roster.json")]) == 0
    assert "verified: chain intact, signed by the enterprise's identity" in capsys.readouterr().out
    assert main([*argv, "--public-key", other.public_key.hex()]) == 1
    assert "NOT verified" in capsys.readouterr().out
    # positive control: the same ledger, its entry edited, fails the same check
    lines = path.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["noise_multiplier"] = 50.0
    lines[2] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")
    assert main([*argv, "--roster", str(tmp_path / "roster.json")]) == 1
    assert "NOT verified" in capsys.readouterr().out


def test_old_format_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "old.json").write_text(json.dumps({
        "format": "secagg-privacy-ledger/1", "enterprise": "e", "budget_epsilon": 8.0,
        "delta": 1e-5, "accountant": "rdp", "rounds": []}, indent=2))
    assert main(["privacy", "ledger", str(tmp_path / "old.json")]) == 2
    assert "secagg-privacy-ledger/1" in capsys.readouterr().err
