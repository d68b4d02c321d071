"""``secagg bench ckks --mode threshold`` at tiny sizes: the JSON keys (the dealer bench's contract
keys plus decrypt_s and threshold), the defaults (t a strict majority, n - t absent at
decryption), the error within its promise, and the dealer mode still the default. No assertion
depends on how fast anything ran."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from secagg.cli import main

CONTRACT = ("bytes_per_param_ratio", "client_encrypt_s", "server_sum_s", "max_abs_error")


def test_threshold_bench_keys_defaults_and_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "threshold.json"
    rc = main(["bench", "ckks", "--clients", "5", "--params", "3000", "--mode", "threshold",
               "--compare", "nvflare", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    for key in (*CONTRACT, "decrypt_s", "decrypt_parallel_s"):
        assert isinstance(report[key], float), key
    for key in CONTRACT:
        assert report[f"nvflare.{key}"] == report["nvflare"][key], key
    assert report["mode"] == "threshold"
    assert report["threshold"] == 3  # 5 // 2 + 1
    assert len(report["dropped_at_decrypt"]) == 2 and len(report["decryptors"]) == 3
    assert set(report["dropped_at_decrypt"]).isdisjoint(report["decryptors"])
    assert report["decrypt_s"] >= report["decrypt_parallel_s"] >= report["combine_s"]
    assert report["promised_max_abs_error"] == 1e-6
    assert report["max_abs_error"] <= report["promised_max_abs_error"]
    assert isinstance(report["size_vs_nvflare"], float)
    assert isinstance(report["server_sum_vs_nvflare"], float)
    assert set(report["targets_met"]) == {"bytes_per_param_ratio", "max_abs_error",
                                          "server_sum_s", "completed_with_dropped"}
    assert report["targets_met"]["max_abs_error"] and report["targets_met"]["completed_with_dropped"]
    # one upload chunk is one polynomial at the data level, bit-packed, plus a small header
    level_bits = report["threshold_params"]["data_level_bits"]
    per = 8192 * report["threshold_params"].get("digits_per_coefficient", 1)
    chunks = -(-(3000 + 1) // per)
    assert 0 <= report["upload_bytes"] - chunks * 8192 * level_bits // 8 < 256  # header, sig
    text = capsys.readouterr().out
    assert "targets (issue 14, threshold mode)" in text
    # the size target has its own verdict line
    assert re.search(r"^\s*bytes_per_param_ratio \S+ <= 2\.5: (met|MISSED)$", text, re.M), text


def test_the_issue_run_is_the_default(tmp_path: Path) -> None:
    """10 enterprises: t = 6 and 4 absent at decryption without any option (tiny update)."""
    out = tmp_path / "ten.json"
    assert main(["bench", "ckks", "--clients", "10", "--params", "200", "--mode", "threshold",
                 "--compare", "none", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["threshold"] == 6 and len(report["dropped_at_decrypt"]) == 4
    assert report["targets_met"]["completed_with_dropped"]
    assert report["max_abs_error"] <= report["promised_max_abs_error"] == 1e-6


def test_threshold_bench_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    assert main(["bench", "ckks", "--clients", "4", "--params", "100", "--mode", "threshold",
                 "--threshold", "4", "--drop-at-decrypt", "0", "--compare", "none", "--json",
                 str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["threshold"] == 4 and report["dropped_at_decrypt"] == []
    assert report["max_abs_error"] <= 1e-6 and "nvflare" not in report
    assert "server_sum_s" not in report["targets_met"]
    # more absent than n - t: refused up front, naming the bound
    assert main(["bench", "ckks", "--clients", "4", "--params", "100", "--mode", "threshold",
                 "--drop-at-decrypt", "2", "--compare", "none"]) == 2
    assert "clients - threshold = 1" in capsys.readouterr().err
    # threshold options belong to threshold mode; dealer options to dealer mode
    assert main(["bench", "ckks", "--clients", "4", "--params", "100", "--threshold", "3",
                 "--compare", "none"]) == 2
    assert "--mode threshold" in capsys.readouterr().err
    assert main(["bench", "ckks", "--clients", "4", "--params", "100", "--mode", "threshold",
                 "--preset", "packed", "--compare", "none"]) == 2
    assert "dealer-mode options" in capsys.readouterr().err


def test_dealer_mode_stays_the_default(tmp_path: Path) -> None:
    out = tmp_path / "dealer.json"
    assert main(["bench", "ckks", "--clients", "2", "--params", "100", "--compare", "none",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "dealer" and "threshold" not in report and "decrypt_s" not in report
    assert report["max_abs_error"] <= 1e-6
