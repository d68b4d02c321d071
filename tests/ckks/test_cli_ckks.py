"""``secagg simulate ckks`` and ``secagg bench ckks`` at small sizes; the JSON contract keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secagg.cli import main

CONTRACT = [
    "bytes_per_param_ratio",
    "client_encrypt_s",
    "server_sum_s",
    "max_abs_error",
    "nvflare.bytes_per_param_ratio",
    "nvflare.client_encrypt_s",
    "nvflare.server_sum_s",
    "nvflare.max_abs_error",
    "size_vs_nvflare",
]


def test_simulate_ckks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.json"
    rc = main(
        [
            "simulate",
            "ckks",
            "--clients",
            "4",
            "--params",
            "5000",
            "--dropout",
            "0.25",
            "--weighted",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["ok"] and len(report["dropped"]) == 1 and len(report["contributors"]) == 3
    assert report["max_abs_error"] <= report["promised_max_abs_error"]
    assert "client decrypt" in capsys.readouterr().out


def test_bench_ckks_contract_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    rc = main(
        ["bench", "ckks", "--clients", "2", "--params", "20000", "--compare", "nvflare", "--json", str(out)]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    for key in CONTRACT:
        assert isinstance(report[key], float), key
    assert report["nvflare"]["bytes_per_param_ratio"] == report["nvflare.bytes_per_param_ratio"]
    assert report["max_abs_error"] <= 1e-6
    assert report["size_vs_nvflare"] > 5
    assert "size_vs_nvflare" in capsys.readouterr().out


def test_bench_ckks_without_anchor(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert (
        main(["bench", "ckks", "--clients", "2", "--params", "100", "--compare", "none", "--json", str(out)])
        == 0
    )
    report = json.loads(out.read_text())
    assert "nvflare" not in report and report["max_abs_error"] <= 1e-6


def test_bad_arguments_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "ckks", "--clients", "1"]) == 2
    assert "--clients must be >= 2" in capsys.readouterr().err
