"""The audit report renders in a real headless browser (Debian's Chromium) and is not blank.

The check: a screenshot of report.html has ink (pixels darker than the page) on a real share
of the first screen, and its pixel variance is far above a blank page's, rendered the same way
(the negative control). Chromium comes from scripts/setup.sh (apt-get install chromium).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (scripts/setup.sh installs it)")


def screenshot(page: Path, png: Path, profile: Path, *, height: int = 900) -> np.ndarray:
    """Render ``page`` headless at 1280 x ``height`` and return the screenshot as grey levels."""
    from PIL import Image

    assert CHROMIUM is not None
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={png}",
         f"--window-size=1280,{height}", page.resolve().as_uri()],
        check=True, capture_output=True, timeout=120)
    with Image.open(png) as im:
        return np.asarray(im.convert("L"), dtype=np.float64)


def ink(grey: np.ndarray) -> float:
    """Share of pixels clearly darker than white."""
    return float(np.mean(grey < 200))


def test_report_renders_and_is_not_blank(tmp_path: Path, data_file: Path) -> None:
    from importlib.metadata import EntryPoint

    import secagg.cli as cli
    from tests.audit.conftest import make_ledger

    entry = EntryPoint("audit", "secagg_clients.audit.command", cli.ENTRY_POINT_GROUP)
    mp = pytest.MonkeyPatch()
    mp.setattr(cli, "entry_points",
               lambda group: [entry] if group == cli.ENTRY_POINT_GROUP else [])
    try:
        ledger = make_ledger(tmp_path / "l.json", [(0.25, 1.5, 8)])
        out = tmp_path / "out"
        assert cli.main(["audit", "--ledger", str(ledger), "--data", str(data_file), "--out",
                         str(out), "--canaries", "20", "--encoder", "test_only_tiny",
                         "--no-progress", "--skip", "released"]) == 0
    finally:
        mp.undo()
    shot = screenshot(out / "report.html", tmp_path / "shot.png", tmp_path / "profile")
    assert shot.shape == (900, 1280)
    blank_page = tmp_path / "blank.html"
    blank_page.write_text("<!doctype html><html><body></body></html>")
    blank = screenshot(blank_page, tmp_path / "blank.png", tmp_path / "profile2")
    # negative control: the check calls an empty page blank
    assert blank.var() < 1.0 and ink(blank) < 0.001
    assert shot.var() > 500 and ink(shot) > 0.02, (shot.var(), ink(shot))
    doc = json.loads((out / "report.json").read_text())
    assert len(doc["summary"]) == 5
    # a taller window: the report goes on below the first screen, whose content is its top
    # (the scroll bar, whose thumb differs, left out)
    tall = screenshot(out / "report.html", tmp_path / "tall.png", tmp_path / "profile3",
                      height=3000)
    assert ink(tall[900:]) > 0.02
    assert np.mean(np.abs(tall[:900, :1240] - shot[:, :1240])) < 1.0
