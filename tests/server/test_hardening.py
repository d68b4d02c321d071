"""Transport and store hardening, against real server processes on real sockets.

* Plain HTTP off the loopback is refused unless ``--insecure-http`` (which warns, once, loudly).
* Slow-loris: an idle connection, a trickled request head, an oversized head, a trickled body and
  a body that goes on after its answer are each cut off within the configured bound, while the
  honest clients' round completes.
* The data directory is 0700 and everything in it 0600, whatever was there before; a directory
  that is group/world-writable or someone else's is refused with a clear message.
* Operator options of the wrong JSON type get 400 naming the option and the type it needs, and
  no round is left behind.
* Errors are logged by type and place only: request data never reaches the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from secagg_server.logs import SafeFormatter
from secagg_server.operator import ServerProcess, free_port
from secagg_server.store import DataDirError, Store
from secagg_server.transport import InsecureBind, check_bind, is_loopback
from tests.server.conftest import (
    Federation,
    HonestClients,
    expect_error,
    start_federation,
    tolerance,
    updates,
)

N = 4
MARKER = "SECRET-MARKER-7f3a9c"


class Proc:
    """``secagg-server serve`` (or a script standing in for it) with extra arguments; its
    stdout and stderr go to one log file the tests read."""

    def __init__(self, tmp: Path, data: Path, *args: str, host: str = "127.0.0.1",
                 script: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"server-{self.port}.log"
        head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "secagg_server"]
        cmd = [*head, "serve", "--host", host, "--port", str(self.port), "--data", str(data),
               "--log-level", "debug", *args]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> Proc:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready: {self.output()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def restart(fed: Federation, tmp: Path, procs: Callable[..., Proc], *args: str,
            script: str | None = None) -> Proc:
    """Stop ``fed``'s server (made the way every service test makes one) and serve the same
    data directory again with ``args``; ``fed`` then talks to the new process."""
    fed.server.stop()
    data = Path(fed.server.data_dir)
    p = procs(tmp, data, *args, script=script).wait_ready()
    fed.server = ServerProcess(data, port=p.port)
    return p


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(*args: Any, **kwargs: Any) -> Proc:
        p = Proc(*args, **kwargs)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- 1. plain HTTP only on the loopback ---------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("LOCALHOST.", True),
    ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False),
    ("192.168.1.2", False), ("fe80::1", False), ("example.org", False), ("localhost.evil", False),
])
def test_which_hosts_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        assert check_bind(host, tls=False, insecure_http=False) is None
    else:
        with pytest.raises(InsecureBind, match="--tls-cert.*--insecure-http"):
            check_bind(host, tls=False, insecure_http=False)
        assert "UNENCRYPTED" in str(check_bind(host, tls=False, insecure_http=True))
    assert check_bind(host, tls=True, insecure_http=False) is None
    with pytest.raises(InsecureBind, match="contradict"):
        check_bind(host, tls=True, insecure_http=True)


def test_plain_http_off_the_loopback_is_refused(tmp_path: Path, procs: Callable[..., Proc]) -> None:
    data = tmp_path / "data"
    p = procs(tmp_path, data, host="0.0.0.0")
    assert p.wait_exit() == 2
    out = p.output()
    assert "refusing to serve plain HTTP on '0.0.0.0'" in out, out
    assert "--tls-cert FILE --tls-key FILE" in out and "--insecure-http" in out, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    assert not data.exists()  # refused before touching anything


def test_insecure_http_warns_loudly_once_and_serves(tmp_path: Path,
                                                    procs: Callable[..., Proc]) -> None:
    p = procs(tmp_path, tmp_path / "data", "--insecure-http", host="0.0.0.0").wait_ready()
    lines = p.output().splitlines()
    warnings = [ln for ln in lines if "--insecure-http" in ln]
    assert len(warnings) == 1, lines
    assert warnings[0].startswith("secagg-server: WARNING: serving plain HTTP on 0.0.0.0")
    assert "UNENCRYPTED" in warnings[0]
    assert lines.index(warnings[0]) <= 1  # at the start, before the server's own lines


def test_loopback_names_need_no_tls(tmp_path: Path, procs: Callable[..., Proc]) -> None:
    p = procs(tmp_path, tmp_path / "data", host="localhost").wait_ready()
    assert "WARNING" not in p.output()


# ---- 2. slow-loris and oversized requests -------------------------------------------------------

HEADER_S, BODY_S, RATE = 1.5, 1.5, 4096
BOUND_S = 4.5  # the configured 1.5 s plus scheduling slack on two busy cores


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.settimeout(10)
    return s


def _read_to_close(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def _trickle(s: socket.socket, chunk: bytes, every: float, limit_s: float) -> tuple[bytes, float]:
    """Send ``chunk`` every ``every`` seconds until the server answers or closes; returns what
    it sent back and when (seconds from the start)."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        readable, _, _ = select.select([s], [], [], every)
        if readable:
            return _read_to_close(s), time.monotonic() - start
        try:
            s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return _read_to_close(s), time.monotonic() - start
    raise AssertionError(f"the server still held the connection after {limit_s} s")


