"""Command groups from the ``secagg.commands`` entry points: found in a source checkout, one clear
line where they cannot load (a wheel has no benchmarks/ or examples/), never a broken CLI."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import secagg.cli as cli


def _only(monkeypatch: pytest.MonkeyPatch, *eps: EntryPoint) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: list(eps) if group ==
                        cli.ENTRY_POINT_GROUP else [])


def test_the_checkout_registers_bench_and_demo() -> None:
    loaded, missing = cli._plugins()
    assert not missing
    assert set(loaded) == {"audit", "bench", "demo"}
    assert set(loaded["bench"][1]) == {"masking", "masking-scale", "ckks", "dp", "e2e", "flower"}


def test_a_missing_application_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _only(monkeypatch, EntryPoint("bench", "secagg_no_such_app.commands", cli.ENTRY_POINT_GROUP))
    assert cli.main(["bench", "masking", "--clients", "10"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1
    assert "`secagg bench` needs a source checkout" in out.err
    assert cli.main(["simulate"]) == 2  # the library's own commands still work: group help
    assert "masking" in capsys.readouterr().out


def test_a_broken_application_says_why_and_breaks_nothing_else(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = tmp_path / "secagg_broken_app"
    app.mkdir()
    (app / "__init__.py").write_text('HELP = "broken"\nSUBCOMMANDS = {"go": ".inner"}\n')
    (app / "inner.py").write_text('raise RuntimeError("bug at import")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    _only(monkeypatch, EntryPoint("broken", "secagg_broken_app", cli.ENTRY_POINT_GROUP))
    assert cli.main(["broken", "go"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "could not be loaded" in err and "RuntimeError: bug at import" in err
    assert cli.main(["privacy", "epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1",
                     "--steps", "10", "--delta", "1e-5"]) == 0


def test_the_library_commands_win_a_name_clash(monkeypatch: pytest.MonkeyPatch) -> None:
    _only(monkeypatch, EntryPoint("simulate", "secagg_no_such_app", cli.ENTRY_POINT_GROUP))
    loaded, missing = cli._plugins()
    assert loaded == {} and missing == {}
