"""``secagg audit`` end to end through the real CLI: the artefacts and their agreement, the
help, and one-line errors (exit 2) for a missing or corrupt ledger or data file."""

from __future__ import annotations

import html
import json
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import secagg.cli as cli
from secagg_clients.audit.report import NOT_DONE, fmt
from tests.audit.conftest import make_ledger

AUDIT = EntryPoint("audit", "secagg_clients.audit.command", cli.ENTRY_POINT_GROUP)


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if pyproject registered the command (audit = "secagg_clients.audit.command")."""
    monkeypatch.setattr(cli, "entry_points",
                        lambda group: [AUDIT] if group == cli.ENTRY_POINT_GROUP else [])


def _audit(*args: str) -> int:
    return cli.main(["audit", *args, "--encoder", "test_only_tiny", "--no-progress"])


def test_writes_consistent_artefacts(tmp_path: Path, data_file: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    ledger = make_ledger(tmp_path / "l.json", [(0.25, 1.5, 8), (0.25, 1.5, 8)])
    out = tmp_path / "out"
    assert _audit("--ledger", str(ledger), "--data", str(data_file), "--out", str(out),
                  "--canaries", "60") == 0
    assert "report:" in capsys.readouterr().out
    doc = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    for fig in doc["figures"]:
        png = out / fig["file"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert fig["file"] in page and fig["command"].startswith("secagg audit --ledger")
    assert page.count("data:image/png;base64,") == len(doc["figures"]) == 5  # self-contained
    acc, emp = doc["accounting"], doc["empirical"]
    for value in (acc["epsilon_rdp"], acc["epsilon_prv"], acc["spent"], acc["remaining"],
                  emp["theory"], emp["theory_rdp"], emp["theory_prv"],
                  emp["white_box"]["epsilon"], emp["black_box"]["epsilon"],
                  emp["noise_check"]["sigma_hat"], *[r["total_prv"] for r in acc["rounds"]]):
        assert fmt(value) in page, value
    assert doc["verdict"]["text"] in html.unescape(page)
    # the accounting is recomputed: two rounds compose to more than one, less than twice
    assert acc["rounds"][0]["total_rdp"] < acc["epsilon_rdp"] < 2 * acc["rounds"][0]["total_rdp"]
    assert acc["disagreement_flag"] == (acc["disagreement"] > 0.02)
    assert acc["remaining"] == pytest.approx(8.0 - acc["spent"])
    assert emp["claimed"] == {"sample_rate": 0.25, "noise_multiplier": 1.5, "steps": 8}
    assert not emp["violation"] and doc["verdict"]["status"] == "pass"
    assert all(section in page for section in NOT_DONE) and doc["not_done"] == list(NOT_DONE)
    assert page.index("verdict") < page.index("<h2>Accounting")  # the verdict is on top


def test_a_planted_bug_turns_the_verdict(tmp_path: Path, data_file: Path) -> None:
    ledger = make_ledger(tmp_path / "l.json", [(1.0, 4.0, 1)])
    out = tmp_path / "bug"
    assert _audit("--ledger", str(ledger), "--data", str(data_file), "--out", str(out),
                  "--plant", "no-clipping", "--canaries", "200") == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["empirical"]["plant"] == "no-clipping" and doc["empirical"]["violation"]
    assert doc["verdict"]["status"] == "fail" and "VIOLATION" in doc["verdict"]["text"]


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["audit", "--help"])
    text = capsys.readouterr().out
    for needle in ("--ledger", "--plant", "noise-halved", "LOWER bound", "Steinke",
                   "report.html", "examples:"):
        assert needle in text


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("secagg: error: "), err
    for needle in needles:
        assert needle in err


def test_bad_inputs_are_one_line(tmp_path: Path, data_file: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    ledger = make_ledger(tmp_path / "l.json", [(0.25, 1.5, 8)])
    out = str(tmp_path / "o")
    assert _audit("--ledger", str(tmp_path / "none.json"), "--data", str(data_file),
                  "--out", out) == 2
    _one_line_error(capsys, "does not exist")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "secagg-privacy-ledger/1", "rounds": [')
    assert _audit("--ledger", str(broken), "--data", str(data_file), "--out", out) == 2
    _one_line_error(capsys, "not valid JSON")
    assert _audit("--ledger", str(ledger), "--data", str(tmp_path / "no.csv"), "--out", out) == 2
    _one_line_error(capsys, "does not exist")
    bad = tmp_path / "bad.csv"
    bad.write_text(data_file.read_text().replace("hazard", "meteor", 1))
    assert _audit("--ledger", str(ledger), "--data", str(bad), "--out", out) == 2
    _one_line_error(capsys, "label")
    empty = make_ledger(tmp_path / "empty.json", [])
    assert _audit("--ledger", str(empty), "--data", str(data_file), "--out", out) == 2
    _one_line_error(capsys, "no round")
    assert _audit("--ledger", str(ledger), "--data", str(data_file), "--out", out,
                  "--round", "3") == 2
    _one_line_error(capsys, "--round")
    assert not Path(out).exists()  # nothing written for a refused audit