def _idle(url: str) -> tuple[bytes, float]:
    with _connect(url) as s:
        start = time.monotonic()
        return _read_to_close(s), time.monotonic() - start


def _slow_head(url: str) -> tuple[bytes, float]:
    with _connect(url) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        return _trickle(s, b"a", 0.2, 20)


def _huge_head(url: str) -> tuple[bytes, float]:
    with _connect(url) as s:
        start = time.monotonic()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024
                      + b"\r\n\r\n")
        return _read_to_close(s), time.monotonic() - start


def _slow_body(url: str, path: str, token: str, ctype: str) -> tuple[bytes, float]:
    """A body within the route's size limit (an advert is at most 240 bytes), sent slowly."""
    with _connect(url) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: {ctype}\r\nContent-Length: 230\r\n\r\n".encode())
        return _trickle(s, b"\x00" * 20, 0.25, 20)  # 80 B/s, far below the 4096 B/s asked


def _body_after_answer(url: str) -> tuple[bytes, float]:
    """A 401 comes at once; the client goes on sending the (huge) body it announced."""
    with _connect(url) as s:
        s.sendall(b"POST /v1/rounds HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\nx")
        start = time.monotonic()
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
        assert got.startswith(b"HTTP/1.1 401"), got
        rest, _ = _trickle(s, b"x" * 10, 0.2, 20)
        return got + rest, time.monotonic() - start


