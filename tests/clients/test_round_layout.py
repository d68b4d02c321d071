"""The model layout between the enterprises and the operator, over a real server process.

* ``secagg-client layout export`` (a process) writes the layout a training enterprise really has
  (the ParamSpec of :class:`secagg_clients.client.EnterpriseClient`), and ``secagg-server round
  open --layout FILE`` / ``--from-model DIR`` (a process) opens a round bound to exactly it.
* A training enterprise (:class:`secagg_clients.federated.FederatedEnterprise`) checks an open
  round's layout before it trains: a round for another layout is refused naming both, with
  nothing trained, nothing charged to its ledger and nothing sent to the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from secagg.dp.ledger import PrivacyLedger
from secagg.encoding import ParamSpec
from secagg_clients.data import enterprise_path
from secagg_clients.federated import FederatedEnterprise, FederationPlan
from secagg_clients.model import EncoderKind, build_model
from secagg_clients.runtime import RoundRefused
from secagg_clients.updates import trainable_spec
from secagg_server.operator import Operator
from tests.server.conftest import Federation

TINY = EncoderKind.TEST_ONLY_TINY


def _export(out: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "secagg_clients", "layout", "export", "--out",
                           out, "--encoder", "test_only_tiny", *extra],
                          capture_output=True, text=True, timeout=120)


def _open(fed: Federation, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SECAGG_OPERATOR_TOKEN": fed.operator}
    return subprocess.run([sys.executable, "-m", "secagg_server", "round", "open", "--mode",
                           "masking", *argv, "--stage-timeout", "30", "--json", "--server",
                           fed.server.url], capture_output=True, text=True, timeout=60, env=env)


def test_layout_export_round_trips_into_round_open(fed3: Federation, tmp_path: Path) -> None:
    model_dir = tmp_path / "published"
    model_dir.mkdir()
    exported = _export(str(model_dir / "layout.json"))
    assert exported.returncode == 0, exported.stderr
    spec = ParamSpec.from_json((model_dir / "layout.json").read_text())
    # what the training enterprise builds has exactly this layout (same encoder, same rank)
    trained = trainable_spec(build_model(encoder=TINY))
    assert spec == trained and spec.digest() == trained.digest()
    assert f"digest {spec.digest().hex()[:16]}" in exported.stderr
    # --out - writes the same JSON to stdout
    stdout = _export("-")
    assert stdout.returncode == 0 and ParamSpec.from_json(stdout.stdout) == spec

    by_file = _open(fed3, "--layout", str(model_dir / "layout.json"), "--option", "clip=2.0")
    assert by_file.returncode == 0, by_file.stderr
    info = json.loads(by_file.stdout)
    assert info["config"]["vector_length"] == spec.size
    assert info["config"]["layout_digest"] == spec.digest().hex()
    by_dir = _open(fed3, "--from-model", str(model_dir))
    assert by_dir.returncode == 0, by_dir.stderr
    assert json.loads(by_dir.stdout)["config"]["layout_digest"] == spec.digest().hex()

    # the round as a client reads it: this model's layout takes part, another rank's does not
    other_dir = tmp_path / "rank4"
    other_dir.mkdir()
    assert _export(str(other_dir / "layout.json"), "--lora-rank", "4").returncode == 0
    other = ParamSpec.from_json((other_dir / "layout.json").read_text())
    assert other.digest() != spec.digest()
    with fed3.runtime(0, layout=spec) as rt:
        opened = rt.peek_round()
        assert opened is not None and opened.round_id == info["round_id"]
        rt.check_layout(opened)  # this model's round: no refusal
    with fed3.runtime(1, layout=other) as rt, pytest.raises(RoundRefused) as refused:
        rt.check_layout(opened)
    assert spec.digest().hex()[:16] in refused.value.reason
    assert other.digest().hex()[:16] in refused.value.reason


def test_layout_export_to_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    out = _export(str(tmp_path / "no" / "such" / "layout.json"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("secagg-client layout: error: cannot write")
    assert "Traceback" not in out.stderr


def test_a_round_for_another_layout_is_refused_before_any_training(fed3: Federation,
                                                                   tmp_path: Path) -> None:
    other = trainable_spec(build_model(encoder=TINY, lora_rank=4))
    mine = trainable_spec(build_model(encoder=TINY))
    assert other.digest() != mine.digest()
    with Operator(fed3.server.url, fed3.operator) as op:
        info = op.open_round("masking", {"clip": 2.0}, layout=other, stage_timeout_s=60)
        events: list[tuple[str, dict[str, Any]]] = []
        ledger = tmp_path / "energy.ledger.json"
        plan = FederationPlan(rounds=1, epochs=1, encoder=TINY, budget_epsilon=8.0)
        with FederatedEnterprise.connect(
                fed3.server.url, fed3.tokens[0], data=enterprise_path("energy_utility"),
                name="energy_utility", ledger=ledger, identity=fed3.identity(0),
                roster=fed3.roster, plan=plan,
                on_event=lambda kind, data: events.append((kind, data))) as ent:
            assert ent.client.spec.digest() == mine.digest()
            report = ent.run()
        kinds = [k for k, _ in events]
        assert kinds == ["ready", "round_refused", "done"], kinds  # no "trained", no round_opened
        (entry,) = report.rounds
        assert entry.refused and entry.dropped and entry.index == info["index"]
        assert entry.round_id == info["round_id"] and entry.train_s == 0.0
        assert other.digest().hex()[:16] in str(entry.reason)
        assert mine.digest().hex()[:16] in str(entry.reason)
        # nothing was trained: the ledger holds no entry and the report spent nothing
        book = PrivacyLedger.load(ledger)
        assert not book.entries and book.spent() == 0.0 and report.epsilon == 0.0
        assert events[-1][1]["refused"] == 1 and events[-1][1]["completed"] == 0
        # and nothing was sent: the round still awaits this client at its first stage
        status = op.status(info["round_id"])
        assert status["status"] == "open" and status["stage_no"] == 0
        assert 0 in status["awaiting_clients"]
