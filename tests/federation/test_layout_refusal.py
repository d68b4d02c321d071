"""Two real ``secagg-client --enterprise`` processes fine-tuning different models against one
real server: the operator opens a round from the layout one of them published (``secagg-client
layout export`` into ``secagg-server round open --layout``); the enterprise of the other model
refuses it before training, saying why with both layout digests, and sends nothing; the round
goes on without it and releases the aggregate of the others (the first enterprise and a third,
in-process runtime client). The round is a CKKS round of at least two (client 0 deals), so two
of the three complete it."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secagg.dp.ledger import PrivacyLedger
from secagg.encoding import ParamSpec
from secagg_clients.enrolment import enrol_locally
from secagg_clients.events import follow_events
from secagg_clients.runtime import RoundResult, RuntimeClient
from secagg_server.operator import Operator, ServerProcess, create_federation

pytestmark = pytest.mark.slow

NAMES = ("energy_utility", "city_operations", "residential_security")  # client ids 0, 1, 2
STAGE_S = 30  # the first stage waits this long for the refusing enterprise, which never answers


def _next(events: queue.Queue[dict[str, Any]], kind: str, timeout: float) -> dict[str, Any]:
    """The next event of ``kind`` (earlier ones are skipped); fails on the process's exit."""
    while True:
        ev = events.get(timeout=timeout)
        if ev["event"] == kind:
            return ev
        assert ev["event"] not in ("exit", "error"), ev