def _idle_after_drained_body(url: str) -> tuple[bytes, float]:
    """The 401 comes before the body; the body then ends and the connection goes quiet."""
    with _connect(url) as s:
        s.sendall(b"POST /v1/rounds HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
        assert got.startswith(b"HTTP/1.1 401"), got
        s.sendall(b"0123456789")
        start = time.monotonic()
        return got + _read_to_close(s), time.monotonic() - start


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def _json_body(response: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.split(b"\r\n\r\n", 1)[1])
    return body


def test_slow_and_oversized_requests_are_cut_off_while_the_round_completes(
        tmp_path: Path, procs: Callable[..., Proc]) -> None:
    fed = start_federation(tmp_path, N)
    p = restart(fed, tmp_path, procs, "--header-timeout", str(HEADER_S), "--body-timeout",
                str(BODY_S), "--min-body-rate", str(RATE))
    length = 3000
    ups = updates(N, length, seed=11)
    info = fed.open_round(length, timeout=20.0)
    msg_path = f"/v1/rounds/{info['round_id']}/messages"

    attacks: dict[str, Callable[[], tuple[bytes, float]]] = {
        "idle": lambda: _idle(p.url),
        "slow head": lambda: _slow_head(p.url),
        "huge head": lambda: _huge_head(p.url),
        "slow message body": lambda: _slow_body(p.url, msg_path, fed.tokens[0],
                                                "application/octet-stream"),
        "slow operator body": lambda: _slow_body(p.url, "/v1/rounds", fed.operator,
                                                 "application/json"),
        "body after the answer": lambda: _body_after_answer(p.url),
        "idle after a drained body": lambda: _idle_after_drained_body(p.url),
    }
    with ThreadPoolExecutor(len(attacks)) as pool:
        futures = {name: pool.submit(fn) for name, fn in attacks.items()}
        time.sleep(0.2)  # the attackers hold their connections; now the round runs beside them
        honest = HonestClients(fed, list(range(N)), ups)
        results = honest.join()
        got = {name: f.result() for name, f in futures.items()}
    for name, (_, took) in got.items():
        assert took < BOUND_S, (name, took)
    assert got["idle"][0] == b""  # nothing asked, nothing answered: just closed
    head = got["slow head"][0]
    assert _status(head) == 408 and _json_body(head)["error"] == "header_timeout", head
    assert got["slow head"][1] >= HEADER_S - 0.1
    huge = got["huge head"][0]
    assert _status(huge) == 431 and _json_body(huge)["error"] == "header_too_large", huge
    for name in ("slow message body", "slow operator body"):
        resp = got[name][0]
        assert _status(resp) == 408, (name, resp)
        assert b"connection: close" in resp.lower(), resp
        err = _json_body(resp)
        assert err["error"] == "body_timeout" and "bytes/s" in err["detail"], err
        assert got[name][1] >= BODY_S - 0.1
    assert got["body after the answer"][0].startswith(b"HTTP/1.1 401")

    want = np.sum(np.stack(ups).astype(np.float64), axis=0)
    for res in results.values():
        assert res.survivors == tuple(range(N))
        assert np.max(np.abs(res.weighted_sum - want)) <= tolerance(N)
    assert httpx.get(p.url + "/healthz").status_code == 200


def test_a_normal_large_body_is_not_cut_off(tmp_path: Path, procs: Callable[..., Proc]) -> None:
    """The bound is a rate, not a size: a 2 MB body sent steadily well above the rate passes."""
    fed = start_federation(tmp_path, 2)
    p = restart(fed, tmp_path, procs, "--allow-plain", "--body-timeout", "1", "--min-body-rate",
                str(1 << 20))
    op = {"Authorization": f"Bearer {fed.operator}"}
    n = 500_000
    info = httpx.post(p.url + "/v1/rounds", headers=op, json={"mode": "plain", "options": {
        "vector_length": n}}).json()

    def steady() -> Iterator[bytes]:
        body = b"SAGP" + (1).to_bytes(4, "little") + np.zeros(n, "<f4").tobytes()
        for i in range(0, len(body), 256 * 1024):  # 2 MB at ~2.5 MB/s: 0.8 s, beyond the grace
            time.sleep(0.1)
            yield body[i:i + 256 * 1024]

    resp = httpx.post(p.url + f"/v1/rounds/{info['round_id']}/messages", content=steady(),
                      headers={"Authorization": f"Bearer {fed.tokens[0]}",
                               "Content-Type": "application/octet-stream"}, timeout=30)
    assert resp.status_code == 202, resp.text


# ---- 3. the store is its owner's alone ----------------------------------------------------------


def test_store_modes_are_tightened_and_kept(tmp_path: Path, procs: Callable[..., Proc]) -> None:
    fed = start_federation(tmp_path, 2)
    fed.server.stop()
    data = Path(fed.server.data_dir)
    assert _mode(data) == 0o700 and _mode(data / "secagg-server.sqlite3") == 0o600
    # loosened by hand, with a stray file from an older version
    os.chmod(data, 0o755)
    os.chmod(data / "secagg-server.sqlite3", 0o644)
    os.chmod(data / "results", 0o755)
    (data / "results" / "round-999.bin").write_bytes(b"old")
    os.chmod(data / "results" / "round-999.bin", 0o644)
    p = restart(fed, tmp_path, procs)
    umask = [ln for ln in Path(f"/proc/{p.proc.pid}/status").read_text().splitlines()
             if ln.startswith("Umask:")]
    assert umask == ["Umask:\t0077"], umask
    assert _mode(data) == 0o700
    for name in ("secagg-server.sqlite3", "secagg-server.sqlite3-wal", "secagg-server.sqlite3-shm"):
        assert _mode(data / name) == 0o600, name
    assert _mode(data / "results") == 0o700 and _mode(data / "blobs") == 0o700
    assert _mode(data / "results" / "round-999.bin") == 0o600
    # a round's stored result is 0600 too
    ups = updates(2, 100, seed=3)
    honest = HonestClients(fed, [0, 1], ups)
    info = fed.open_round(100)
    honest.join()
    assert _mode(data / "results" / f"round-{info['round_id']}.bin") == 0o600


def test_stored_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = Store(tmp_path / "data")
        try:
            name = store.write_blob(1, 0, b"x" * 100)
            store.write_result(1, b"result")
        finally:
            store.close()
    finally:
        os.umask(old)
    root = tmp_path / "data"
    assert _mode(root) == 0o700
    assert _mode(root / "blobs" / name) == 0o600 and _mode(root / "blobs" / "r1") == 0o700
    assert _mode(root / "results" / "round-1.bin") == 0o600
    assert _mode(root / "secagg-server.sqlite3") == 0o600


@pytest.mark.parametrize(("mode", "who"), [(0o770, "group"), (0o703, "world"),
                                           (0o777, "group and the world"),
                                           (0o1777, "group and the world")],
                         ids=["0770", "0703", "0777", "1777"])
def test_writable_data_dir_is_refused(tmp_path: Path, procs: Callable[..., Proc], mode: int,
                                      who: str) -> None:
    data = tmp_path / "data"
    Store(data).close()
    os.chmod(data, mode)
    p = procs(tmp_path, data)
    assert p.wait_exit() == 2
    out = p.output()
    assert f"is writable by its {who} (mode {mode & 0o7777:04o})" in out, out
    assert f"chmod 700 '{data}'" in out and "Traceback" not in out, out
    # the offline commands refuse it the same way
    cmd = subprocess.run([sys.executable, "-m", "secagg_server", "inspect", "--data", str(data)],
                         capture_output=True, text=True, timeout=60)
    assert cmd.returncode == 2 and "writable by its" in cmd.stderr and "Traceback" not in cmd.stderr
    assert _mode(data) == mode & 0o7777  # refused, not "fixed": someone may have tampered


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_data_dir_of_another_user_is_refused(tmp_path: Path, procs: Callable[..., Proc]) -> None:
    data = tmp_path / "data"
    Store(data).close()
    os.chown(data, 65534, 65534)
    p = procs(tmp_path, data)
    assert p.wait_exit() == 2
    out = p.output()
    assert "belongs to uid 65534, not to this user (uid 0)" in out and "chown" in out, out


def test_data_dir_of_another_user_is_refused_in_process(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(tmp_path / "data").st_uid + 1)
    with pytest.raises(DataDirError, match="belongs to uid .* not to this user"):
        Store(tmp_path / "data")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataDirError, match="not a directory"):
        Store(tmp_path / "file")


