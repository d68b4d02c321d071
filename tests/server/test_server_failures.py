"""``secagg-server`` failures that teach: every bad certificate, key, port, number or store is
one line on stderr naming it, exit 2, no traceback (real processes; real sockets for ports)."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from secagg.cli._checks import number
from secagg_clients.enrolment import enrol_locally
from secagg_server.cli import _parser
from secagg_server.operator import free_port
from tests.certs import self_signed, write_key


def secagg_server(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "secagg_server", *args], capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("secagg-server") and ": error: " in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def serve(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``secagg-server`` on a free port; refusals come back at once (a start would time out)."""
    return secagg_server("--port", str(free_port()), "--data", str(tmp / "data"), *args,
                         timeout=30)


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Path]:
    cert, key = self_signed(tmp_path)
    other = tmp_path / "other.key"
    write_key(other)
    encrypted = tmp_path / "encrypted.key"
    write_key(encrypted, passphrase=b"secret")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file\n")
    return {"cert": cert, "key": key, "other": other, "encrypted": encrypted,
            "garbage": garbage, "missing": tmp_path / "missing.pem", "dir": tmp_path}


CASES: list[tuple[str, Callable[[dict[str, Path]], list[Path]], tuple[str, ...]]] = [
    ("missing cert", lambda t: [t["missing"], t["key"]], ("--tls-cert", "does not exist")),
    ("missing key", lambda t: [t["cert"], t["missing"]], ("--tls-key", "does not exist")),
    ("unreadable key", lambda t: [t["cert"], t["dir"]], ("cannot read --tls-key",
                                                          "Is a directory")),
    ("swapped", lambda t: [t["key"], t["cert"]], ("are swapped", "pass --tls-cert")),
    ("cert as both", lambda t: [t["cert"], t["cert"]], ("holds no PEM private key",
                                                         "pass it as --tls-cert")),
    ("key as both", lambda t: [t["key"], t["key"]], ("--tls-cert", "holds no PEM certificate",
                                                      "pass it as --tls-key")),
    ("mismatched", lambda t: [t["cert"], t["other"]], ("is not the private key of the "
                                                        "certificate",)),
    ("encrypted key", lambda t: [t["cert"], t["encrypted"]], ("encrypted with a passphrase",)),
    ("garbage cert", lambda t: [t["garbage"], t["key"]], ("holds no PEM certificate",)),
]


@pytest.mark.parametrize(("case", "files", "needles"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_tls_certificate_or_key_is_one_line(tmp_path: Path, tls: dict[str, Path],
                                                  case: str, files: Any,
                                                  needles: tuple[str, ...]) -> None:
    cert, key = files(tls)
    one_line_error(serve(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)), *needles)


def test_a_cert_without_a_key_is_one_line(tmp_path: Path, tls: dict[str, Path]) -> None:
    one_line_error(serve(tmp_path, "--tls-cert", str(tls["cert"])), "go together")


@pytest.mark.parametrize("port", ["-1", "0", "70000", "http"])
def test_a_port_out_of_range_is_one_line(tmp_path: Path, port: str) -> None:
    one_line_error(secagg_server("--port", port, "--data", str(tmp_path / "data")),
                   "argument --port: must be an integer in [1, 65535]", f"found {port}")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_is_one_line(tmp_path: Path, taken_port: int) -> None:
    proc = secagg_server("--port", str(taken_port), "--data", str(tmp_path / "data"))
    one_line_error(proc, f"port {taken_port} on 127.0.0.1 is already in use", "--port")


def test_a_host_that_is_not_this_machine_is_one_line(tmp_path: Path) -> None:
    one_line_error(serve(tmp_path, "--host", "192.0.2.1", "--insecure-http"),
                   "'192.0.2.1' is not an address of this machine")


@pytest.mark.parametrize(("flag", "value", "rule"), [
    ("--header-timeout", "-1", "a number in (0, 3600] seconds"),
    ("--header-timeout", "nan", "a number in (0, 3600] seconds"),
    ("--body-timeout", "0", "a number in (0, 3600] seconds"),
    ("--min-body-rate", "0", "an integer in [1, 1073741824]"),
])
def test_a_nonsensical_number_is_one_line(tmp_path: Path, flag: str, value: str,
                                          rule: str) -> None:
    one_line_error(serve(tmp_path, flag, value), f"argument {flag}: must be {rule}",
                   f"found {value}")


@pytest.fixture
def corrupt(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "secagg-server.sqlite3").write_bytes(b"this is not SQLite\n" * 300)
    return data


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["inspect"], ["inspect", "--json"],
                                     ["federation", "list"]])
def test_a_corrupt_store_is_one_line(corrupt: Path, command: list[str]) -> None:
    if command[0] == "serve":
        command = ["serve", "--port", str(free_port())]
    proc = secagg_server(*command, "--data", str(corrupt), timeout=30)
    one_line_error(proc, f"the store {corrupt / 'secagg-server.sqlite3'} is not a readable "
                   "SQLite database", "file is not a database", "backup")


def test_a_corrupt_store_is_one_line_for_federation_create(corrupt: Path, tmp_path: Path) -> None:
    enrolled = enrol_locally(tmp_path / "ids", "city", ["a", "b"])
    proc = secagg_server("federation", "create", "--data", str(corrupt), "--name", "city",
                         "--roster", str(enrolled.roster_path))
    one_line_error(proc, "is not a readable SQLite database")


@pytest.mark.parametrize(("args", "needles"), [
    (["--name", ""], ("argument --name: must not be empty or blank",)),
    (["--name", "  "], ("argument --name: must not be empty or blank",)),
    (["--name", "city", "--clients", "0"], ("argument --clients: must be an integer >= 1",)),
    (["--name", "city", "--clients", "-2"], ("argument --clients: must be an integer >= 1",)),
])
def test_federation_create_refuses_blank_names_and_counts(tmp_path: Path, args: list[str],
                                                          needles: tuple[str, ...]) -> None:
    enrolled = enrol_locally(tmp_path / "ids", "city", ["a", "b"])
    proc = secagg_server("federation", "create", "--data", str(tmp_path / "data"),
                         "--roster", str(enrolled.roster_path), *args)
    one_line_error(proc, *needles)
    assert not (tmp_path / "data").exists()  # refused before the store was made


def _numeric(parser: argparse.ArgumentParser) -> Iterator[tuple[str, Any]]:
    for action in parser._actions:
        if isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield from ((f"{name} {flag}", a) for flag, a in _numeric(sub))
        elif (isinstance(action.default, int | float) and not isinstance(action.default, bool)) \
                or action.type in (int, float) or getattr(action.type, "__qualname__", "") \
                == number(int).__qualname__:
            yield "/".join(action.option_strings), action


def test_every_numeric_option_has_a_range() -> None:
    found = dict(_numeric(_parser()))
    assert {"serve --port", "serve --header-timeout", "serve --body-timeout",
            "serve --min-body-rate", "federation create --clients"} <= set(found)
    for flag, action in found.items():
        assert getattr(action.type, "__qualname__", "") == number(int).__qualname__, flag
