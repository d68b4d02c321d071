"""``secagg demo`` end to end: a real server process, one DP-training process per enterprise.

The tiny randomly initialised encoder keeps this to about a minute per mode; the protocol,
server, store, ledgers and DP training are the ones the MiniLM demo runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secagg.cli import main
from secagg.dp.ledger import PrivacyLedger

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["masking", "ckks", "ckks-threshold"])
def test_demo_completes_and_the_aggregate_is_exact(mode: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo.json"
    code = main(["demo", "--mode", mode, "--encoder", "test_only_tiny", "--epochs", "1",
                 "--rounds", "2", "--epsilon", "6", "--workdir", str(tmp_path / "run"),
                 "--json", str(out), "--no-progress"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["mode"] == mode
    assert report["rounds_completed"] == 2
    assert report["max_abs_error_vs_plaintext"] <= 1e-4
    names = ["energy_utility", "residential_security", "city_operations"]
    for name in names:
        # calibrated for the whole run: most of the budget is used, none is overspent
        assert 5.0 < report["epsilon"][name] <= 6.0
        assert report[f"epsilon.{name}"] == report["epsilon"][name]
        assert 0.0 <= report["accuracy"][name]["combined"] <= 1.0
        assert report["bytes_sent"][name] > 4 * report["trainable_parameters"] * 0.3
    assert 0.0 <= report["combined_accuracy"] <= 1.0
    server = report["server"]
    assert server["plaintext_updates_found_on_disk"] == 0
    assert server["bodies_stored_after"] == 0
    assert server["messages"] > 2 * len(names)
    # the ledgers on the enterprises' disks agree with the report
    for name in names:
        ledger = PrivacyLedger.load(tmp_path / "run" / f"{name}.ledger.json")
        assert len(ledger.entries) == 2
        assert ledger.spent() == pytest.approx(report["epsilon"][name])
    table = capsys.readouterr().out
    assert "combined model" in table and "plaintext updates found: 0" in table


def test_demo_refuses_bad_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["demo", "--clients", "5"]) == 2
    assert "--clients must be 2 or 3" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    assert main(["demo", "--workdir", str(tmp_path / "used")]) == 2
    assert "is not empty" in capsys.readouterr().err
    # client-level noise settings without the client-level noise: refused, not ignored
    assert main(["demo", "--client-noise", "2.0"]) == 2
    assert "only --distributed-dp adds" in capsys.readouterr().err
    assert main(["demo", "--mode", "ckks", "--client-clip", "0.5"]) == 2
    assert "--client-clip set the client-level noise" in capsys.readouterr().err