# ---- 4. operator options of the wrong JSON type -------------------------------------------------

NAN, INF = float("nan"), float("inf")
BAD_OPTIONS: list[tuple[str, str, Any, str]] = [
    # (mode, option, value, what the message must say the option takes)
    ("masking", "vector_length", 1.5, "an integer"),
    ("masking", "vector_length", 10.0, "an integer"),
    ("masking", "vector_length", True, "an integer"),
    ("masking", "vector_length", "10", "an integer"),
    ("masking", "vector_length", [10], "an integer"),
    ("masking", "vector_length", None, "an integer"),
    ("masking", "vector_length", 10**30, "an integer in [1, "),
    ("masking", "value_bits", 16.5, "an integer"),
    ("masking", "value_bits", False, "an integer"),
    ("masking", "max_weight", 1.5, "an integer"),
    ("masking", "max_weight", True, "an integer"),
    ("masking", "max_weight", INF, "an integer"),
    ("masking", "noise_headroom", 1.5, "an integer"),
    ("masking", "noise_headroom", {"a": 1}, "an integer"),
    ("masking", "neighbours", 2.0, "an integer"),
    ("masking", "threshold", "3", "an integer"),
    ("masking", "clip", True, "a finite number"),
    ("masking", "clip", NAN, "a finite number"),
    ("masking", "clip", INF, "a finite number"),
    ("masking", "clip", "1.0", "a finite number"),
    ("masking", "dropout_rate", True, "a number in [0, 1)"),
    ("masking", "dropout_rate", NAN, "a number in [0, 1)"),
    ("masking", "corrupt_rate", [0.1], "a number in [0, 0.5)"),
    ("masking", "full_graph", 1, "true or false"),
    ("masking", "full_graph", "yes", "true or false"),
    ("masking", "active", "false", "true or false"),
    ("ckks", "vector_length", 1.5, "an integer"),
    ("ckks", "vector_length", True, "an integer"),
    ("ckks", "vector_length", "10", "an integer"),
    ("ckks", "vector_length", NAN, "an integer"),
    ("ckks", "min_clients", 2.0, "an integer"),
    ("ckks", "min_clients", [2], "an integer"),
    ("ckks", "dealer", True, "an integer"),
    ("ckks", "dealer", None, "an integer"),
    ("ckks", "value_bound", True, "a finite number"),
    ("ckks", "value_bound", NAN, "a finite number"),
    ("ckks", "weight_bound", -INF, "a finite number"),
    ("ckks", "weight_bound", "2", "a finite number"),
    ("ckks", "preset", 3, "one of"),
    ("ckks", "preset", ["compact"], "one of"),
]


