"""``secagg-client --events jsonl``: one JSON object per line on stdout for each event, human lines
on stderr, and every round named by the server's round index (real server, real processes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secagg_clients.enrolment import enrol_locally
from secagg_clients.events import Reporter, human_line
from secagg_server.operator import Operator, ServerProcess, create_federation, free_port

MASKING_STAGES = ["advertise", "share", "masked-input", "consistency", "unmask"]


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[dict[str, Any]]:
    enrolled = enrol_locally(tmp_path / "ids", "events", ["alpha", "beta"])
    tokens = create_federation(tmp_path / "data", "events", enrolled.roster_path)
    server = ServerProcess(tmp_path / "data").start()
    try:
        yield {"enrolled": enrolled, "tokens": tokens, "server": server, "root": tmp_path}
    finally:
        server.stop()


def _fail_round_zero(op: Operator) -> None:
    """Round index 0 opens and fails with nobody in it, so the clients' rounds are 1 and 2:
    no local count (0- or 1-based) can pass for the server's index."""
    info = op.open_round("masking", {"vector_length": 10}, stage_timeout_s=0.5)
    assert info["index"] == 0
    assert op.wait(info["round_id"], timeout=30)["status"] == "failed"


def test_events_are_json_lines_and_name_the_servers_round(federation: dict[str, Any]) -> None:
    root, enrolled, tokens = federation["root"], federation["enrolled"], federation["tokens"]
    url = federation["server"].url
    with Operator(url, tokens["operator_token"]) as op:
        _fail_round_zero(op)
        procs = []
        for i in range(2):
            (root / f"token-{i}").write_text(tokens["client_tokens"][i])
            np.save(root / f"u{i}.npy", np.full(10, i + 1, np.float32))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "secagg_clients", "--server", url, "--token-file",
                 str(root / f"token-{i}"), "--identity", str(enrolled.identity_paths[i]),
                 "--roster", str(enrolled.roster_path), "--update", str(root / f"u{i}.npy"),
                 "--rounds", "2", "--json", str(root / f"report-{i}.json"), "--events", "jsonl"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        try:
            time.sleep(1.0)
            opened = []
            for _ in range(2):
                info = op.open_round("masking", {"vector_length": 10}, stage_timeout_s=30)
                assert op.wait(info["round_id"], timeout=60)["status"] == "done"
                opened.append(info)
            outputs = [p.communicate(timeout=60) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    indices = [info["index"] for info in opened]
    assert indices == [1, 2]
    for i, (out, err) in enumerate(outputs):
        assert procs[i].returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]  # stdout: nothing but events
        kinds = [e["event"] for e in events]
        assert kinds[0] == "ready" and kinds[-1] == "done", kinds
        assert events[0]["client_id"] == i and events[0]["federation"] == "events"
        for info in opened:
            mine = [e for e in events if e.get("round") == info["index"]]
            assert [e["event"] for e in mine] == \
                ["round_opened"] + ["stage_done"] * len(MASKING_STAGES) + ["round_completed"]
            assert all(e["round_id"] == info["round_id"] and e["mode"] == "masking"
                       for e in mine)
            assert [e["stage"] for e in mine[1:-1]] == MASKING_STAGES
            assert mine[-1]["survivors"] == [0, 1] and mine[-1]["total_weight"] == 2
        assert {e.get("round") for e in events} - {None} == set(indices)
        assert events[-1] | {"time": 0} == {"event": "done", "time": 0, "completed": 2,
                                            "dropped": 0, "refused": 0}
        # the human lines (stderr) and the report name the same rounds
        assert {int(n) for n in re.findall(r"round (\d+)", err)} == set(indices), err
        assert f"round {indices[0]} (masking): aggregate of 2 clients" in err
        report = json.loads((root / f"report-{i}.json").read_text())
        assert [r["index"] for r in report["rounds"]] == indices
        assert [r["round_id"] for r in report["rounds"]] == [x["round_id"] for x in opened]


def test_an_error_is_an_event_too(tmp_path: Path) -> None:
    enrolled = enrol_locally(tmp_path / "ids", "events", ["alpha", "beta"])
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "secagg_clients", "--server", url, "--token", "t",
         "--identity", str(enrolled.identity_paths[0]), "--roster", str(enrolled.roster_path),
         "--random", "--events", "jsonl"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    (event,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert event["event"] == "error" and event["exit_code"] == 2
    assert url in event["message"] and "connection refused" in event["message"]
    assert proc.stderr.strip() == f"secagg-client: error: {event['message']}"


def test_without_events_the_human_lines_are_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    report = Reporter(None)
    report("round_opened", {"round": 4, "round_id": 9, "mode": "ckks", "client_id": 1})
    report("stage_done", {"round": 4, "round_id": 9, "mode": "ckks", "stage": "upload"})
    report("round_dropped", {"round": 4, "round_id": 9, "mode": "ckks", "reason": "late",
                             "rounds_left": 1})
    out, err = capsys.readouterr()
    assert out == ("round 4 (ckks) opened: taking part as client 1\n"
                   "round 4: dropped (late); waiting for the next round\n") and err == ""
    assert report.error("bad", 2) == 2
    assert capsys.readouterr().err == "secagg-client: error: bad\n"


def test_the_training_line_names_no_round_of_its_own() -> None:
    """Training happens before the server opens the round, so the line says no round number
    (it used to say 'round 1' for the server's round 0)."""
    line = human_line("trained", {"epsilon": 1.5, "local_accuracy": 0.8, "train_s": 1.0,
                                  "loss": 0.3, "rounds_left": 2})
    assert line is not None and not re.search(r"round \d", line)
