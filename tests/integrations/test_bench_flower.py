"""``secagg bench flower`` at a smoke size: the three rounds run in one Flower simulation, the
published keys are there, and both secure rounds release the plain round's mean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = [pytest.mark.flower, pytest.mark.slow]


def test_bench_flower_smoke(tmp_path: Path) -> None:
    out = tmp_path / "flower.json"
    proc = subprocess.run([sys.executable, "-m", "secagg.cli", "bench", "flower", "--clients", "3",
                           "--params", "1000", "--ckks", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in ("secure_round_s", "plain_round_s", "ratio", "flower_secaggplus_round_s",
                "speedup_vs_flower", "engine_floor_round_s", "engine_floor_ratio"):
        assert isinstance(report[key], float) and report[key] > 0, key
    assert report["ratio"] == pytest.approx(report["secure_round_s"] / report["plain_round_s"])
    assert report["speedup_vs_flower"] == pytest.approx(
        report["flower_secaggplus_round_s"] / report["secure_round_s"])
    # the threshold-CKKS round (--ckks) released the plain mean within its worst-case bound
    assert report["ckks_threshold_round_s"] > 0
    assert len(report["ckks_threshold_exchanges_s"]) == 1
    assert report["max_abs_error_vs_plain"]["ckks_threshold"] < 1e-4
    assert report["engine_floor_ratio"] == pytest.approx(
        report["engine_floor_round_s"] / report["plain_round_s"])
    step = 2 * 8.0 / ((1 << report["value_bits"]) - 1)
    assert report["max_abs_error_vs_plain"]["secure"] <= step
    assert report["max_abs_error_vs_plain"]["flower_secaggplus"] < 1e-3
    # one secure round (--repeats 1) of five exchanges, which together take most of its time
    (spans,) = report["secure_exchanges_s"]
    assert len(spans) == 5 and all(s > 0 for s in spans)
    assert sum(spans) <= report["secure_round_s"]
