"""``secagg simulate ckks --adversary NAME``: each attack run as a user runs it, and its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secagg.cli import main

EXPECTED = {
    # name: (detected_by, exact: honest release = plaintext sum, or None when nothing is released)
    "swap-keys": ("advert-signature", None),
    "forge-aggregate": ("sketch-check", None),
    "low-order-key": ("box-key", True),
    "garbage-shares": ("ciphertext", True),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_adversary_is_stopped(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"{name}.json"
    rc = main(["simulate", "ckks", "--clients", "4", "--params", "3000", "--adversary", name,
               "--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0
    assert report["adversary"] == name
    assert report["attack_succeeded"] is False
    assert report["honest_completed"] is True
    assert (report["detected_by"], report["exact"]) == EXPECTED[name]
    printed = capsys.readouterr().out
    assert "attack succeeded" in printed and EXPECTED[name][0] in printed


def test_adversary_needs_three_clients(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "ckks", "--clients", "2", "--adversary", "swap-keys"]) == 2
    assert "--clients must be >= 3 with --adversary" in capsys.readouterr().err


def test_unknown_adversary_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["simulate", "ckks", "--adversary", "nope"])
    assert info.value.code == 2
    assert "swap-keys" in capsys.readouterr().err
