"""End to end over the project's own server: a secure round vs a plaintext round, real processes.

One server process (``python -m server``) on 127.0.0.1 with a temporary data directory, and one
``secagg-client`` process per client, each with a random float32 update. The same clients
take part in alternating secure and ``plain`` rounds (the plain mode sums float32 uploads with no
protection: same server, store, HTTP path and runtime), so the ratio isolates what protection
costs. A round's time runs from the operator's "open round" request to the moment the last
client holds the released aggregate (clients stamp it with ``time.time()`` on the same machine).

``secagg`` must not import the ``server`` or ``clients`` packages; this module only starts them
as processes and speaks HTTP to them (:class:`ServerProcess` is reused by ``tests/server``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

__all__ = ["E2EResult", "ServerProcess", "create_federation", "free_port", "run_e2e_bench"]

AVAILABLE_MODES = ("masking",)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def create_federation(data_dir: str | Path, name: str, clients: int) -> dict[str, Any]:
    """Run ``secagg-server federation create --json``; returns its tokens."""
    out = subprocess.run([sys.executable, "-m", "server", "federation", "create", "--data",
                          str(data_dir), "--name", name, "--clients", str(clients), "--json"],
                         check=True, capture_output=True, text=True, timeout=60)
    tokens: dict[str, Any] = json.loads(out.stdout)
    return tokens


@dataclass
class ServerProcess:
    """A real ``secagg-server`` process on loopback; ``start`` waits until /healthz answers."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    allow_plain: bool = False
    log_level: str = "warning"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1", "--port",
               str(self.port), "--data", str(self.data_dir), "--log-level", self.log_level]
        if self.allow_plain:
            cmd.append("--allow-plain")
        log = open(Path(self.data_dir).parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode} on start")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server did not answer /healthz within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class E2EResult:
    secure_round_s: float
    plain_round_s: float
    secure_rounds_s: list[float]
    plain_rounds_s: list[float]
    max_abs_error_vs_plaintext: float
    survivors: int

    @property
    def ratio(self) -> float:
        return self.secure_round_s / self.plain_round_s


class _Client:
    """One ``secagg-client`` process, its stdout read line by line on a thread."""

    def __init__(self, url: str, token_file: Path, update: Path, rounds: int, report: Path) -> None:
        cmd = [sys.executable, "-m", "clients", "--server", url, "--token-file", str(token_file), "--update",
               str(update), "--rounds", str(rounds), "--json", str(report)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip())

    def wait_for(self, prefix: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"client did not print {prefix!r} within {timeout} s") from None
            if line.startswith(prefix):
                return line
            if "Traceback" in line or "error" in line:
                raise RuntimeError(f"client failed: {line}")


def run_e2e_bench(*, clients: int, params: int, repeats: int = 3, warmup: int = 1, seed: int = 0,
                  workdir: str | None = None, timeout: float = 300.0) -> E2EResult:
    """Alternate ``repeats`` secure and plain rounds after ``warmup`` untimed pairs (first-use
    costs in fresh processes); medians of the round times."""
    from secagg.masking import Aggregate, MaskingConfig

    with tempfile.TemporaryDirectory(prefix="secagg-e2e-", dir=workdir) as tmp:
        root = Path(tmp)
        data = root / "data"
        tokens = create_federation(data, "bench", clients)
        server = ServerProcess(data, allow_plain=True).start()
        procs: list[_Client] = []
        rng = np.random.default_rng(seed)
        updates = [rng.uniform(-0.5, 0.5, params).astype(np.float32) for _ in range(clients)]
        try:
            for i, token in enumerate(tokens["client_tokens"]):
                tok = root / f"token-{i}"
                tok.write_text(token)
                os.chmod(tok, 0o600)
                np.save(root / f"update-{i}.npy", updates[i])
                procs.append(_Client(server.url, tok, root / f"update-{i}.npy", 2 * (repeats + warmup),
                                     root / f"report-{i}.json"))
            for c in procs:
                c.wait_for("client ", timeout)
            time.sleep(0.3)  # let every client's long poll for the next round arrive
            http = httpx.Client(base_url=server.url, timeout=60.0,
                                headers={"Authorization": f"Bearer {tokens['operator_token']}"})
            opened: dict[int, tuple[str, float, dict[str, Any]]] = {}  # index -> mode, t0, info
            for rep in range(repeats + warmup):
                for mode in ("masking", "plain"):
                    t0 = time.time()
                    resp = http.post("/v1/rounds", json={
                        "mode": mode, "stage_timeout_s": timeout,
                        "options": {"vector_length": params, "clip": 1.0}})
                    resp.raise_for_status()
                    info = resp.json()
                    if rep >= warmup:
                        opened[info["index"]] = (mode, t0, info)
                    for c in procs:
                        c.wait_for(f"round {info['index']} ", timeout)
            results = {}
            for idx, (_, _, info) in opened.items():
                r = http.get(f"/v1/rounds/{info['round_id']}/result")
                r.raise_for_status()
                results[idx] = (json.loads(r.headers["X-Secagg-Result"]), r.content)
            http.close()
            for c in procs:
                c.proc.wait(timeout=timeout)
        finally:
            for c in procs:
                if c.proc.poll() is None:
                    c.proc.kill()
            server.stop()
        done: dict[int, float] = {}
        for i in range(clients):
            for entry in json.loads((root / f"report-{i}.json").read_text())["rounds"]:
                done[entry["index"]] = max(done.get(entry["index"], 0.0), entry["received_at"])
        times: dict[str, list[float]] = {"masking": [], "plain": []}
        sums: dict[str, list[np.ndarray]] = {"masking": [], "plain": []}
        survivors = clients
        for idx, (mode, t0, info) in sorted(opened.items()):  # warm-up rounds are not in opened
            times[mode].append(done[idx] - t0)
            meta, payload = results[idx]
            if mode == "masking":
                agg = Aggregate(total=np.frombuffer(payload, "<u4").astype(np.uint32),
                                total_weight=meta["total_weight"], survivors=tuple(meta["survivors"]),
                                dropped=tuple(meta["dropped"]),
                                config=MaskingConfig.from_dict(info["config"]))
                sums[mode].append(agg.weighted_sum())
                survivors = min(survivors, len(meta["survivors"]))
            else:
                sums[mode].append(np.frombuffer(payload, "<f4").astype(np.float64))
        err = max(float(np.max(np.abs(s - p))) for s in sums["masking"] for p in sums["plain"])
    return E2EResult(secure_round_s=statistics.median(times["masking"]),
                     plain_round_s=statistics.median(times["plain"]),
                     secure_rounds_s=times["masking"], plain_rounds_s=times["plain"],
                     max_abs_error_vs_plaintext=err, survivors=survivors)
