"""``secagg audit`` end to end through the real CLI: the artefacts and their agreement, the
help, and one-line errors (exit 2) for a missing or corrupt ledger or data file."""

from __future__ import annotations

import html
import json
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import secagg.cli as cli
from secagg_clients.audit.report import NOT_DONE, fmt
from tests.audit.conftest import make_ledger

AUDIT = EntryPoint("audit", "secagg_clients.audit.command", cli.ENTRY_POINT_GROUP)


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if pyproject registered the command (audit = "secagg_clients.audit.command")."""
    monkeypatch.setattr(cli, "entry_points",
                        lambda group: [AUDIT] if group == cli.ENTRY_POINT_GROUP else [])


def _audit(*args: str) -> int:
    return cli.main(["audit", *args, "--encoder", "test_only_tiny", "--no-progress"])


def test_writes_consistent_artefacts(tmp_path: Path, data_file: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    ledger = make_ledger(tmp_path / "l.json", [(0.25, 1.5, 8), (0.25, 1.5, 8)])
    out = tmp_path / "out"
    argv = ["--ledger", str(ledger), "--data", str(data_file), "--out", str(out),
            "--canaries", "60", "--confidence", "0.9", "--clip-norm", "0.8", "--clients", "4"]
    assert _audit(*argv) == 0
    assert "report:" in capsys.readouterr().out
    doc = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    # the figures' command, read back by the audit's own parser, is the run's options
    given = _parse([*argv, "--encoder", "test_only_tiny", "--round", "2"])
    for fig in doc["figures"]:
        png = out / fig["file"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert fig["file"] in page and fig["command"].startswith("secagg audit --ledger")
        assert html.escape(fig["command"]) in page
        back = _parse_command(fig["command"])
        assert {k: v for k, v in back.items() if k != "no_progress"} == \
            {k: v for k, v in given.items() if k != "no_progress"}
    assert doc["empirical"]["confidence"] == 0.9
    assert page.count("data:image/png;base64,") == len(doc["figures"]) == 5  # self-contained
    acc, emp = doc["accounting"], doc["empirical"]
    for value in (acc["epsilon_rdp"], acc["epsilon_prv"], acc["spent"], acc["remaining"],
                  emp["theory"], emp["theory_rdp"], emp["theory_prv"],
                  emp["white_box"]["epsilon"], emp["black_box"]["epsilon"],
                  emp["noise_check"]["sigma_hat"], *[r["total_prv"] for r in acc["rounds"]]):
        assert fmt(value) in page, value
    assert doc["verdict"]["text"] in html.unescape(page)
    # the accounting is recomputed: two rounds compose to more than one, less than twice
    assert acc["rounds"][0]["total_rdp"] < acc["epsilon_rdp"] < 2 * acc["rounds"][0]["total_rdp"]
    assert acc["disagreement_flag"] == (acc["disagreement"] > 0.02)
    assert acc["remaining"] == pytest.approx(8.0 - acc["spent"])
    assert emp["claimed"] == {"sample_rate": 0.25, "noise_multiplier": 1.5, "steps": 8}
    assert not emp["violation"] and doc["verdict"]["status"] == "pass"
    assert all(section in page for section in NOT_DONE) and doc["not_done"] == list(NOT_DONE)
    assert page.index("verdict") < page.index("<h2>Accounting")  # the verdict is on top


def test_a_planted_bug_turns_the_verdict(tmp_path: Path, data_file: Path) -> None:
    ledger = make_ledger(tmp_path / "l.json", [(1.0, 4.0, 1)])
    out = tmp_path / "bug"
    assert _audit("--ledger", str(ledger), "--data", str(data_file), "--out", str(out),
                  "--plant", "no-clipping", "--canaries", "200") == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["empirical"]["plant"] == "no-clipping" and doc["empirical"]["violation"]
    assert doc["verdict"]["status"] == "fail" and "VIOLATION" in doc["verdict"]["text"]


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["audit", "--help"])
    text = capsys.readouterr().out
    for needle in ("--ledger", "--plant", "noise-halved", "LOWER bound", "Steinke",
                   "report.html", "examples:"):
        assert needle in text


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("secagg: error: "), err
    for needle in needles:
        assert needle in err


def test_bad_inputs_are_one_line(tmp_path: Path, data_file: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    ledger = make_ledger(tmp_path / "l.json", [(0.25, 1.5, 8)])
    out = str(tmp_path / "o")
    assert _audit("--ledger", str(tmp_path / "none.json"), "--data", str(data_file),
                  "--out", out) == 2
    _one_line_error(capsys, "does not exist")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "secagg-privacy-ledger/1", "rounds": [')
    assert _audit("--ledger", str(broken), "--data", str(data_file), "--out", out) == 2
    _one_line_error(capsys, "not valid JSON")
    assert _audit("--ledger", str(ledger), "--data", str(tmp_path / "no.csv"), "--out", out) == 2
    _one_line_error(capsys, "does not exist")
    bad = tmp_path / "bad.csv"
    bad.write_text(data_file.read_text().replace("hazard", "meteor", 1))
    assert _audit("--ledger", str(ledger), "--data", str(bad), "--out", out) == 2
    _one_line_error(capsys, "label")
    empty = make_ledger(tmp_path / "empty.json", [])
    assert _audit("--ledger", str(empty), "--data", str(data_file), "--out", out) == 2
    _one_line_error(capsys, "no round")
    assert _audit("--ledger", str(ledger), "--data", str(data_file), "--out", out,
                  "--round", "3") == 2
    _one_line_error(capsys, "--round")
    assert not Path(out).exists()  # nothing written for a refused audit


# ---- every input is checked before the training run ----------------------------------------


class Trained(Exception):
    """Raised by the patched trainer: the audit reached its training run."""


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """The empirical run and the trainer raise if called: a refusal must come before them."""
    import secagg_clients.audit.empirical as empirical
    import secagg_clients.audit.released as released
    import secagg_clients.trainer as trainer

    def trained(*args: object, **kwargs: object) -> None:
        raise Trained

    monkeypatch.setattr(empirical, "audit_pipeline", trained)
    monkeypatch.setattr(released, "released_model_mia", trained)
    monkeypatch.setattr(trainer, "train_private", trained)


def _roster(tmp_path: Path, n: int) -> Path:
    from secagg.masking.simulate import insecure_simulated_federation

    path = tmp_path / f"roster-{n}.json"
    insecure_simulated_federation(n)[0].save(path)
    return path


def test_the_patched_trainer_is_reached_by_good_inputs(tmp_path: Path, data_file: Path,
                                                      no_training: None) -> None:
    """Positive control: with valid --roster and --clients the audit gets to training, so the
    refusals below happen before it, not because the trainer is patched out."""
    ledger = make_ledger(tmp_path / "l.json", [(0.25, 1.5, 8)])
    base = ("--ledger", str(ledger), "--data", str(data_file), "--out", str(tmp_path / "o"))
    with pytest.raises(Trained):
        _audit(*base, "--roster", str(_roster(tmp_path, 4)), "--clients", "4")
    with pytest.raises(Trained):
        _audit(*base, "--clients", "5")


def test_a_bad_roster_or_clients_is_refused_before_training(
        tmp_path: Path, data_file: Path, no_training: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    ledger = make_ledger(tmp_path / "l.json", [(1.0, 4.0, 1), (0.3, 1.5, 8), (0.25, 1.5, 8)])
    out = tmp_path / "o"
    base = ("--ledger", str(ledger), "--data", str(data_file), "--out", str(out))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps({"members": "none"}))
    (tmp_path / "adir").mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
        (("--roster", str(tmp_path / "missing.json")), ("--roster", "does not exist",
                                                        "expected the federation's roster")),
        (("--roster", str(broken)), ("--roster", "not readable JSON")),
        (("--roster", str(stranger)), ("--roster", str(stranger))),
        (("--roster", str(tmp_path / "adir")), ("--roster", "is a folder")),
        (("--roster", str(_roster(tmp_path, 4)), "--clients", "5"),
         ("--clients 5 does not match --roster", "4 members")),
        (("--out", str(afile)), ("--out", "is a file", "expected a folder")),
        (("--out", str(afile / "sub")), ("--out", "is a file", "cannot be made")),
        (("--server", "ftp://agg.example.com"), ("--server", "expected an http:// or https://")),
        (("--plant", "sample-rate-misreported", "--round", "1"),
         ("--plant sample-rate-misreported", "round 1 already records q = 1", "--round")),
        (("--round", "2"), ("--ledger", "round 2", "sample_rate must be 1/k", "found 0.3")),
        (("--round", "4"), ("--round must be in 1..3", "found 4")),
    ]
    for extra, needles in cases:
        args = [*base, *extra]
        if extra[0] == "--out":
            args = [a if a != str(out) else extra[1] for a in base] + list(extra[2:])
        assert _audit(*args) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("secagg: error: "), (extra, err)
        for needle in needles:
            assert needle in err, (extra, needle, err)
        assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(("flag", "value", "rule"), [
    ("--clients", "1", "an integer in [2, 10000], found 1"),
    ("--clients", "many", "an integer in [2, 10000], found many"),
    ("--canaries", "1", "an integer in [2, 1000000], found 1"),
    ("--confidence", "1.5", "a number in [1e-06, 0.999999999]"),
    ("--confidence", "0", "a number in [1e-06, 0.999999999]"),
    # in (0, 1), but the bounds cannot use them: refused by the parser, not after training
    ("--confidence", "0.9999999999999999", "a number in [1e-06, 0.999999999]"),
    ("--confidence", "1e-300", "a number in [1e-06, 0.999999999]"),
    ("--confidence", "nan", "a number in [1e-06, 0.999999999]"),
    ("--clip-norm", "0", "a number > 0, found 0"),
    ("--clip-norm", "nan", "a number > 0, found nan"),
    ("--seed", "-1", "an integer in [0, 9223372036854775807], found -1"),
    ("--round", "0", "an integer >= 1, found 0"),
])
def test_numbers_out_of_range_are_refused_by_the_parser(
        tmp_path: Path, data_file: Path, no_training: None, capsys: pytest.CaptureFixture[str],
        flag: str, value: str, rule: str) -> None:
    ledger = make_ledger(tmp_path / "l.json", [(0.25, 1.5, 8)])
    with pytest.raises(SystemExit) as exit_:
        _audit("--ledger", str(ledger), "--data", str(data_file), "--out", str(tmp_path / "o"),
               flag, value)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"secagg audit: error: argument {flag}: must be {rule}"), err
    assert not (tmp_path / "o").exists()


def test_too_few_records_for_a_section_are_refused_before_training(
        tmp_path: Path, data_file: Path, no_training: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    ledger = make_ledger(tmp_path / "l.json", [(1.0, 4.0, 1)])
    few = tmp_path / "few.csv"
    few.write_text("\n".join(data_file.read_text().splitlines()[:6]) + "\n")  # 5 records
    base = ("--ledger", str(ledger), "--data", str(few), "--out", str(tmp_path / "o"))
    assert _audit(*base) == 2
    _one_line_error(capsys, "--data", "released-model attack needs at least 8 records, found 5",
                    "--skip released")
    with pytest.raises(Trained):  # without that section the audit can run
        _audit(*base, "--skip", "released")


def test_the_confidence_range_is_what_the_bounds_accept(tmp_path: Path, data_file: Path,
                                                        no_training: None) -> None:
    """Both ends of the parser's --confidence range reach training (the bounds, run on dummy
    scores before it, accept them); just beyond them the bounds refuse, so the range is tight
    enough to keep what the parser accepts computable."""
    import argparse

    import numpy as np

    from secagg.dp.audit_bound import epsilon_lower_bound_from_scores
    from secagg.errors import InvalidParameter
    from secagg_clients.audit.command import CONFIDENCE_MAX, CONFIDENCE_MIN, _check_confidence

    ledger = make_ledger(tmp_path / "l.json", [(0.25, 1.5, 8)])
    for value in (CONFIDENCE_MIN, CONFIDENCE_MAX):
        with pytest.raises(Trained):
            _audit("--ledger", str(ledger), "--data", str(data_file), "--out",
                   str(tmp_path / "o"), "--confidence", repr(value))
    scores, included = np.array([1.0, -1.0]), np.array([True, False])
    with pytest.raises(InvalidParameter):  # what the parser range keeps out
        epsilon_lower_bound_from_scores(scores, included, delta=1e-5,
                                        confidence=0.9999999999999999)
    with pytest.raises(InvalidParameter, match="--confidence"):  # check_inputs' own check
        _check_confidence(argparse.Namespace(confidence=0.9999999999999999))


def _parse(argv: list[str]) -> dict[str, object]:
    """Options as the audit's own parser reads them (no side effects)."""
    import argparse

    from secagg_clients.audit.command import add_arguments

    parser = argparse.ArgumentParser(prog="secagg audit")
    add_arguments(parser)
    return vars(parser.parse_args(argv))


