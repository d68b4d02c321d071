"""A malicious enterprise against three honest ``secagg-client`` processes, over a real server.

Everything is a real process on a real socket: the server (``python -m secagg_server``), three honest
enterprises (``python -m secagg_clients --update u.npy``, each with its identity and the pinned roster)
and one malicious member of the roster (``tests/server/malicious.py``, written with the library:
its own token and identity, so everything it signs verifies). The federation's masking rounds
are the service's active rounds.

* It advertises an all-zero (low-order) X25519 mask key, correctly signed: the server refuses the
  advert (4xx naming the key), the malicious client is a dropout, and the honest processes finish
  every round with the exact sum of their updates and exit 0.
* It posts garbage sealed share boxes (right size, so the server cannot tell): each honest
  neighbour fails to open its box, leaves the sender out of its masks and reports it; the server
  takes its vector back out of the sum, and the round's result names it as excluded.

Positive controls (the defence turned off in the process that runs it, by monkeypatching at
start-up; no library code changes): with the server's low-order check disabled, the zero key
reaches the honest clients, which then refuse the round (exit 3): the server's refusal is what
keeps the round going. With the honest clients' pre-per-neighbourhood behaviour
(``insecure_global_survivor_checks``), one garbage box aborts them all (exit 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from secagg.contract import Header, ReleasedAggregate
from secagg.masking import Aggregate, MaskingConfig
from secagg_server.operator import ServerProcess, free_port
from tests.server.conftest import Federation, make_federation, tolerance, updates

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HONEST = (0, 1, 2)
EVIL = 3
LENGTH = 2000
STAGE_S = 4.0

#: Server started with its check for low-order X25519 keys switched off (positive control).
NO_LOW_ORDER_CHECK = """
import sys
import secagg.masking.server as s
s.validate_public_key = lambda public, what="": None
from secagg_server.cli import main
raise SystemExit(main(sys.argv[1:]))
"""

#: A secagg-client whose masking sessions abort on any bad share box (positive control).
GLOBAL_CHECKS_CLIENT = """
import sys
import secagg.masking.client as c
_init = c.ClientSession.__init__
def init(self, *args, **kwargs):
    kwargs["insecure_global_survivor_checks"] = True
    _init(self, *args, **kwargs)
c.ClientSession.__init__ = init
from secagg_clients.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


class PatchedServer(ServerProcess):
    """A ServerProcess whose process runs ``script`` (a patched ``secagg-server``)."""

    script: str = ""

    def start(self, timeout: float = 30.0) -> PatchedServer:
        cmd = [sys.executable, "-c", self.script, "serve", "--host", "127.0.0.1", "--port",
               str(self.port), "--data", str(self.data_dir), "--log-level", self.log_level]
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("patched server did not start")