def test_options_of_the_wrong_type_get_400_naming_them(fed: Federation) -> None:
    server = fed.server
    try:
        op = httpx.Client(base_url=server.url, timeout=30,
                          headers={"Authorization": f"Bearer {fed.operator}",
                                   "Content-Type": "application/json"})
        for mode, name, value, takes in BAD_OPTIONS:
            options = {"vector_length": 10, name: value}
            # allow_nan: Python's json (like the server's) reads NaN and Infinity
            body = json.dumps({"mode": mode, "options": options}, allow_nan=True)
            resp = op.post("/v1/rounds", content=body)
            err = expect_error(resp, 400, "invalid_options")
            assert f"{mode} option '{name}' must be {takes}" in err["detail"], (mode, name, err)
            assert "found" in err["detail"], err
        for bad in ("true", "NaN", "Infinity", '"60"', "0"):
            resp = op.post("/v1/rounds", content='{"mode": "masking", "stage_timeout_s": ' + bad
                           + ', "options": {"vector_length": 3}}')
            assert "stage_timeout_s" in expect_error(resp, 400, "invalid_request")["detail"]
        expect_error(op.post("/v1/rounds", content='{"mode": 1, "options": {}}'), 400,
                     "invalid_request")
        # nothing was opened (not even "open" and stuck): the next round is the first
        with fed.as_client(0) as c:
            assert c.get("/v1/rounds/next", params={"wait": 0}).status_code == 204
        assert fed.open_round(10)["index"] == 0
        op.close()
    finally:
        server.stop()
    out = server.log_path.read_text()
    assert "Traceback" not in out and "unexpected" not in out, out


# ---- 5. errors are logged by type, never with request data --------------------------------------

_BUGGY_MODE = """
import sys
from secagg_server.modes import ModeSpec, register_mode

def make_config(num_clients, index, options, *more):
    if "explode" in options:
        raise RuntimeError(f"cannot use options {options!r}")
    return {"num_clients": num_clients}

class BuggyRound:
    stage, done = "upload", False
    expected = frozenset({0, 1})
    def __init__(self, config, participants, *more):
        pass
    def max_message_bytes(self):
        return 10_000
    def claimed_sender(self, body):
        return None
    def receive(self, client_id, body):
        raise ValueError(f"cannot parse {body!r}")
    def advance(self):
        return {}
    def result(self):
        return {}, b""

register_mode(ModeSpec("buggy", make_config, BuggyRound))
from secagg_server.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_request_data_never_reaches_the_log(tmp_path: Path, procs: Callable[..., Proc]) -> None:
    """A mode plugin that quotes what it was given in its exceptions: the server answers 500 and
    logs the type and the place, not the message; no traceback; refusals log nothing of it."""
    fed = start_federation(tmp_path, 2)
    p = restart(fed, tmp_path, procs, script=_BUGGY_MODE)
    op = httpx.Client(base_url=p.url, timeout=30,
                      headers={"Authorization": f"Bearer {fed.operator}"})
    client = httpx.Client(base_url=p.url, timeout=30, headers={
        "Authorization": f"Bearer {fed.tokens[0]}",
        "Content-Type": "application/octet-stream"})
    with op, client:
        resp = op.post("/v1/rounds", json={"mode": "buggy", "options": {"explode": MARKER}})
        err = expect_error(resp, 500, "internal_error")
        assert MARKER not in resp.text
        info = op.post("/v1/rounds", json={"mode": "buggy", "options": {},
                                           "stage_timeout_s": 600}).json()
        resp = client.post(f"/v1/rounds/{info['round_id']}/messages",
                           content=f"header {MARKER} trailer".encode())
        err = expect_error(resp, 500, "internal_error")
        assert MARKER not in resp.text, err
        # refusals that quote the request in their answer keep it out of the log too
        resp = op.post("/v1/rounds", json={"mode": "masking", "options": {
            "vector_length": 10, "clip": MARKER}})
        assert MARKER in expect_error(resp, 400, "invalid_options")["detail"]
        expect_error(op.post("/v1/rounds", json={"mode": MARKER}), 400, "mode_unavailable")
        expect_error(op.post("/v1/rounds", content=b"{" + MARKER.encode()), 400, "invalid_json")
        assert client.get("/healthz").status_code == 200  # still up
    p.stop()
    out = p.output()
    assert MARKER not in out, out
    assert "Traceback" not in out, out
    assert "unexpected RuntimeError at" in out and "in make_config on POST /v1/rounds;" in out, out
    assert "unexpected ValueError at" in out, out
    assert "in receive on POST /v1/rounds/{round_id}/messages" in out, out


def test_safe_formatter_withholds_exception_messages() -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    handler.setFormatter(SafeFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("secagg.test.safe")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError(f"body was {MARKER}")
        except ValueError:
            logger.exception("deadline handling failed")
        logger.error("with stack", stack_info=True)
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert MARKER not in text and "Traceback" not in text, text
    assert "ValueError at" in text and "test_hardening.py" in text, text
