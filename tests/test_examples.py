"""Examples run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_manual_masking_round_example() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples/masking/manual_round.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "survivors [0, 1, 2, 3, 4, 5, 6, 7]" in proc.stdout  # 3 dropped after upload: in sum
    err = float(proc.stdout.strip().rsplit("=", 1)[1])
    assert err < 1e-4
