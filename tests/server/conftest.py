"""Real server processes on loopback for the service tests (temp data dir, always cleaned up).

Every federation is enrolled as in a deployment: one identity file per enterprise directory and
a roster (:func:`secagg_clients.enrolment.enrol_locally`, in the test's tmp dir), the federation created
from the roster, and every client running with its identity and the pinned roster."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from secagg.identity import Identity, Roster
from secagg_clients.enrolment import LocalEnrolment, enrol_locally
from secagg_clients.runtime import RoundResult, RuntimeClient
from secagg_server.operator import ServerProcess, create_federation

N = 5


def make_federation(data: Path, name: str, n: int) -> dict[str, Any]:
    """Enrol ``n`` enterprises next to ``data`` and create the federation from their roster;
    the tokens (``create_federation``'s answer) plus ``enrolled`` (the identities, roster)."""
    enrolled = enrol_locally(Path(data).parent / f"{name}-enterprises", name,
                             [f"enterprise-{i}" for i in range(n)])
    tokens = create_federation(data, name, enrolled.roster_path)
    return {**tokens, "enrolled": enrolled}


@dataclass
class Federation:
    server: ServerProcess
    operator: str
    tokens: list[str]
    enrolled: LocalEnrolment

    @property
    def roster(self) -> Roster:
        return self.enrolled.roster

    def identity(self, i: int) -> Identity:
        return self.enrolled.identity(i)

    def runtime(self, i: int, **kw: Any) -> RuntimeClient:
        """Client ``i``'s runtime, with its identity and the pinned roster."""
        return RuntimeClient(self.server.url, self.tokens[i], identity=self.identity(i),
                             roster=self.roster, **kw)

    def op(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30.0,
                            headers={"Authorization": f"Bearer {self.operator}"})

    def as_client(self, i: int) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30.0,
                            headers={"Authorization": f"Bearer {self.tokens[i]}"})

    def open_round(self, length: int, timeout: float = 20.0, mode: str = "masking") -> dict[str, Any]:
        with self.op() as op:
            resp = op.post("/v1/rounds", json={"mode": mode, "stage_timeout_s": timeout,
                                               "options": {"vector_length": length}})
            assert resp.status_code == 201, resp.text
            info: dict[str, Any] = resp.json()
            return info

    def status(self, round_id: int) -> dict[str, Any]:
        with self.op() as op:
            out: dict[str, Any] = op.get(f"/v1/rounds/{round_id}").json()
            return out


def start_federation(tmp: Path, n: int = N) -> Federation:
    data = tmp / "data"
    toks = make_federation(data, "test", n)
    server = ServerProcess(data, log_level="info").start()
    return Federation(server, toks["operator_token"], toks["client_tokens"], toks["enrolled"])


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    f = start_federation(tmp_path)
    try:
        yield f
    finally:
        f.server.kill()


@pytest.fixture
def fed3(tmp_path: Path) -> Iterator[Federation]:
    """A federation of three enterprises on a real server (killed afterwards)."""
    f = start_federation(tmp_path, 3)
    try:
        yield f
    finally:
        f.server.kill()


def updates(n: int, length: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.5, 0.5, length).astype(np.float32) for _ in range(n)]


class HonestClients:
    """Clients ``ids`` in threads, each running the real runtime for one round."""

    def __init__(self, fed: Federation, ids: list[int], ups: list[np.ndarray]) -> None:
        self.results: dict[int, RoundResult] = {}
        self.errors: dict[int, BaseException] = {}
        self.threads = [threading.Thread(target=self._run, args=(fed, i, ups[i]), daemon=True)
                        for i in ids]
        for t in self.threads:
            t.start()

    def _run(self, fed: Federation, i: int, update: np.ndarray) -> None:
        try:
            with fed.runtime(i, poll_wait=2.0, retry_for=60.0) as rt:
                self.results[i] = rt.run_round(update, timeout=60)
        except BaseException as exc:
            self.errors[i] = exc

    def join(self, timeout: float = 60.0) -> dict[int, RoundResult]:
        for t in self.threads:
            t.join(timeout)
        assert not self.errors, self.errors
        assert all(not t.is_alive() for t in self.threads), "a client did not finish"
        return self.results


def tolerance(n: int, clip: float = 1.0, bits: int = 16) -> float:
    return n * 2 * clip / ((1 << bits) - 1) + 1e-6


def wait_stage(fed: Federation, rid: int, stage: str, awaiting: int, timeout: float = 20.0) -> None:
    """Block until round ``rid`` is at ``stage`` awaiting ``awaiting`` clients."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = fed.status(rid)
        if st.get("stage") == stage and st.get("awaiting") == awaiting:
            return
        time.sleep(0.02)
    raise AssertionError(f"round never reached {stage} awaiting {awaiting}: {fed.status(rid)}")


def expect_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    """Assert a clear JSON error: this status, an ``error`` code and a non-empty ``detail``."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    body: dict[str, str] = resp.json()
    assert body["detail"], body
    if code is not None:
        assert body["error"] == code, body
    return body
