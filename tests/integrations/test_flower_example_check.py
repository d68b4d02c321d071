"""The Flower example's out-of-band plaintext check (examples/flower_app/check_plaintext.py):
it passes on a round whose released mean is the survivors' weighted mean and fails (exit 1) on
one that is off by more than the fixed-point step, or (exit 2) when a survivor's record is
missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

APP = Path(__file__).resolve().parents[2] / "examples" / "flower_app"
sys.path.insert(0, str(APP))

from secagg_flower_app.plaintext_check import write_client, write_released  # noqa: E402


def _round(tmp: Path, shift: float, *, drop_file: bool = False) -> subprocess.CompletedProcess[str]:
    rng = np.random.default_rng(1)
    models = {c: rng.uniform(-1, 1, 50).astype(np.float32) for c in (0, 1, 2)}
    weights = {0: 10, 1: 20, 2: 30}
    for c, m in models.items():
        if not (drop_file and c == 2):
            write_client(tmp, 1, c, m, weights[c])
    mean = sum(weights[c] * models[c].astype(np.float64) for c in models) / 60
    write_released(tmp, 1, mean + shift, (0, 1, 2), 60, step=1e-4)
    return subprocess.run([sys.executable, str(APP / "check_plaintext.py"), str(tmp)],
                          capture_output=True, text=True, cwd=APP, timeout=60)


def test_a_matching_round_passes(tmp_path: Path) -> None:
    out = _round(tmp_path, 0.0)
    assert out.returncode == 0, out.stderr
    assert "round 1: survivors [0, 1, 2]; released mean matches" in out.stdout


def test_a_released_mean_off_by_more_than_the_step_fails(tmp_path: Path) -> None:
    out = _round(tmp_path, 3e-4)
    assert out.returncode == 1 and "DOES NOT MATCH" in out.stdout, out.stdout


def test_a_missing_survivor_record_is_named(tmp_path: Path) -> None:
    out = _round(tmp_path, 0.0, drop_file=True)
    assert out.returncode == 2 and "survivor(s) [2]" in out.stderr, out.stderr
