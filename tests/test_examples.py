"""Examples run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_manual_masking_round_example() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples/masking/manual_round.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "survivors [0, 1, 2, 3, 4, 5, 6, 7]" in proc.stdout  # 3 dropped after upload: in sum
    err = float(proc.stdout.strip().rsplit("=", 1)[1])
    assert err < 1e-4


@pytest.mark.slow
def test_smart_city_federation_example() -> None:
    """The public-API federation: three enterprise processes, a real server, two masked rounds."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples/smart_city/federation.py"),
                           "--encoder", "test_only_tiny"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("round 2: done, aggregate of 3 enterprises") == 1
    spent = [float(line.rsplit(" ", 1)[1]) for line in proc.stdout.splitlines()
             if "(combined model), epsilon spent" in line]
    assert len(spent) == 3 and all(0 < e <= 8.0 for e in spent)
