"""What the wheel holds, and that it works where a user's own ``server.py`` and ``clients.py`` sit.

The folders ``clients/`` and ``server/`` are installed as ``secagg_clients`` and ``secagg_server``
(pyproject.toml, ``[tool.setuptools.package-dir]``); the enterprise datasets are package data of
``secagg_clients``; ``benchmarks/`` and ``examples/`` are never installed, so ``secagg bench``
from a wheel says in one line that it needs a source checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
SHIPPED = {"secagg": "secagg", "secagg_clients": "clients", "secagg_server": "server"}


def test_the_package_list_is_the_tree() -> None:
    """``packages`` is written by hand (find cannot rename folders): it must list every package
    of the three shipped folders, under its installed name, and nothing else."""
    on_disk = set()
    for name, folder in SHIPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((name, *rel)))
    assert set(SETUPTOOLS["packages"]) == on_disk
    assert SETUPTOOLS["package-dir"] == {"secagg_clients": "clients", "secagg_server": "server"}


def test_scripts_and_commands_point_where_they_should() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts == {"secagg": "secagg.cli:main", "secagg-server": "secagg_server.cli:main",
                       "secagg-client": "secagg_clients.cli:main"}
    commands = PYPROJECT["project"]["entry-points"]["secagg.commands"]
    # applications only: the library's own commands are registered in secagg.cli.COMMANDS
    assert {v.split(".")[0] for v in commands.values()} == {
        "secagg_benchmarks", "secagg_examples", "secagg_clients"}  # audit: the enterprise's app
    for value in commands.values():
        folder = {"secagg_benchmarks": "benchmarks", "secagg_examples": "examples",
                  "secagg_clients": "clients"}[value.split(".")[0]]
        path = ROOT / folder / Path(*value.split(".")[1:])
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), value


def test_the_enterprise_datasets_are_package_data() -> None:
    from secagg_clients.data import ENTERPRISES, enterprise_path

    patterns = SETUPTOOLS["package-data"]["secagg_clients"]
    shipped = {p.name for pattern in patterns for p in (ROOT / "clients").glob(pattern)}
    assert shipped == {f"{name}.csv" for name in ENTERPRISES}
    for name in ENTERPRISES:
        assert enterprise_path(name).is_file()


# ---- the wheel, installed next to a user's own server.py and clients.py ------------------------

USER_MODULE = 'raise SystemExit("imported the user\'s own {name}.py instead of secagg\'s")\n'

#: The operator's part through the public API, run as `python federate.py` from the user's
#: directory (so that directory is sys.path[0], for this script and for the `python -m`
#: processes the operator API starts); the enterprises are `secagg-client --enterprise` processes.
USER_SCRIPT = '''
import json, subprocess, sys
from pathlib import Path

from secagg_clients.enrolment import enrol_locally
from secagg_server.operator import Operator, ServerProcess, create_federation

work, bindir = Path(sys.argv[1]), Path(sys.argv[2])
names = ["energy_utility", "city_operations"]
enrolled = enrol_locally(work / "ids", "wheel", names)
tokens = create_federation(work / "srv", "wheel", enrolled.roster_path)
server = ServerProcess(work / "srv").start()
procs = []


def next_event(proc, want):
    for line in proc.stdout:
        event = json.loads(line)  # --events jsonl: stdout is one event per line
        if event["event"] == want:
            return event
        if event["event"] in ("round_dropped", "round_refused", "error"):
            raise SystemExit(f"client {event}")
    raise SystemExit(f"a client exited with {proc.wait()} before {want!r}")


try:
    for i, name in enumerate(names):
        token = work / f"{name}.token"
        token.write_text(tokens["client_tokens"][i])
        procs.append(subprocess.Popen(
            [str(bindir / "secagg-client"), "--server", server.url, "--token-file", str(token),
             "--identity", str(enrolled.identity_paths[i]), "--roster", str(enrolled.roster_path),
             "--enterprise", name, "--encoder", "test_only_tiny", "--epochs", "1",
             "--rounds", "1", "--threads", "1", "--ledger", str(work / f"{name}.ledger.json"),
             "--events", "jsonl"], stdout=subprocess.PIPE, text=True))
    dims = {next_event(p, "ready")["dimension"] for p in procs}
    for p in procs:
        next_event(p, "trained")
    with Operator(server.url, tokens["operator_token"]) as op:
        info = op.open_round("masking", {"vector_length": dims.pop(), "clip": 2.0,
                                         "value_bits": 22}, stage_timeout_s=120)
        status = op.wait(info["round_id"], timeout=600)
    codes = [p.wait(timeout=120) for p in procs]
    print(json.dumps({"status": status["status"], "survivors": status["result"]["survivors"],
                      "codes": codes}))
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
    server.stop()
'''


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a clean copy of the shipped sources (the checkout is left untouched)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", *SHIPPED.values()):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                           "--no-build-isolation", "--disable-pip-version-check", "-q",
                           "-w", str(tmp / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300, env=_clean_env())
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"cannot build a wheel offline here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("secagg-*.whl")
    return wheel


def _clean_env() -> dict[str, str]:
    """A clean environment: earlier tests (Flower's Ray engine) leave PYTHONPATH and others set,
    which make pip see this checkout's secagg as installed and a fresh interpreter find it."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


@pytest.mark.slow
def test_the_wheel_runs_a_round_next_to_a_users_server_and_clients_modules(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True,
                   timeout=120)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies (torch, opacus, ...) come from this environment; secagg only from the wheel
    # (a path line in a .pth adds the directory, without running the .pth files in it, so this
    # environment's editable secagg and its source-checkout links stay out)
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                    "--no-index", "--disable-pip-version-check", "-q", str(wheel)], check=True,
                   timeout=300, env=_clean_env())
    user = tmp_path / "user"
    user.mkdir()
    for name in ("server", "clients"):
        (user / f"{name}.py").write_text(USER_MODULE.format(name=name))
    (user / "federate.py").write_text(USER_SCRIPT)
    bindir = env_dir / "bin"
    env = _clean_env()

    def run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(cmd), cwd=user, env=env, capture_output=True, text=True,
                              timeout=timeout)

    where = run(str(py), "-c", "import secagg, secagg_clients, secagg_server; "
                "print(secagg.__file__, secagg_clients.__file__, secagg_server.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(p.startswith(site) for p in where.stdout.split()), where.stdout

    proc = run(str(py), "federate.py", str(tmp_path / "work"), str(bindir), timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"status": "done", "survivors": [0, 1], "codes": [0, 0]}

    # the library reads the ledger the client kept; the applications are not in the wheel
    ledger = run(str(bindir / "secagg"), "privacy", "ledger",
                 str(tmp_path / "work" / "energy_utility.ledger.json"))
    assert ledger.returncode == 0 and "ledger of 'energy_utility'" in ledger.stdout, ledger.stderr
    bench = run(str(bindir / "secagg"), "bench", "masking", "--clients", "3")
    assert bench.returncode == 2 and bench.stdout == ""
    assert bench.stderr.count("\n") == 1 and "needs a source checkout" in bench.stderr