class Run:
    """The federation (4 members), its processes and their outputs."""

    def __init__(self, tmp: Path, server_script: str | None = None) -> None:
        self.tmp = tmp
        toks = make_federation(tmp / "data", "city", 4)
        if server_script is None:
            server = ServerProcess(tmp / "data", log_level="info")
        else:
            server = PatchedServer(tmp / "data", port=free_port(), log_level="info")
            server.script = server_script
        self.fed = Federation(server.start(), toks["operator_token"], toks["client_tokens"],
                              toks["enrolled"])
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.ups = updates(4, LENGTH, seed=21)

    def token_file(self, i: int) -> Path:
        path = self.tmp / f"token-{i}"
        path.write_text(self.fed.tokens[i])
        os.chmod(path, 0o600)
        return path

    def common(self, i: int) -> list[str]:
        return ["--server", self.fed.server.url, "--token-file", str(self.token_file(i)),
                "--identity", str(self.fed.enrolled.identity_paths[i]),
                "--roster", str(self.fed.enrolled.roster_path)]

    def honest(self, rounds: int, script: str | None = None) -> None:
        for i in HONEST:
            np.save(self.tmp / f"u{i}.npy", self.ups[i])
            head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "secagg_clients"]
            self.procs[i] = subprocess.Popen(
                [*head, *self.common(i), "--update", str(self.tmp / f"u{i}.npy"),
                 "--rounds", str(rounds), "--json", str(self.tmp / f"report-{i}.json"),
                 "--out", str(self.tmp / f"mean-{i}.npy")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)

    def evil(self, attack: str, rounds: int) -> None:
        self.procs[EVIL] = subprocess.Popen(
            [sys.executable, "-m", "tests.server.malicious", *self.common(EVIL), "--attack",
             attack, "--rounds", str(rounds)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)

    def open_round(self, stage_timeout: float = STAGE_S) -> dict[str, Any]:
        with self.fed.op() as op:
            resp = op.post("/v1/rounds", json={"mode": "masking", "stage_timeout_s": stage_timeout,
                                               "options": {"vector_length": LENGTH}})
            assert resp.status_code == 201, resp.text
            info: dict[str, Any] = resp.json()
            return info

    def wait_done(self, round_id: int, timeout: float = 60.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            status = self.fed.status(round_id)
            if status["status"] != "open":
                return status
            time.sleep(0.1)
        raise AssertionError(f"round {round_id} did not end: {self.fed.status(round_id)}")

    def released_sum(self, info: dict[str, Any]) -> np.ndarray:
        with self.fed.op() as op:
            resp = op.get(f"/v1/rounds/{info['round_id']}/result")
            assert resp.status_code == 200, resp.text
        meta = ReleasedAggregate.from_header(resp.headers[Header.RESULT])
        assert meta.total_weight is not None
        agg = Aggregate(total=np.frombuffer(resp.content, "<u4").astype(np.uint32),
                        total_weight=int(meta.total_weight), survivors=meta.survivors,
                        dropped=meta.dropped,
                        config=MaskingConfig.from_dict(info["config"]))
        return agg.weighted_sum()

    def output(self, i: int, timeout: float = 60.0) -> tuple[int, str]:
        out, _ = self.procs[i].communicate(timeout=timeout)
        return self.procs[i].returncode, out

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        self.fed.server.kill()


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    made: list[Run] = []
    yield made
    for r in made:
        r.close()


def _events(out: str) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("malicious-event ")) for line in out.splitlines()
            if line.startswith("malicious-event ")]


def _honest_mean(run: Run) -> np.ndarray:
    return np.mean(np.stack([run.ups[i] for i in HONEST]).astype(np.float64), axis=0)


def _check_honest_finished(run: Run, rounds: int, infos: list[dict[str, Any]]) -> None:
    """Every honest process exits 0 having completed every round with the honest mean; the
    server's released sum of every round is the honest sum."""
    mean_tol = tolerance(len(HONEST)) / len(HONEST)
    for i in HONEST:
        code, out = run.output(i)
        assert code == 0, out
        report = json.loads((run.tmp / f"report-{i}.json").read_text())
        assert len(report["rounds"]) == rounds, report
        for entry in report["rounds"]:
            assert not entry["dropped"] and entry["survivors"] == list(HONEST), (entry, out)
            assert entry["total_weight"] == len(HONEST)
        mean = np.load(run.tmp / f"mean-{i}.npy")
        assert np.max(np.abs(mean - _honest_mean(run))) <= mean_tol
    want = np.sum(np.stack([run.ups[i] for i in HONEST]).astype(np.float64), axis=0)
    for info in infos:
        assert np.max(np.abs(run.released_sum(info) - want)) <= tolerance(len(HONEST))


def test_low_order_mask_key_is_refused_and_the_honest_enterprises_finish(
        tmp_path: Path, runs: list[Run]) -> None:
    run = Run(tmp_path)
    runs.append(run)
    rounds = 2
    run.honest(rounds)
    run.evil("low-order-key", rounds)
    infos = []
    for _ in range(rounds):
        info = run.open_round()
        status = run.wait_done(info["round_id"])
        assert status["status"] == "done", status
        assert status["result"]["survivors"] == list(HONEST)
        assert status["result"]["dropped"] == [EVIL]
        infos.append(info)
    _check_honest_finished(run, rounds, infos)
    _, out = run.output(EVIL)
    refusals = [e for e in _events(out) if e.get("message", "").startswith("advert with")]
    assert len(refusals) == rounds, out
    for e in refusals:
        assert 400 <= e["status"] < 500, e
        assert "mask_public" in e["detail"] and "low-order" in e["detail"], e


def test_garbage_share_boxes_get_the_sender_excluded_and_named(
        tmp_path: Path, runs: list[Run]) -> None:
    run = Run(tmp_path)
    runs.append(run)
    rounds = 2
    run.honest(rounds)
    run.evil("garbage-shares", rounds)
    infos = []
    for _ in range(rounds):
        info = run.open_round()
        status = run.wait_done(info["round_id"])
        assert status["status"] == "done", status
        result = status["result"]
        assert result["excluded"] == [EVIL], result  # named in the round's result metadata
        assert result["survivors"] == list(HONEST) and EVIL in result["dropped"]
        infos.append(info)
    _check_honest_finished(run, rounds, infos)
    _, out = run.output(EVIL)
    events = _events(out)
    posted = [e for e in events if e.get("message") == "garbage share boxes"]
    assert len(posted) == rounds and all(e["status"] in (200, 202) for e in posted), out
    # it uploaded its masked vector too (taken back out of the sum), then was left out
    assert sum(e.get("message") == "left out" for e in events) == rounds, out


def test_positive_control_without_the_servers_low_order_check_honest_clients_refuse(
        tmp_path: Path, runs: list[Run]) -> None:
    run = Run(tmp_path, server_script=NO_LOW_ORDER_CHECK)
    runs.append(run)
    run.honest(1)
    run.evil("low-order-key", 1)
    run.open_round()
    _, out = run.output(EVIL)
    accepted = [e for e in _events(out) if e.get("message", "").startswith("advert with")]
    assert accepted and accepted[0]["status"] in (200, 202), out  # the defence is really off
    for i in HONEST:
        code, out = run.output(i)
        assert code == 3, out  # the round was refused: what the test above would catch
        assert "refused" in out and f"client {EVIL}" in out, out


def test_positive_control_with_global_checks_one_garbage_box_aborts_every_honest_client(
        tmp_path: Path, runs: list[Run]) -> None:
    run = Run(tmp_path)
    runs.append(run)
    run.honest(1, script=GLOBAL_CHECKS_CLIENT)
    run.evil("garbage-shares", 1)
    run.open_round()
    for i in HONEST:
        code, out = run.output(i)
        assert code == 3, out
        assert "refused" in out and f"shares from client {EVIL}" in out, out


#: Server that never leaves culprits out (positive control for the exclusion).
KEEPS_CULPRITS = """
import sys
from secagg_server.coordinator import Coordinator
Coordinator.exclude_culprits = False
from secagg_server.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _culprit_rounds(run: Run) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Round 1 with the inconsistent dealer; then round 2 opened: (status 1, open 2, status 2)."""
    run.honest(2)
    run.evil("inconsistent-dealer", 2)
    # stages close as soon as every participant answered: the long timeout only keeps a loaded
    # machine's slow honest client from dropping out (a failure with no culprit)
    first = run.open_round(stage_timeout=20.0)
    status1 = run.wait_done(first["round_id"], timeout=120.0)
    second = run.open_round(stage_timeout=20.0)
    status2 = run.wait_done(second["round_id"], timeout=120.0)
    return status1, second, status2


def test_a_named_culprit_is_left_out_of_later_rounds_even_after_a_restart(
        tmp_path: Path, runs: list[Run]) -> None:
    run = Run(tmp_path)
    runs.append(run)
    status1, second, status2 = _culprit_rounds(run)
    assert status1["status"] == "failed" and status1.get("culprit") == EVIL, status1
    assert f"client {EVIL}" in status1["reason"]
    assert any(f"client {EVIL} is left out" in n for n in second["notes"]), second
    assert status2["status"] == "done", status2
    assert status2["excluded_culprits"] == [EVIL]
    assert status2["result"]["survivors"] == list(HONEST)
    want = np.sum(np.stack([run.ups[i] for i in HONEST]).astype(np.float64), axis=0)
    assert np.max(np.abs(run.released_sum(second) - want)) <= tolerance(len(HONEST))
    for i in HONEST:  # round 1 ended for them, round 2 released the honest mean
        code, out = run.output(i)
        assert code == 0, out
    # the exclusion is stored: a restarted server leaves the culprit out of its next round too
    run.fed.server.stop()
    run.fed.server.start()
    third = run.open_round()
    assert third["excluded_culprits"] == [EVIL], third
    assert any(f"client {EVIL} is left out" in n for n in third["notes"]), third
    # posting to the round anyway is refused, before its body is even read as a message
    resp = httpx.post(f"{run.fed.server.url}/v1/rounds/{third['round_id']}/messages",
                      content=b"x" * 64, headers={"Authorization": f"Bearer {run.fed.tokens[EVIL]}",
                                                  "Content-Type": "application/octet-stream"})
    assert resp.status_code == 403 and resp.json()["error"] == "left_out", resp.text
    # nor may it read the round: its status, its inbox, its result
    evil = {"Authorization": f"Bearer {run.fed.tokens[EVIL]}"}
    rid = third["round_id"]
    for path in (f"/v1/rounds/{rid}", f"/v1/rounds/{rid}/inbox", f"/v1/rounds/{rid}/result"):
        resp = httpx.get(run.fed.server.url + path, headers=evil)
        assert resp.status_code == 403 and resp.json()["error"] == "left_out", (path, resp.text)
    with run.fed.op() as op:
        # a round the remaining members cannot complete is refused when opened, not failed
        resp = op.post("/v1/rounds", json={"mode": "masking", "options": {
            "vector_length": LENGTH, "threshold": 4, "neighbours": 3}})
        assert resp.status_code == 409 and resp.json()["error"] == "too_few_members", resp.text
        # CKKS's rotating dealer skips the culprit (round index 3 would have named client 3)
        resp = op.post("/v1/rounds", json={"mode": "ckks", "options": {"vector_length": LENGTH}})
        assert resp.status_code == 201, resp.text
        assert resp.json()["index"] % 4 == EVIL and resp.json()["config"]["dealer"] != EVIL
        resp = op.post("/v1/rounds", json={"mode": "ckks", "options": {
            "vector_length": LENGTH, "dealer": EVIL}})
        assert resp.status_code == 400 and "left out" in resp.json()["detail"], resp.text


def test_positive_control_a_server_that_keeps_culprits_fails_every_round(
        tmp_path: Path, runs: list[Run]) -> None:
    run = Run(tmp_path, server_script=KEEPS_CULPRITS)
    runs.append(run)
    status1, _, status2 = _culprit_rounds(run)
    assert status1["status"] == "failed" and status1["culprit"] == EVIL, status1
    assert "excluded_culprits" not in status2
    assert status2["status"] == "failed" and status2["culprit"] == EVIL, status2