def _parse_command(command: str) -> dict[str, object]:
    import shlex

    words = shlex.split(command)
    assert words[:2] == ["secagg", "audit"], command
    return _parse(words[2:])


def test_the_command_names_every_flag_that_changes_the_report() -> None:
    import argparse

    from secagg_clients.audit.command import add_arguments, reproduce_command

    argv = ["--ledger", "my ledger.json", "--data", "d.csv", "--out", "out dir", "--canaries",
            "77", "--plant", "no-clipping", "--round", "2", "--confidence", "0.9",
            "--encoder", "test_only_tiny", "--clip-norm", "0.5", "--seed", "7", "--no-progress",
            "--server", "https://agg.example.com:8443", "--clients", "5", "--skip", "released",
            "--skip", "server-view"]
    given = _parse(argv)
    back = _parse_command(reproduce_command(argparse.Namespace(**given), 2))
    assert {k: v for k, v in back.items() if k != "no_progress"} == \
        {k: v for k, v in given.items() if k != "no_progress"}
    # every option of the parser but --no-progress and --help is in the command (a new flag
    # must be added to reproduce_command or exempted here)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    command = reproduce_command(argparse.Namespace(**given), 2)
    for action in parser._actions:
        if action.dest in ("help", "no_progress", "roster"):  # --roster: below
            continue
        assert any(opt in command.split() for opt in action.option_strings), action.dest
    with_roster = _parse([*argv[:argv.index("--clients")], "--roster", "r.json"])
    back = _parse_command(reproduce_command(argparse.Namespace(**with_roster), 2))
    assert back["roster"] == "r.json" and back["clients"] is None
    assert {k: v for k, v in back.items() if k != "no_progress"} == \
        {k: v for k, v in with_roster.items() if k != "no_progress"}


def test_the_command_resolves_the_defaults_it_ran_with() -> None:
    import argparse

    from secagg_clients.audit.command import reproduce_command

    given = _parse(["--ledger", "l.json", "--data", "d.csv", "--out", "o"])
    back = _parse_command(reproduce_command(argparse.Namespace(**given), 3))
    assert back["round"] == 3 and back["clients"] == 3  # the last round, the default size
    for key in ("canaries", "confidence", "clip_norm", "seed", "encoder", "plant", "skip",
                "server", "roster"):
        assert back[key] == given[key], key
