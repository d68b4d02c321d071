"""The ``secagg`` command line.

The library's own commands (``simulate``, ``privacy``) are registered in :data:`COMMANDS` (no
import side effects). Applications add command groups through the ``secagg.commands``
entry-point group: pyproject.toml registers ``bench`` (the ``benchmarks/`` folder) and ``demo``
(``examples/smart_city/``), which exist in a source checkout only (``scripts/setup.sh`` makes
them importable); installed from a wheel, ``secagg bench ...`` says in one line that it needs
one. This package never names those modules:
it loads what the entry points name (``tests/test_layers.py`` checks every import).

Each command module exposes ``HELP`` (one line), ``DESCRIPTION`` (what it teaches),
``add_arguments(parser)`` and ``run(args) -> int``, and imports anything heavy inside ``run`` so
``secagg --help`` stays fast. A group module exposes ``HELP`` and ``SUBCOMMANDS`` (name ->
command module, absolute or relative to the group module).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from secagg.errors import SecAggError

__all__ = ["COMMANDS", "ENTRY_POINT_GROUP", "main"]

# group -> module, or group -> {subcommand -> module}
COMMANDS: dict[str, str | dict[str, str]] = {
    "simulate": {
        "masking": "secagg.cli.simulate_masking",
        "ckks": "secagg.cli.simulate_ckks",
    },
    "privacy": {
        "epsilon": "secagg.cli.privacy_epsilon",
        "noise": "secagg.cli.privacy_noise",
        "ledger": "secagg.cli.privacy_ledger",
    },
}
#: where applications register extra command groups (name -> command or group module)
ENTRY_POINT_GROUP = "secagg.commands"

_GROUP_HELP = {
    "simulate": "run one whole protocol round in memory with the real state machines",
    "privacy": "differential-privacy accounting: epsilon, noise calibration, the ledger",
}

EPILOG = """\
examples:
  secagg simulate masking --clients 10 --params 100000 --dropout 0.2 --stage random
  secagg privacy epsilon --sample-rate 0.01 --noise-multiplier 1 --steps 1000 --delta 1e-5
  secagg demo                                   # the smart-city demo (source checkout)
  secagg bench masking --clients 10 --params 1000000 --dropout 0.1 --compare flower --json out.json

Every command takes --help. Errors name the argument, the rule and how to fix it.
"""


def _unavailable(ep: EntryPoint, exc: Exception) -> str:
    """One line: why the command group ``ep`` cannot run here."""
    if isinstance(exc, ModuleNotFoundError) and exc.name is not None and \
            (ep.module == exc.name or ep.module.startswith(exc.name + ".")):
        return (f"`secagg {ep.name}` needs a source checkout of secagg: {ep.module} is not part "
                "of the installed package (clone the repository and run `bash scripts/setup.sh` "
                "there)")
    return f"`secagg {ep.name}` could not be loaded from {ep.value}: {type(exc).__name__}: {exc}"


def _plugins() -> tuple[dict[str, tuple[ModuleType, dict[str, ModuleType]]], dict[str, str]]:
    """The command groups applications registered: loaded (module, subcommand modules), and
    for those that cannot load here, the one-line reason."""
    loaded: dict[str, tuple[ModuleType, dict[str, ModuleType]]] = {}
    missing: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in COMMANDS or ep.name in loaded or ep.name in missing:
            continue  # the library's own commands win; the first registration wins
        try:
            module = ep.load()
            subs = {sub: importlib.import_module(name, module.__name__)  # may be relative
                    for sub, name in getattr(module, "SUBCOMMANDS", {}).items()}
        except Exception as exc:  # a missing or broken application never breaks the others
            missing[ep.name] = _unavailable(ep, exc)
            continue
        loaded[ep.name] = (module, subs)
    return loaded, missing


def _add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
                 name: str, module: ModuleType) -> None:
    parser = subparsers.add_parser(
        name,
        help=module.HELP,
        description=getattr(module, "DESCRIPTION", module.HELP),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    parser.set_defaults(_module=module)


def _add_group(groups: argparse._SubParsersAction[argparse.ArgumentParser], group: str,
               help_text: str, modules: dict[str, ModuleType]) -> None:
    gparser = groups.add_parser(group, help=help_text, description=help_text)
    subs = gparser.add_subparsers(dest="sub", metavar="MODE")
    for sub, module in modules.items():
        _add_command(subs, sub, module)
    gparser.set_defaults(_group_parser=gparser)


def build_parser(plugins: dict[str, tuple[ModuleType, dict[str, ModuleType]]] | None = None,
                 missing: dict[str, str] | None = None) -> argparse.ArgumentParser:
    if plugins is None or missing is None:
        plugins, missing = _plugins()
    parser = argparse.ArgumentParser(
        prog="secagg",
        description="Privacy-preserving federated fine-tuning: secure aggregation "
        "(SecAgg+/CKKS), DP LoRA clients and an untrusted server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")
    for group, target in COMMANDS.items():
        if isinstance(target, str):
            _add_command(groups, group, importlib.import_module(target))
        else:
            _add_group(groups, group, _GROUP_HELP.get(group, group),
                       {sub: importlib.import_module(name) for sub, name in target.items()})
    for group, (module, subs) in plugins.items():
        if subs:
            _add_group(groups, group, module.HELP, subs)
        else:
            _add_command(groups, group, module)
    for group in missing:
        groups.add_parser(group, help="(needs a source checkout of secagg)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plugins, missing = _plugins()
    if argv and argv[0] in missing:
        print(f"secagg: error: {missing[argv[0]]}", file=sys.stderr)
        return 2
    parser = build_parser(plugins, missing)
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        group_parser = getattr(args, "_group_parser", parser)
        group_parser.print_help()
        return 2
    try:
        return int(module.run(args))
    except SecAggError as exc:
        print(f"secagg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("secagg: interrupted", file=sys.stderr)
        return 130
