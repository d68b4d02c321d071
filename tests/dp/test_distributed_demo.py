"""``secagg demo --mode masking --distributed-dp``: the smart-city demo with client-level DP
inside the masked sum (a real server and one DP-training process per enterprise, the tiny
encoder: about a minute and a half on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secagg.cli import main
from secagg.dp.ledger import PrivacyLedger

pytestmark = pytest.mark.slow


def test_demo_with_distributed_dp_prints_client_level_epsilon(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo.json"
    code = main(["demo", "--mode", "masking", "--distributed-dp", "--client-noise", "1.0",
                 "--client-clip", "1.0", "--encoder", "test_only_tiny", "--epochs", "1",
                 "--rounds", "2", "--epsilon", "6", "--workdir", str(tmp_path / "run"),
                 "--json", str(out), "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["rounds_completed"] == 2
    cl = report["client_level"]
    t = cl["min_noise_shares"]
    for name, eps in cl["epsilon"].items():
        ledger = PrivacyLedger.load(tmp_path / "run" / f"{name}.ledger.json")
        ledger.verify()
        entries = ledger.client_level_entries
        assert [e.noise_shares for e in entries] == cl["noise_shares"][name] == [3, 3]
        assert all(e.min_noise_shares == t <= e.noise_shares for e in entries)
        assert eps == pytest.approx(ledger.client_level_spent(), rel=1e-12)
        assert 0 < entries[0].epsilon < eps  # two releases compose
        assert len(ledger.entries) == 2  # and the DP-SGD rounds are charged as before
    table = capsys.readouterr().out
    assert "client-level epsilon" in table and "the distributed DP noise, by design" in table


def test_distributed_dp_needs_masking(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--mode", "ckks", "--distributed-dp"]) == 2
    assert "--distributed-dp" in capsys.readouterr().err
