"""The masking commands, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from secagg.cli import main


def test_simulate_masking_reports_exact_json(tmp_path: Path, capsys: object) -> None:
    out = tmp_path / "r.json"
    code = main(["simulate", "masking", "--clients", "8", "--params", "3000", "--dropout", "0.25",
                 "--stage", "random", "--seed", "4", "--active", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0
    assert report["exact"] is True
    assert report["survivors"] <= 8 and report["threshold"] >= 5
    assert report["upload_bytes_per_param"] <= 4


def test_simulate_masking_below_threshold_exits_3_with_a_clear_reason(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code = main(["simulate", "masking", "--clients", "5", "--params", "100", "--dropout", "0.6",
                 "--stage", "share", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 3
    assert report["exact"] is False and "threshold" in report["error"]


def test_bad_arguments_are_named() -> None:
    proc = subprocess.run([sys.executable, "-m", "secagg.cli", "simulate", "masking",
                           "--stage", "consistency", "--passive"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--passive" in proc.stderr


def test_bench_masking_without_anchor(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    code = main(["bench", "masking", "--clients", "5", "--params", "20000", "--compare", "none",
                 "--repeats", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0 and report["correct"] is True
    assert report["mask_gbps"] > 0 and report["aes_ctr_gbps"] > 0


def test_out_of_range_flags_are_named_by_their_flag() -> None:
    for argv, flag in ((["--params", "0"], "--params"), (["--clients", "1"], "--clients"),
                       (["--dropout", "1.0"], "--dropout")):
        proc = subprocess.run([sys.executable, "-m", "secagg.cli", "simulate", "masking", *argv],
                              capture_output=True, text=True)
        assert proc.returncode == 2
        assert f"{flag} must be" in proc.stderr and "found" in proc.stderr
