"""The layers you can see in the tree, and the arrows between them (DESIGN.md, "Layout").

``secagg/`` is the library; ``clients/`` (installed as ``secagg_clients``) and ``server/``
(installed as ``secagg_server``) are the two parties built on it; ``benchmarks/`` and
``examples/`` (imported as ``secagg_benchmarks`` and ``secagg_examples`` in a source checkout:
opacus installs top-level ``benchmarks`` and ``examples`` packages), ``tests/`` and ``scripts/``
are applications that are never installed. Dependencies point inwards only:
``clients -> secagg <- server``; applications may import anything.

Every ``.py`` file is parsed (never imported) and every way it can reach another module is
checked against :data:`RULES`: ``import`` and ``from ... import`` statements at module level and
inside functions (relative ones resolved to the installed name), ``importlib.import_module`` /
``__import__`` / ``runpy.run_module`` with a literal name, modules launched with ``-m`` in a
subprocess command, module names written as strings (lazy-import tables, command registries), and
Python source embedded in strings (``python -c`` scripts). Each violation names ``file:line``,
the arrow and the rule. :func:`check_source` takes a snippet and the path it pretends to live at,
so the rules are tested on planted bad imports below.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: repository folder -> the top-level name its modules are imported under (shipped in the wheel)
INSTALLED = {"secagg": "secagg", "clients": "secagg_clients", "server": "secagg_server"}
#: application folder -> its import name; applications are never installed
APPLICATIONS = {"benchmarks": "secagg_benchmarks", "examples": "secagg_examples",
                "tests": "tests", "scripts": "scripts"}
IMPORT_NAMES = {**INSTALLED, **APPLICATIONS}
FOLDERS = tuple(IMPORT_NAMES)
#: the training stack: the server never imports it, the library only inside functions
TRAINING = ("torch", "peft", "opacus", "transformers")
#: folder names that are not import names: they do not exist once installed, and they collide
#: with users' own modules (clients.py, server.py) or other packages (opacus ships benchmarks/
#: and examples/ as top-level packages)
FOLDER_NAMES = tuple(folder for folder, name in IMPORT_NAMES.items() if folder != name)

LIBRARY_ONLY = "the library imports neither side nor any application (clients -> secagg <- server)"
PARTIES_APART = "clients and server never import each other: they meet only through secagg"
SHIPPED_NO_APPS = ("shipped code (secagg, secagg_clients, secagg_server) never imports an "
                   "application (secagg_benchmarks, secagg_examples, tests, scripts): they are "
                   "not installed")
SERVER_NO_TRAINING = "the server never imports torch, peft, opacus or transformers"
LIBRARY_NO_TRAINING_AT_LOAD = ("the library never imports torch, peft, opacus or transformers "
                               "at module load (only inside the function that needs it)")
INSTALLED_NAMES = ("import by the import names secagg_clients, secagg_server, secagg_benchmarks, "
                   "secagg_examples: the folder names clients, server, benchmarks, examples are "
                   "not (they do not exist once installed, or belong to other packages)")
VERIFIABLE = "shipped code launches only literal module names with -m (so this test can check them)"

RULES = (LIBRARY_ONLY, PARTIES_APART, SHIPPED_NO_APPS, SERVER_NO_TRAINING,
         LIBRARY_NO_TRAINING_AT_LOAD, INSTALLED_NAMES, VERIFIABLE)

#: folder -> installed top-level names it must not reach
_FORBIDDEN = {
    "secagg": {"secagg_clients": LIBRARY_ONLY, "secagg_server": LIBRARY_ONLY},
    "clients": {"secagg_server": PARTIES_APART},
    "server": {"secagg_clients": PARTIES_APART, **dict.fromkeys(TRAINING, SERVER_NO_TRAINING)},
}
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_IMPORTERS = {"import_module", "__import__", "run_module"}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    target: str
    how: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.how} {self.target!r}: {self.rule}"


@dataclass(frozen=True)
class _Reach:
    """One way a module reaches another: the name, where, how, and whether at module load."""

    target: str
    line: int
    how: str
    at_load: bool


def module_name(path: str) -> str:
    """The name a repository file is imported under (``clients/runtime.py`` ->
    ``secagg_clients.runtime``; ``tests/x/__init__.py`` -> ``tests.x``)."""
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    parts[0] = IMPORT_NAMES.get(parts[0], parts[0])
    return ".".join(parts)


def _resolve(relative: str, level: int, module: str, is_package: bool) -> str:
    """``from .x import y`` in ``module`` -> the absolute name (``""`` if it climbs out)."""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level - 1 > len(base) - 1:
        return ""
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, relative] if relative else base)


class _Walker(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.reaches: list[_Reach] = []
        self.unverifiable: list[int] = []
        self.embedded: list[tuple[int, str]] = []
        self._depth = 0  # > 0 inside a function: not run at module load
        self._seen: set[int] = set()  # string constants already read as module names

    def _add(self, target: str, line: int, how: str) -> None:
        self.reaches.append(_Reach(target, line, how, at_load=self._depth == 0))

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno, "imports")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            base = _resolve(base, node.level, self.module, self.is_package)
            if not base:
                self._add("." * node.level + (node.module or ""), node.lineno,
                          "imports (relative, beyond the top-level package)")
                return
        if base == "__future__":
            return
        self._add(base, node.lineno, "imports")  # `from pkg import mod`: same top level as pkg

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _IMPORTERS and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            target = node.args[0].value
            if target.startswith("."):
                level = len(target) - len(target.lstrip("."))
                target = _resolve(target.lstrip("."), level, self.module, self.is_package)
            self._add(target, node.lineno, f"{name}()")
            self._seen.add(id(node.args[0]))
        self.generic_visit(node)

    def _sequence(self, node: ast.List | ast.Tuple) -> None:
        elts = node.elts
        for i, elt in enumerate(elts[:-1]):
            if isinstance(elt, ast.Constant) and elt.value == "-m":
                nxt = elts[i + 1]
                if isinstance(nxt, ast.Constant) and isinstance(nxt.value, str):
                    self._add(nxt.value, nxt.lineno, "launches -m")
                    self._seen.add(id(nxt))
                else:
                    self.unverifiable.append(nxt.lineno)
        self.generic_visit(node)

    visit_List = visit_Tuple = _sequence

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if not isinstance(value, str) or id(node) in self._seen:
            return
        if _MODULE_NAME.fullmatch(value) and ("." in value or value in IMPORT_NAMES.values()):
            self._add(value, node.lineno, "names in a string")
        elif "import " in value:
            self.embedded.append((node.lineno, value))


def _reaches(source: str, module: str, is_package: bool) -> tuple[_Walker, list[_Reach]]:
    walker = _Walker(module, is_package)
    walker.visit(ast.parse(source))
    reaches = list(walker.reaches)
    for line, code in walker.embedded:  # `python -c` scripts and other Python in strings
        try:
            tree = ast.parse(textwrap.dedent(code))
        except SyntaxError:
            continue  # prose, not code
        inner = _Walker(module, is_package)
        inner.visit(tree)
        reaches += [_Reach(r.target, line + r.line - 1, f"{r.how} (in embedded code)",
                           r.at_load) for r in inner.reaches if r.how != "names in a string"]
    return walker, reaches


def check_source(source: str, path: str) -> list[Violation]:
    """Every arrow in ``source`` (pretending to be the repository file ``path``) that breaks a
    rule of :data:`RULES`."""
    folder = Path(path).parts[0]
    module = module_name(path)
    walker, reaches = _reaches(source, module, Path(path).name == "__init__.py")
    out: list[Violation] = []
    for r in reaches:
        if r.how == "names in a string" and folder not in INSTALLED:
            continue  # applications may name anything in strings (messages, docs)
        named = r.target.split(".")[0]
        top = IMPORT_NAMES.get(named, named)  # what a folder name stands for, for the arrows
        rule = None
        if folder in INSTALLED and top in APPLICATIONS.values():
            rule = SHIPPED_NO_APPS
        elif top in _FORBIDDEN.get(folder, {}):
            rule = _FORBIDDEN[folder][top]
        elif folder == "secagg" and top in TRAINING and r.at_load and r.how == "imports":
            rule = LIBRARY_NO_TRAINING_AT_LOAD
        elif named in FOLDER_NAMES or r.target.startswith("."):
            rule = INSTALLED_NAMES
        if rule is not None:
            out.append(Violation(path, r.line, r.target, r.how, rule))
    if folder in INSTALLED:
        out += [Violation(path, line, "<not a literal>", "launches -m", VERIFIABLE)
                for line in walker.unverifiable]
    return out


def repository_files() -> list[Path]:
    """Every ``.py`` file of the repository's folders, but this one: its planted violations
    (below, in strings) are the point, and it imports only the standard library and pytest."""
    files = []
    for folder in FOLDERS:
        files += sorted(p for p in (ROOT / folder).rglob("*.py")
                        if "__pycache__" not in p.parts and p != Path(__file__).resolve())
    return files


def test_every_module_respects_the_layers() -> None:
    files = repository_files()
    assert len(files) > 150, "the walk found too few files"
    violations: list[Violation] = []
    arrows = 0
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        source = path.read_text()
        violations += check_source(source, rel)
        arrows += len(_reaches(source, module_name(rel), path.name == "__init__.py")[1])
    assert arrows > 1000, "the walk saw too few imports"
    assert not violations, "imports against the layering:\n" + "\n".join(map(str, violations))


BAD = [
    # (pretend path, snippet, rule, the target named in the violation)
    ("secagg/dp/x.py", "import secagg_clients.trainer", LIBRARY_ONLY, "secagg_clients.trainer"),
    ("secagg/cli/x.py", "def run():\n    from secagg_clients.ledger import PrivacyLedger\n",
     LIBRARY_ONLY, "secagg_clients.ledger"),
    ("secagg/x.py", "import subprocess, sys\n"
     "subprocess.run([sys.executable, '-m', 'secagg_server', 'inspect'])", LIBRARY_ONLY,
     "secagg_server"),
    ("secagg/x.py", "import importlib\nimportlib.import_module('secagg_server.operator')",
     LIBRARY_ONLY, "secagg_server.operator"),
    ("secagg/x.py", "WHERE = {'PrivacyLedger': 'secagg_clients.ledger'}", LIBRARY_ONLY,
     "secagg_clients.ledger"),
    ("clients/x.py", "from secagg_server.operator import Operator", PARTIES_APART,
     "secagg_server.operator"),
    ("server/x.py", "def f():\n    import secagg_clients\n", PARTIES_APART, "secagg_clients"),
    ("secagg/cli/x.py", "def run():\n    from secagg_benchmarks.masking import run_bench\n",
     SHIPPED_NO_APPS, "secagg_benchmarks.masking"),
    ("secagg/x.py", "from benchmarks.masking import run_masking_bench", SHIPPED_NO_APPS,
     "benchmarks.masking"),  # the folder name: the arrow is named first
    ("clients/x.py", "from secagg_examples.smart_city import demo", SHIPPED_NO_APPS,
     "secagg_examples.smart_city"),
    ("server/x.py", "import tests.server.conftest", SHIPPED_NO_APPS, "tests.server.conftest"),
    ("server/x.py", "def f():\n    import torch\n", SERVER_NO_TRAINING, "torch"),
    ("server/x.py", "from peft import LoraConfig", SERVER_NO_TRAINING, "peft"),
    ("secagg/x.py", "import torch", LIBRARY_NO_TRAINING_AT_LOAD, "torch"),
    ("tests/x.py", "from clients.data import Record", INSTALLED_NAMES, "clients.data"),
    ("examples/x.py", "import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'server'])",
     INSTALLED_NAMES, "server"),
    ("tests/x.py", "from benchmarks.dp import DPBenchConfig", INSTALLED_NAMES, "benchmarks.dp"),
    ("tests/x.py", "SCRIPT = '''\nimport sys\nfrom server.cli import main\nmain()\n'''",
     INSTALLED_NAMES, "server.cli"),
    ("server/x.py", "from ...elsewhere import thing", INSTALLED_NAMES, "...elsewhere"),
    ("secagg/x.py", "import subprocess, sys\n"
     "def go(m):\n    subprocess.run([sys.executable, '-m', m])\n", VERIFIABLE, "<not a literal>"),
]


@pytest.mark.parametrize(("path", "snippet", "rule", "target"), BAD,
                         ids=[f"{p}:{t}" for p, _, _, t in BAD])
def test_a_planted_bad_import_is_caught(path: str, snippet: str, rule: str, target: str) -> None:
    violations = check_source(snippet, path)
    assert [(v.rule, v.target) for v in violations] == [(rule, target)], violations
    text = str(violations[0])
    assert text.startswith(f"{path}:{violations[0].line}: ") and rule in text


def test_every_rule_has_a_planted_violation() -> None:
    assert {rule for _, _, rule, _ in BAD} == set(RULES)


GOOD = [
    ("clients/runtime.py", "from .federated import FederatedEnterprise\nfrom secagg import masking"),
    ("clients/__init__.py", "import importlib\nimportlib.import_module('.data', __name__)"),
    ("server/operator.py", "import subprocess, sys\n"
     "subprocess.run([sys.executable, '-m', 'secagg_server', 'serve'])"),
    ("secagg/dp/accounting.py", "def f():\n    from opacus.accountants import RDPAccountant\n"),
    ("secagg/cli/__init__.py", "COMMANDS = {'simulate': {'masking': 'secagg.cli.simulate_masking'}}"),
    ("benchmarks/dp.py", "from secagg_clients.trainer import train_private\nimport torch"),
    ("benchmarks/commands/masking.py", "def run():\n    from ..masking import run_masking_bench\n"),
    ("benchmarks/e2e.py", "from secagg_server.operator import ServerProcess\n"
     "from secagg_clients.enrolment import enrol_locally"),
    ("examples/smart_city/demo.py", "import sys\ncmd = [sys.executable, '-m', 'secagg_clients']"),
    ("tests/server/conftest.py", "from secagg_server.store import Store\nimport tests.server.manual"),
    ("tests/dp/test_bench_dp.py", "from secagg_benchmarks.dp import DPBenchConfig"),
]


@pytest.mark.parametrize(("path", "snippet"), GOOD, ids=[p for p, _ in GOOD])
def test_allowed_arrows_pass(path: str, snippet: str) -> None:
    assert check_source(snippet, path) == []


def test_relative_imports_resolve_to_import_names() -> None:
    assert module_name("clients/runtime.py") == "secagg_clients.runtime"
    assert module_name("server/__init__.py") == "secagg_server"
    assert module_name("benchmarks/commands/dp.py") == "secagg_benchmarks.commands.dp"
    _, reaches = _reaches("from .store import Store\nfrom . import app\n",
                               "secagg_server", True)
    assert {r.target for r in reaches} == {"secagg_server.store", "secagg_server"}
    _, reaches = _reaches("from .data import Record", "secagg_clients.model", False)
    assert "secagg_clients.data" in {r.target for r in reaches}


def test_the_server_loads_no_training_stack() -> None:
    """The static rule above covers the server's own imports; this covers what they pull in."""
    code = ("import sys, secagg_server, secagg_server.operator, secagg_server.app, "
            "secagg_server.coordinator\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {TRAINING!r}]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
