"""An enterprise killed between rounds resumes from its --state-dir with the federation's model.

Real processes: a server, two ``secagg-client --enterprise`` processes training the tiny encoder
with DP; one is SIGKILLed after round 1 and started again with the same arguments.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secagg.dp.ledger import PrivacyLedger
from secagg_clients.enrolment import enrol_locally
from secagg_server.operator import Operator, ServerProcess, create_federation

pytestmark = pytest.mark.slow
BUDGET = 6.0


class Enterprise:
    def __init__(self, root: Path, url: str, token: str, name: str, identity: Path,
                 roster: Path) -> None:
        tok = root / f"{name}.token"
        tok.write_text(token)
        os.chmod(tok, 0o600)
        self.cmd = [sys.executable, "-m", "secagg_clients", "--server", url, "--token-file", str(tok),
                    "--identity", str(identity), "--roster", str(roster), "--enterprise", name,
                    "--ledger", str(root / f"{name}.ledger.json"),
                    "--rounds", "2", "--epsilon", str(BUDGET), "--epochs", "1", "--encoder",
                    "test_only_tiny", "--threads", "1", "--state-dir", str(root / "state"),
                    "--events", "jsonl"]
        self.name, self.root = name, root
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lines: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc, self.events), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[str], events: queue.Queue[dict[str, Any]]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                events.put(json.loads(line))  # --events jsonl: stdout is one event per line
            except ValueError:
                self.lines.append(line)

    def expect(self, kind: str, timeout: float = 240) -> dict[str, Any]:
        while True:
            try:
                ev = self.events.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{self.name}: no {kind!r} event; output: "
                                     f"{''.join(self.lines[-20:])}") from None
            if ev["event"] == kind:
                return ev
            assert ev["event"] not in ("round_dropped", "round_refused", "error"), ev


def test_killed_enterprise_resumes_with_the_combined_model(tmp_path: Path) -> None:
    names = ("energy_utility", "city_operations")
    enrolled = enrol_locally(tmp_path / "enterprises", "resume", names)
    tokens = create_federation(tmp_path / "server", "resume", enrolled.roster_path)
    server = ServerProcess(tmp_path / "server").start()
    ents = [Enterprise(tmp_path, server.url, t, n, ident, enrolled.roster_path)
            for t, n, ident in zip(tokens["client_tokens"], names, enrolled.identity_paths,
                                   strict=True)]
    try:
        dim = ents[0].expect("ready")["dimension"]
        ents[1].expect("ready")
        with Operator(server.url, tokens["operator_token"]) as op:
            for e in ents:
                e.expect("trained")
            first = op.open_round("masking", {"vector_length": dim, "clip": 2.0, "value_bits": 22},
                                  stage_timeout_s=120)
            for e in ents:  # every event names the round by the server's index
                assert e.expect("round_completed")["round"] == first["index"]
            assert op.wait(first["round_id"])["status"] == "done"

            victim = ents[0]
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(timeout=30)
            victim.start()
            ready = victim.expect("ready")
            assert ready["resumed_rounds"] == 1

            for e in ents:
                e.expect("trained")
            second = op.open_round("masking", {"vector_length": dim, "clip": 2.0, "value_bits": 22},
                                   stage_timeout_s=120)
            for e in ents:
                assert e.expect("round_completed")["round"] == second["index"]
            status = op.wait(second["round_id"])
            assert status["status"] == "done" and status["result"]["survivors"] == [0, 1]
            for e in ents:
                e.expect("done")
                assert e.proc.wait(timeout=60) == 0
    finally:
        for e in ents:
            if e.proc.poll() is None:
                e.proc.kill()
        server.stop()
    # both enterprises hold the same combined model, the resumed one included
    models = [np.load(tmp_path / "state" / f"{n}.model.npy") for n in names]
    np.testing.assert_array_equal(models[0], models[1])
    for n in names:
        assert PrivacyLedger.load(tmp_path / f"{n}.ledger.json").spent() <= BUDGET
        progress = json.loads((tmp_path / "state" / f"{n}.progress.json").read_text())
        assert progress["completed"] == 2
