"""The protocol sessions read no clock: timings and deadlines belong to the drivers.

Every module of ``secagg/ckks`` and ``secagg/masking`` (the sans-IO sessions and what they are
built from) is parsed, never imported, and every way it could read a clock is a violation naming
``file:line``: importing ``time`` or ``datetime`` (at module level or inside a function, plainly,
under another name, or one of their functions), calling a clock function through any name
(``perf_counter``, ``monotonic``, ``now`` ...), or importing ``time`` by a literal name
(``importlib.import_module("time")``, ``__import__("time")``). Only the drivers in
:data:`DRIVERS` may: they time the sessions (the CKKS simulator through
:class:`secagg.ckks.simulate.PhaseTimer`). The rule is checked on planted snippets too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("secagg/ckks", "secagg/masking")
#: the in-memory transports: they drive the sessions and time them
DRIVERS = frozenset({"secagg/ckks/simulate.py", "secagg/masking/simulate.py"})
CLOCK_MODULES = frozenset({"time", "datetime"})
CLOCK_FUNCTIONS = frozenset({
    "perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time_ns", "process_time",
    "process_time_ns", "thread_time", "thread_time_ns", "clock_gettime", "clock_gettime_ns",
    "now", "utcnow", "today", "localtime", "gmtime",
})
_IMPORTERS = frozenset({"import_module", "__import__"})


def clock_reads(source: str, path: str = "<snippet>") -> list[str]:
    """``path:line what`` for every clock read in ``source``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{path}:{node.lineno} import {a.name}" for a in node.names
                      if a.name.split(".")[0] in CLOCK_MODULES]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] in CLOCK_MODULES:
                found.append(f"{path}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else \
                func.id if isinstance(func, ast.Name) else None
            if name in CLOCK_FUNCTIONS:
                found.append(f"{path}:{node.lineno} calls {name}()")
            elif isinstance(func, ast.Attribute) and func.attr == "time" and \
                    isinstance(func.value, ast.Name) and func.value.id == "time":
                found.append(f"{path}:{node.lineno} calls time.time()")
            elif name in _IMPORTERS and node.args and isinstance(node.args[0], ast.Constant) \
                    and str(node.args[0].value).split(".")[0] in CLOCK_MODULES:
                found.append(f"{path}:{node.lineno} imports {node.args[0].value} by name")
    return found


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_no_session_module_reads_a_clock() -> None:
    modules = [p for p in _modules() if p.relative_to(ROOT).as_posix() not in DRIVERS]
    assert any(p.name == "client.py" for p in modules) and any(p.name == "server.py" for p in modules)
    found = [hit for p in modules
             for hit in clock_reads(p.read_text(), p.relative_to(ROOT).as_posix())]
    assert not found, "sessions must not read clocks (time them in the driver):\n" + "\n".join(found)


def test_the_drivers_are_where_the_clocks_are() -> None:
    """The exemption is not dead: each driver exists and times the sessions."""
    for driver in DRIVERS:
        assert clock_reads((ROOT / driver).read_text(), driver), driver


@pytest.mark.parametrize("planted", [
    "import time\n",
    "def f():\n    import time as t\n    return t\n",
    "from time import perf_counter\n",
    "from datetime import datetime\n",
    "import datetime\n",
    "def f(clock):\n    return clock.monotonic()\n",
    "def f(self):\n    return self.clock.perf_counter_ns()\n",
    "def f(time):\n    return time.time()\n",
    "def f(dt):\n    return dt.datetime.now()\n",
    "import importlib\nclock = importlib.import_module('time')\n",
    "clock = __import__('time')\n",
])
def test_a_planted_clock_read_is_found(planted: str) -> None:
    assert clock_reads(planted), planted


def test_a_session_with_a_planted_clock_fails_the_check() -> None:
    """The real client session with one clock read planted into it is caught, at its line."""
    path = ROOT / "secagg/ckks/client.py"
    source = path.read_text()
    assert not clock_reads(source)
    planted = source.replace("    def start(self) -> bytes:\n",
                             "    def start(self) -> bytes:\n        import time\n"
                             "        self.t0 = time.perf_counter()\n", 1)
    assert planted != source
    hits = clock_reads(planted, "secagg/ckks/client.py")
    line = planted.splitlines().index("        import time") + 1
    assert set(hits) == {f"secagg/ckks/client.py:{line} import time",
                         f"secagg/ckks/client.py:{line + 1} calls perf_counter()"}


@pytest.mark.parametrize("clean", [
    "deadline_s = 3.0\n",
    "def f(self):\n    return self.timeout\n",
    "from secagg.errors import ProtocolAbort\n",
    "def f(x):\n    return x.times()\n",
])
def test_names_that_only_look_like_clocks_pass(clean: str) -> None:
    assert clock_reads(clean) == []