def _until_exit(events: queue.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    """The remaining events up to the process's exit (included)."""
    out = [events.get(timeout=30)]
    while out[-1]["event"] != "exit":
        out.append(events.get(timeout=30))
    return out


def _export(encoder: str, out: Path) -> ParamSpec:
    done = subprocess.run([sys.executable, "-m", "secagg_clients", "layout", "export", "--encoder",
                           encoder, "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return ParamSpec.from_json(out.read_text())


def test_an_enterprise_of_another_model_is_refused_and_the_round_goes_on(tmp_path: Path) -> None:
    enrolled = enrol_locally(tmp_path / "ids", "layouts", NAMES)
    tokens = create_federation(tmp_path / "server", "layouts", enrolled.roster_path)
    tiny = _export("test_only_tiny", tmp_path / "tiny.layout.json")
    minilm = _export("minilm", tmp_path / "minilm.layout.json")
    assert tiny.digest() != minilm.digest()
    server = ServerProcess(tmp_path / "server").start()
    procs: dict[int, subprocess.Popen[str]] = {}
    streams: dict[int, queue.Queue[dict[str, Any]]] = {}

    def start(i: int, encoder: str) -> None:
        token = tmp_path / f"{NAMES[i]}.token"
        token.write_text(tokens["client_tokens"][i])
        with (tmp_path / f"{NAMES[i]}.log").open("w") as log:  # human lines: no pipe to fill
            procs[i] = subprocess.Popen(
                [sys.executable, "-m", "secagg_clients", "--server", server.url, "--token-file",
                 str(token), "--identity", str(enrolled.identity_paths[i]), "--roster",
                 str(enrolled.roster_path), "--enterprise", NAMES[i], "--ledger",
                 str(tmp_path / f"{NAMES[i]}.ledger.json"), "--rounds", "1", "--epochs", "1",
                 "--encoder", encoder, "--threads", "1", "--json",
                 str(tmp_path / f"{NAMES[i]}.report.json"), "--events", "jsonl"],
                stdout=subprocess.PIPE, stderr=log, text=True)
        streams[i] = follow_events(procs[i])

    third: dict[str, Any] = {}

    def take_part() -> None:  # client 1: a fixed vector of the round's length, no training
        try:
            with RuntimeClient(server.url, tokens["client_tokens"][1],
                               identity=enrolled.identity(1), roster=enrolled.roster,
                               poll_wait=2.0) as rt:
                update = np.random.default_rng(1).uniform(-0.5, 0.5, tiny.size).astype(np.float32)
                third["result"] = rt.run_round(update, timeout=120)
        except BaseException as exc:
            third["error"] = exc

    try:
        start(0, "test_only_tiny")  # trains first: the operator opens the round once it has
        ready = _next(streams[0], "ready", 300)
        assert ready["dimension"] == tiny.size
        _next(streams[0], "trained", 600)
        env = {**os.environ, "SECAGG_OPERATOR_TOKEN": tokens["operator_token"]}
        opened = subprocess.run(
            [sys.executable, "-m", "secagg_server", "round", "open", "--mode", "ckks",
             "--layout", str(tmp_path / "tiny.layout.json"), "--option", "value_bound=2.0",
             "--option", "min_clients=2", "--option", "dealer=0", "--stage-timeout",
             str(STAGE_S), "--json", "--server", server.url],
            capture_output=True, text=True, timeout=60, env=env)
        assert opened.returncode == 0, opened.stderr
        info = json.loads(opened.stdout)
        assert info["config"]["layout_digest"] == tiny.digest().hex()
        assert info["config"]["vector_length"] == tiny.size

        helper = threading.Thread(target=take_part, daemon=True)
        helper.start()
        start(2, "minilm")  # another model, and the round is open already
        refused = _next(streams[2], "round_refused", 300)
        assert refused["round"] == info["index"] and refused["round_id"] == info["round_id"]
        assert tiny.digest().hex()[:16] in refused["reason"]
        assert minilm.digest().hex()[:16] in refused["reason"]
        assert "not fine-tuning the same model" in refused["reason"]
        with Operator(server.url, tokens["operator_token"]) as op:
            # the round is unaffected: still open at its first stage, still waiting for client 2
            status = op.status(info["round_id"])
            assert status["status"] == "open" and status["stage_no"] == 0, status
            assert 2 in status["awaiting_clients"]
            final = op.wait(info["round_id"], timeout=STAGE_S + 120)
            assert final["status"] == "done", final
            meta, _ = op.result(info["round_id"])
            assert meta.survivors == (0, 1) and 2 in meta.dropped
            assert meta.layout_digest == tiny.digest().hex()
        helper.join(60)
        for p in procs.values():
            p.wait(timeout=120)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        server.stop()
    assert "error" not in third, third.get("error")
    result: RoundResult = third["result"]
    assert result.survivors == (0, 1)

    # the enterprise of the other model: exit 3 (refused, none completed), saying why
    assert procs[2].returncode == 3, (tmp_path / f"{NAMES[2]}.log").read_text()
    left = _until_exit(streams[2])
    kinds = [e["event"] for e in left]
    assert "trained" not in kinds and "round_opened" not in kinds, kinds
    error = next(e for e in left if e["event"] == "error")
    assert error["exit_code"] == 3 and minilm.digest().hex()[:16] in error["message"]
    report = json.loads((tmp_path / f"{NAMES[2]}.report.json").read_text())
    (entry,) = report["rounds"]
    assert entry["refused"] and entry["round_id"] == info["round_id"]
    assert tiny.digest().hex()[:16] in entry["reason"]
    assert not PrivacyLedger.load(tmp_path / f"{NAMES[2]}.ledger.json").entries  # never trained

    # the enterprise of the round's model took part and got the aggregate
    assert procs[0].returncode == 0, (tmp_path / f"{NAMES[0]}.log").read_text()
    completed = _next(streams[0], "round_completed", 30)
    assert completed["round_id"] == info["round_id"] and completed["survivors"] == [0, 1]

    # the refusing enterprise sent nothing: the server stored no message from client 2
    inspect = json.loads(subprocess.run(
        [sys.executable, "-m", "secagg_server", "inspect", "--data", str(tmp_path / "server"),
         "--json"], check=True, capture_output=True, text=True, timeout=60).stdout)
    (stored,) = [r for r in inspect["rounds"] if r["round_id"] == info["round_id"]]
    assert set(stored["bytes_by_client"]) == {"0", "1"}, stored
