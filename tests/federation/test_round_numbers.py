"""Training enterprises name rounds by the server's index everywhere: their human lines, their
events and their --json report (real server, two ``secagg-client --enterprise`` processes with
the tiny encoder). The federation's round 0 fails before they join, so their round is 1: a
client counting rounds itself (it once printed "trained for round 1" and then "round 0") shows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from secagg_clients.enrolment import enrol_locally
from secagg_server.operator import Operator, ServerProcess, create_federation

pytestmark = pytest.mark.slow


def test_training_clients_report_the_servers_round_index(tmp_path: Path) -> None:
    names = ("energy_utility", "city_operations")
    enrolled = enrol_locally(tmp_path / "ids", "numbers", names)
    tokens = create_federation(tmp_path / "server", "numbers", enrolled.roster_path)
    server = ServerProcess(tmp_path / "server").start()
    procs: list[subprocess.Popen[str]] = []
    try:
        with Operator(server.url, tokens["operator_token"]) as op:
            failed = op.open_round("masking", {"vector_length": 10}, stage_timeout_s=0.5)
            assert op.wait(failed["round_id"], timeout=30)["status"] == "failed"
            for i, name in enumerate(names):
                (tmp_path / f"{name}.token").write_text(tokens["client_tokens"][i])
                log = (tmp_path / f"{name}.log").open("w")  # human lines: no pipe to fill
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "secagg_clients", "--server", server.url,
                     "--token-file", str(tmp_path / f"{name}.token"),
                     "--identity", str(enrolled.identity_paths[i]),
                     "--roster", str(enrolled.roster_path), "--enterprise", name,
                     "--ledger", str(tmp_path / f"{name}.ledger.json"), "--rounds", "1",
                     "--epochs", "1", "--encoder", "test_only_tiny", "--threads", "1",
                     "--json", str(tmp_path / f"{name}.report.json"), "--events", "jsonl"],
                    stdout=subprocess.PIPE, stderr=log, text=True))
                log.close()
            assert procs[0].stdout is not None and procs[1].stdout is not None
            streams = [p.stdout for p in procs]
            seen: list[list[dict[str, object]]] = [[], []]
            dimension = None
            for i, stream in enumerate(streams):  # both trained: the round can open
                assert stream is not None
                for line in stream:
                    seen[i].append(json.loads(line))
                    if seen[i][-1]["event"] == "ready":
                        dimension = seen[i][-1]["dimension"]
                    if seen[i][-1]["event"] == "trained":
                        break
            info = op.open_round("masking", {"vector_length": dimension, "clip": 2.0,
                                             "value_bits": 22}, stage_timeout_s=120)
            assert info["index"] == 1
            assert op.wait(info["round_id"], timeout=300)["status"] == "done"
        outputs = [(p.communicate(timeout=120)[0], (tmp_path / f"{n}.log").read_text())
                   for p, n in zip(procs, names, strict=True)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        server.stop()
    for i, (name, (out, err)) in enumerate(zip(names, outputs, strict=True)):
        assert procs[i].returncode == 0, err
        events = seen[i] + [json.loads(line) for line in out.splitlines()]
        kinds = [e["event"] for e in events]
        assert kinds[:2] == ["ready", "trained"] and kinds[-1] == "done", kinds
        assert "round_opened" in kinds and "round_completed" in kinds, kinds
        assert {e["round"] for e in events if "round" in e} == {1}, events
        completed = next(e for e in events if e["event"] == "round_completed")
        assert completed["round_id"] == info["round_id"] and completed["survivors"] == [0, 1]
        assert {int(n) for n in re.findall(r"round (\d+)", err)} == {1}, err
        assert "trained locally" in err and "round 1 (masking): aggregate of 2 clients" in err
        report = json.loads((tmp_path / f"{name}.report.json").read_text())
        assert [(r["index"], r["round_id"]) for r in report["rounds"]] == \
            [(1, info["round_id"])]
