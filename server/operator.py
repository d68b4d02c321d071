"""The operator's side from Python: the server process, the federation, the rounds.

    from secagg_clients.enrolment import enrol_locally
    from secagg_server.operator import Operator, ServerProcess, create_federation, readmit

    enrolled = enrol_locally("ids", "city", ["energy", "security", "ops"])  # enterprises' part
    tokens = create_federation("srv", "city", enrolled.roster_path)  # one token per enterprise
    server = ServerProcess(Path("srv")).start()                  # secagg-server on 127.0.0.1
    with Operator(server.url, tokens["operator_token"]) as op:
        info = op.open_round("masking", {"vector_length": 75_444, "clip": 2.0})
        status = op.wait(info["round_id"])                       # 'done' or 'failed'
    # a failed round named client 2 its culprit (left out since); its enterprise fixed it:
    readmit("srv", "city", 2, reason="v1.2 deals consistent shares")  # in the next rounds again

Whoever runs the aggregation server runs this: the demo, the end-to-end benchmark, the tests and
``examples/smart_city``. :class:`ServerProcess` and :func:`create_federation` run the server's
own command line in a child process (``python -m secagg_server``), as a deployment does (so
does :func:`readmit`, which writes to the store like ``federation create``); :class:`Operator`
speaks to the server over HTTP only, with the operator's token.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from secagg.contract import Header, ReleasedAggregate, Route
from secagg.encoding import ParamSpec
from secagg.errors import InvalidParameter, SecAggError
from secagg.identity import Roster
from secagg.tls import tls_verify as _tls_verify

__all__ = ["Operator", "OperatorError", "ServerProcess", "create_federation", "free_port",
           "readmit", "tls_verify"]


class OperatorError(SecAggError):
    """The server refused an operator request; the message carries its JSON error."""


def tls_verify(verify: bool | str) -> bool | ssl.SSLContext:
    """httpx's ``verify`` from ``True``/``False`` or a CA bundle path (a file of PEM certificates);
    a bundle that is missing or unusable raises :class:`OperatorError` (:func:`secagg.tls.tls_verify`,
    shared with the enterprises' runtime)."""
    return _tls_verify(verify, error=OperatorError, say_why=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def create_federation(data_dir: str | Path, name: str,
                      roster: Roster | str | os.PathLike[str]) -> dict[str, Any]:
    """Run ``secagg-server federation create --roster ... --json``; returns its tokens (shown
    only once) and ``roster_digest``. ``roster`` is a roster file or a :class:`Roster` (written
    next to ``data_dir`` as ``<name>.roster.json`` for the command)."""
    if isinstance(roster, Roster):
        roster_path = Path(data_dir).parent / f"{name}.roster.json"
        roster_path.parent.mkdir(parents=True, exist_ok=True)
        roster.save(roster_path)
    elif isinstance(roster, str | os.PathLike):
        roster_path = Path(roster)
    else:
        raise InvalidParameter(f"roster must be a Roster or the path of a roster file, found "
                               f"{type(roster).__name__}")
    out = subprocess.run([sys.executable, "-m", "secagg_server", "federation", "create", "--data",
                          str(data_dir), "--name", name, "--roster", str(roster_path), "--json"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise OperatorError(f"creating federation {name!r} failed: {out.stderr.strip()}")
    tokens: dict[str, Any] = json.loads(out.stdout)
    return tokens


def readmit(data_dir: str | Path, federation: str, client: int,
            reason: str | None = None) -> dict[str, Any]:
    """Run ``secagg-server federation readmit ... --json``: take client ``client``, left out as
    the culprit of a failed round, back into the rounds ``federation`` opens from now on (the
    server may be running). Returns the readmission (``culprit_of_rounds``, ``next_round``,
    ``reason``); raises :class:`OperatorError` with the command's one-line refusal."""
    cmd = [sys.executable, "-m", "secagg_server", "federation", "readmit", "--data",
           str(data_dir), "--federation", federation, "--client", str(client), "--json"]
    if reason is not None:
        cmd += ["--reason", reason]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise OperatorError(f"readmitting client {client} to federation {federation!r} failed: "
                            f"{out.stderr.strip()}")
    done: dict[str, Any] = json.loads(out.stdout)
    return done


@dataclass
class ServerProcess:
    """A real ``secagg-server`` process on loopback; ``start`` waits until /healthz answers."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    allow_plain: bool = False
    log_level: str = "warning"
    tls_cert: Path | None = None  # PEM chain; with tls_key, the server speaks HTTPS only
    tls_key: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return Path(self.data_dir).parent / f"server-{self.port}.log"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        cmd = [sys.executable, "-m", "secagg_server", "serve", "--host", "127.0.0.1", "--port",
               str(self.port), "--data", str(self.data_dir), "--log-level", self.log_level]
        if self.allow_plain:
            cmd.append("--allow-plain")
        if self.tls_cert or self.tls_key:
            cmd += ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)]
        Path(self.data_dir).parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode} on start; "
                                   f"see {self.log_path}")
            try:
                # readiness only: the certificate is checked by every real client
                if httpx.get(self.url + Route.HEALTH, timeout=1.0,
                             verify=not self.tls_cert).status_code == 200:
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


class Operator:
    """The federation operator's HTTP client: open rounds, watch them, fetch results."""

    def __init__(self, server: str, token: str, *, verify: bool | str = True,
                 timeout: float = 60.0) -> None:
        self._http = httpx.Client(base_url=server.rstrip("/"), verify=tls_verify(verify),
                                  timeout=timeout, headers={"Authorization": f"Bearer {token}"})

    def __enter__(self) -> Operator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _ok(self, resp: httpx.Response, what: str) -> httpx.Response:
        if resp.status_code >= 400:
            raise OperatorError(f"{what}: server answered {resp.status_code}: {resp.text[:300]}")
        return resp

    def open_round(self, mode: str, options: dict[str, Any] | None = None, *,
                   layout: ParamSpec | None = None,
                   stage_timeout_s: float = 60.0) -> dict[str, Any]:
        """Open the federation's next round; returns its info (``round_id``, ``index``, config,
        and ``notes``: what the mode warned about this choice, e.g. a small federation's odds of
        a failed round).

        ``layout``: the model's :class:`~secagg.encoding.ParamSpec` (what ``secagg-client layout
        export`` writes). The server derives ``vector_length`` from it and binds the round to
        its digest, so an enterprise fine-tuning another model refuses the round."""
        options = dict(options or {})
        if layout is not None:
            options["layout"] = layout.to_json()
        resp = self._http.post(Route.ROUNDS, json={"mode": mode, "options": options,
                                                   "stage_timeout_s": stage_timeout_s})
        info: dict[str, Any] = self._ok(resp, f"opening a {mode} round").json()
        return info

    def status(self, round_id: int) -> dict[str, Any]:
        info: dict[str, Any] = self._ok(self._http.get(Route.round(round_id)),
                                        f"round {round_id} status").json()
        return info

    def rounds(self) -> list[dict[str, Any]]:
        """Every round of the federation, oldest first: id, index, mode, status, and for an
        open round its stage and the clients it awaits."""
        data = self._ok(self._http.get(Route.ROUNDS), "listing rounds").json()
        rounds: list[dict[str, Any]] = data["rounds"]
        return rounds

    def cancel(self, round_id: int) -> dict[str, Any]:
        """End an open round now (it fails, clients hear it was cancelled); its final info."""
        info: dict[str, Any] = self._ok(self._http.post(Route.cancel(round_id)),
                                        f"cancelling round {round_id}").json()
        return info

    def wait(self, round_id: int, timeout: float = 600.0, poll_s: float = 0.2) -> dict[str, Any]:
        """Poll until the round is ``done`` or ``failed``; returns its final status."""
        end = time.monotonic() + timeout
        while True:
            info = self.status(round_id)
            if info["status"] != "open":
                return info
            if time.monotonic() > end:
                raise TimeoutError(f"round {round_id} still open after {timeout} s "
                                   f"(stage {info.get('stage')})")
            time.sleep(poll_s)

    def result(self, round_id: int) -> tuple[ReleasedAggregate, bytes]:
        """The released result: metadata and payload (masking: the sum; CKKS: a ciphertext)."""
        resp = self._ok(self._http.get(Route.result(round_id)), f"round {round_id} result")
        return ReleasedAggregate.from_header(resp.headers[Header.RESULT]), resp.content
