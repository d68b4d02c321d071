"""The ``secagg`` command line.

Commands are registered explicitly in :data:`COMMANDS` (no import side effects); each module
exposes ``HELP`` (one line), ``DESCRIPTION`` (what it teaches), ``add_arguments(parser)`` and
``run(args) -> int``, and imports anything heavy inside ``run`` so ``secagg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from secagg.errors import SecAggError

__all__ = ["COMMANDS", "main"]

# group -> module, or group -> {subcommand -> module}
COMMANDS: dict[str, str | dict[str, str]] = {
    "demo": "secagg.cli.demo",
    "simulate": {
        "masking": "secagg.cli.simulate_masking",
        "ckks": "secagg.cli.simulate_ckks",
    },
    "bench": {
        "masking": "secagg.cli.bench_masking",
        "ckks": "secagg.cli.bench_ckks",
        "dp": "secagg.cli.bench_dp",
        "e2e": "secagg.cli.bench_e2e",
    },
    "privacy": {
        "epsilon": "secagg.cli.privacy_epsilon",
        "noise": "secagg.cli.privacy_noise",
        "ledger": "secagg.cli.privacy_ledger",
    },
}

_GROUP_HELP = {
    "simulate": "run one whole protocol round in memory with the real state machines",
    "bench": "measure secagg against the anchor implementation in the same process",
    "privacy": "differential-privacy accounting: epsilon, noise calibration, the ledger",
    "demo": "the smart-city demo: a real server and one process per enterprise",
    "client": "run one enterprise's client against a server",
}

EPILOG = """\
examples:
  secagg demo                                   # the smart-city demo (a few minutes)
  secagg simulate masking --clients 10 --params 100000 --dropout 0.2 --stage random
  secagg bench masking --clients 10 --params 1000000 --dropout 0.1 --compare flower --json out.json

Every command takes --help. Errors name the argument, the rule and how to fix it.
"""


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


def build_parser() -> argparse.ArgumentParser:
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
            continue
        gparser = groups.add_parser(group, help=_GROUP_HELP.get(group, group),
                                    description=_GROUP_HELP.get(group, group))
        subs = gparser.add_subparsers(dest="sub", metavar="MODE")
        for sub, modname in target.items():
            _add_command(subs, sub, importlib.import_module(modname))
        gparser.set_defaults(_group_parser=gparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
