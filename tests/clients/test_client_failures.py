"""``secagg-client`` failures that teach: one line on stderr, which URL or file, what failed and
what to try; exit 2; no traceback. Real processes and real sockets wherever the failure is
about them (a port nobody listens on, TLS servers, plain-HTTP servers)."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secagg.cli._checks import number
from secagg_clients.cli import add_arguments, load_update
from secagg_clients.cli_tools import _enrol_parser
from secagg_clients.connection import ServerUnreachable
from secagg_clients.enrolment import LocalEnrolment, enrol_locally
from secagg_clients.runtime import RuntimeClient
from secagg_server.operator import Operator, ServerProcess, create_federation, free_port
from tests.certs import self_signed


def secagg_client(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "secagg_clients", *args], capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> str:
    """The one stderr line of a failed run, after checking the exit code and the needles."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("secagg-client") and ": error: " in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory) -> LocalEnrolment:
    return enrol_locally(tmp_path_factory.mktemp("ids"), "failures", ["alpha", "beta"])


@pytest.fixture(scope="module")
def creds(enrolled: LocalEnrolment, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    token = tmp_path_factory.mktemp("tok") / "token"
    token.write_text("sat_not_a_real_token")
    return ["--token-file", str(token), "--identity", str(enrolled.identity_paths[0]),
            "--roster", str(enrolled.roster_path)]


# ---- the server's URL -----------------------------------------------------------------------

def test_a_refused_connection_fails_in_seconds_with_the_url_and_what_to_try(creds: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    proc = secagg_client("--server", url, *creds, "--random")
    took = time.monotonic() - t0
    line = one_line_error(proc, url, "connection refused", "secagg-server is running")
    assert took < 5, f"took {took:.1f} s: {line}"


def test_a_host_that_does_not_resolve_is_named(creds: list[str]) -> None:
    t0 = time.monotonic()
    proc = secagg_client("--server", "https://no-such-host.invalid:8443", *creds, "--random")
    one_line_error(proc, "https://no-such-host.invalid:8443",
                   "cannot resolve the host name 'no-such-host.invalid'", "--server")
    assert time.monotonic() - t0 < 15


@pytest.mark.parametrize(("url", "needles"), [
    ("127.0.0.1:8443", ("has no scheme", "https://127.0.0.1:8443", "http://127.0.0.1:8443")),
    ("localhost:8443", ("has no scheme", "https://localhost:8443")),
    ("ftp://127.0.0.1:8443", ("scheme ftp://", "https://")),
    ("https://", ("names no host",)),
])
def test_a_url_that_cannot_work_is_refused_before_anything_is_sent(
        creds: list[str], url: str, needles: tuple[str, ...]) -> None:
    one_line_error(secagg_client("--server", url, *creds, "--random"), repr(url), *needles)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory,
            enrolled: LocalEnrolment) -> Iterator[dict[str, Any]]:
    """An HTTPS and a plain-HTTP secagg-server (each with the enrolled federation)."""
    root = tmp_path_factory.mktemp("servers")
    cert, key = self_signed(root)
    started: dict[str, Any] = {"cert": cert}
    try:
        for kind in ("https", "http"):
            tokens = create_federation(root / kind, "failures", enrolled.roster_path)
            server = ServerProcess(root / kind, **({"tls_cert": cert, "tls_key": key}
                                                    if kind == "https" else {})).start()
            started[kind] = server
            started[f"{kind}_tokens"] = tokens
        yield started
    finally:
        for kind in ("https", "http"):
            if kind in started:
                started[kind].stop()


def test_an_untrusted_certificate_says_to_pass_the_ca(creds: list[str],
                                                      servers: dict[str, Any]) -> None:
    url = servers["https"].url
    one_line_error(secagg_client("--server", url, *creds, "--random"), url,
                   "TLS certificate is not trusted", "self-signed certificate", "--ca-cert")


def test_http_against_an_https_server_says_use_https(creds: list[str],
                                                     servers: dict[str, Any]) -> None:
    https = servers["https"].url
    url = https.replace("https://", "http://")
    one_line_error(secagg_client("--server", url, *creds, "--random"), url,
                   "speaks HTTPS (TLS), not plain HTTP", f"use {https}")


def test_https_against_an_http_server_says_use_http(creds: list[str],
                                                    servers: dict[str, Any]) -> None:
    http_url = servers["http"].url
    url = http_url.replace("http://", "https://")
    one_line_error(secagg_client("--server", url, *creds, "--random"), url,
                   "speaks plain HTTP, not HTTPS", f"use {http_url}")


@pytest.mark.parametrize("content", [None, "garbage\n"])
def test_a_missing_or_garbage_ca_bundle_is_named(creds: list[str], servers: dict[str, Any],
                                                 tmp_path: Path, content: str | None) -> None:
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_text(content)
    proc = secagg_client("--server", servers["https"].url, "--ca-cert", str(ca), *creds,
                         "--random")
    one_line_error(proc, "CA bundle", str(ca), "--ca-cert")


def test_the_trusted_certificate_gets_through(creds: list[str], servers: dict[str, Any]) -> None:
    """The control: with --ca-cert the same client reaches the server (and its made-up token is
    refused, by the server, in one line)."""
    proc = secagg_client("--server", servers["https"].url, "--ca-cert", str(servers["cert"]),
                         *creds, "--random")
    one_line_error(proc, "server refused (401")


# ---- retries: only what can heal, and only once the server has answered ---------------------

class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers /v1/me; the first ``fail`` requests of each server get a 503."""

    fail = 0

    def do_GET(self) -> None:
        server: Any = self.server
        server.seen += 1
        if server.seen <= type(self).fail:
            self.send_response(503)
            self.end_headers()
            return
        body = json.dumps({"client_id": 0, "federation": "failures"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(port: int, fail: int = 0) -> http.server.HTTPServer:
    handler = type("Flaky", (_Flaky,), {"fail": fail})
    server: Any = http.server.HTTPServer(("127.0.0.1", port), handler)
    server.seen = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server  # type: ignore[no-any-return]


def test_5xx_and_a_restarting_server_are_retried_once_it_has_answered(
        enrolled: LocalEnrolment) -> None:
    port = free_port()
    server = _serve(port, fail=2)  # two 503s, then answers: retried even at startup
    with RuntimeClient(f"http://127.0.0.1:{port}", "tok", identity=enrolled.identity(0),
                       roster=enrolled.roster, retry_for=20, connect_grace=0.5) as rt:
        assert rt.whoami()["client_id"] == 0
        server.shutdown()
        server.server_close()
        # the server is gone (connection refused) longer than connect_grace: a client that has
        # talked to it keeps retrying (a restart mid-round) until it is back
        timer = threading.Timer(1.5, lambda: setattr(rt, "_restarted", _serve(port)))
        timer.start()
        t0 = time.monotonic()
        assert rt.whoami()["client_id"] == 0
        assert time.monotonic() - t0 >= 1.0
        timer.join()
        restarted: Any = rt._restarted  # type: ignore[attr-defined]
        restarted.shutdown()
        restarted.server_close()
        # gone for good: after retry_for, one line with the URL and what failed
        rt.retry_for = 1.0
        with pytest.raises(ServerUnreachable, match=r"connection refused.*retried for 0\.\d s"):
            rt.whoami()


# ---- files -----------------------------------------------------------------------------------

def _save(path: Path, value: Any) -> Path:
    np.save(path, value)
    return path


@pytest.mark.parametrize(("make", "needles"), [
    (lambda d: d / "missing.npy", ("does not exist", "numpy.save")),
    (lambda d: (d / "text.npy").write_text("not numpy") and d / "text.npy",
     ("is not a .npy file",)),
    (lambda d: d, ("cannot read", "Is a directory")),
    (lambda d: (np.savez(d / "two.npz", a=np.ones(3)), d / "two.npz")[1], (".npz archive",)),
    (lambda d: _save(d / "c.npy", np.ones(4, complex)), ("dtype complex128",)),
    (lambda d: _save(d / "s.npy", np.array(["a", "b"])), ("dtype <U1",)),
    (lambda d: _save(d / "o.npy", np.array([{}, 1], dtype=object)), ("Python objects",)),
    (lambda d: _save(d / "m.npy", np.ones((3, 4), np.float32)), ("shape (3, 4)", "ravel")),
    (lambda d: _save(d / "e.npy", np.ones(0, np.float32)), ("no values",)),
    (lambda d: _save(d / "z.npy", np.float32(1)), ("a scalar",)),
    (lambda d: _save(d / "n.npy", np.array([1.0, np.nan], np.float32)), ("NaN or infinite",)),
])
def test_a_bad_update_file_is_one_line_before_connecting(
        creds: list[str], tmp_path: Path, make: Any, needles: tuple[str, ...]) -> None:
    path = make(tmp_path)
    # the server URL points nowhere: the file is checked first
    proc = secagg_client("--server", f"http://127.0.0.1:{free_port()}", *creds, "--update",
                         str(path))
    one_line_error(proc, f"--update {path}", *needles)


def test_a_good_update_file_loads_as_float32(tmp_path: Path) -> None:
    vec = load_update(str(_save(tmp_path / "u.npy", np.arange(6, dtype=np.float64))))
    assert vec.dtype == np.float32 and vec.shape == (6,)
    assert load_update(str(_save(tmp_path / "r.npy", np.ones((1, 5))))).shape == (5,)


def test_an_update_of_the_wrong_length_names_both_lengths(
        enrolled: LocalEnrolment, servers: dict[str, Any], tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(servers["http_tokens"]["client_tokens"][0])
    update = _save(tmp_path / "u.npy", np.ones(7, np.float32))
    proc = subprocess.Popen(
        [sys.executable, "-m", "secagg_clients", "--server", servers["http"].url,
         "--token-file", str(token), "--identity", str(enrolled.identity_paths[0]),
         "--roster", str(enrolled.roster_path), "--update", str(update)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        with Operator(servers["http"].url, servers["http_tokens"]["operator_token"]) as op:
            info = op.open_round("masking", {"vector_length": 10}, stage_timeout_s=5)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                   f"--update {update} holds 7 values", f"round {info['index']} expects "
                   "vector_length 10")


@pytest.mark.parametrize(("content", "needles"), [(None, ("cannot read --token-file",)),
                                                  ("\n", ("is empty",))])
def test_a_missing_or_empty_token_file_is_named(enrolled: LocalEnrolment, tmp_path: Path,
                                                content: str | None,
                                                needles: tuple[str, ...]) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    proc = secagg_client("--server", "http://127.0.0.1:1", "--token-file", str(token),
                         "--identity", str(enrolled.identity_paths[0]), "--roster",
                         str(enrolled.roster_path), "--random")
    one_line_error(proc, str(token), *needles)


def test_an_output_in_a_missing_directory_is_refused_before_the_rounds(
        creds: list[str], tmp_path: Path) -> None:
    out = tmp_path / "no-such-dir" / "mean.npy"
    proc = secagg_client("--server", "http://127.0.0.1:1", *creds, "--random", "--out", str(out))
    one_line_error(proc, f"--out {out}", "does not exist")


@pytest.mark.parametrize(("which", "make", "needles"), [
    ("--identity", lambda d, e: d / "none.json", ("does not exist", "identity create")),
    ("--identity", lambda d, e: e.roster_path, ("accessible by group or others",)),
    ("--identity", lambda d, e: (d / "g.json").write_text("{oops") and d / "g.json",
     ("is not a secagg identity file",)),
    ("--roster", lambda d, e: d / "none.json", ("roster file", "does not exist")),
    ("--roster", lambda d, e: (d / "r.json").write_text("{oops") and d / "r.json",
     ("is not readable JSON",)),
    ("--roster", lambda d, e: e.identity_paths[0], ("not a secagg roster",)),
])
def test_a_missing_or_malformed_identity_or_roster_is_one_line(
        enrolled: LocalEnrolment, tmp_path: Path, which: str, make: Any,
        needles: tuple[str, ...]) -> None:
    path = make(tmp_path, enrolled)
    if path.exists() and path.parent == tmp_path:
        path.chmod(0o600)
    files = {"--identity": str(enrolled.identity_paths[0]), "--roster": str(enrolled.roster_path)}
    files[which] = str(path)
    proc = secagg_client("--server", "http://127.0.0.1:1", "--token", "t", "--random",
                         *[x for kv in files.items() for x in kv])
    one_line_error(proc, str(path), *needles)


# ---- numbers and names -----------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "value", "rule"), [
    ("--rounds", "0", "an integer in [1, 1000000]"),
    ("--weight", "0", "an integer in [1, 2147483647]"),
    ("--weight", "-3", "an integer in [1, 2147483647]"),
    ("--weight", "1.5", "an integer"),
    ("--epsilon", "0", "a number > 0"),
    ("--epsilon", "nan", "a number > 0"),
    ("--epochs", "0", "an integer in [1, 10000]"),
    ("--threads", "0", "an integer in [1, 1024]"),
    ("--scale", "-0.1", "a number >= 0"),
    ("--seed", "-1", "an integer in [0, "),
    ("--poll-wait", "-1", "a number in (0, 30] seconds"),
    ("--poll-wait", "0", "a number in (0, 30] seconds"),
])
def test_a_nonsensical_number_is_refused_naming_the_flag(
        creds: list[str], flag: str, value: str, rule: str) -> None:
    proc = secagg_client("--server", "http://127.0.0.1:1", *creds, "--random", flag, value)
    one_line_error(proc, f"argument {flag}: must be {rule}", f"found {value}")


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_or_blank_name_is_refused(tmp_path: Path, name: str) -> None:
    proc = secagg_client("roster", "create", "--federation", name, "--out",
                         str(tmp_path / "r.json"), str(tmp_path / "a.pub.json"))
    one_line_error(proc, "argument --federation: must not be empty or blank")
    proc = secagg_client("identity", "create", "--out", str(tmp_path / "id.json"), "--name", name)
    one_line_error(proc, "argument --name: must not be empty or blank")


def _numeric_actions(parser: Any) -> Iterator[tuple[str, Any]]:
    for action in parser._actions:
        if action.choices and isinstance(action.choices, dict):  # subcommands
            for sub in action.choices.values():
                yield from _numeric_actions(sub)
        elif (isinstance(action.default, int | float) and not isinstance(action.default, bool)) \
                or action.type in (int, float) or getattr(action.type, "__qualname__", "") \
                == number(int).__qualname__:
            yield "/".join(action.option_strings), action


def test_every_numeric_option_has_a_range() -> None:
    """Each numeric option of secagg-client states its range with the shared helper."""
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    found = dict(_numeric_actions(parser)) | dict(_numeric_actions(_enrol_parser()))
    assert {"--rounds", "--weight", "--epsilon", "--epochs", "--threads", "--scale", "--seed",
            "--poll-wait"} <= set(found)
    for flag, action in found.items():
        assert getattr(action.type, "__qualname__", "") == number(int).__qualname__, flag
