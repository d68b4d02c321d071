"""Arguments shared by ``secagg privacy epsilon`` and ``secagg privacy noise`` (not a command)."""

from __future__ import annotations

import argparse


def add_mechanism_arguments(parser: argparse.ArgumentParser, *, json_help: str) -> None:
    """``--sample-rate``, ``--steps``, ``--delta``, ``--accountant`` and ``--json``."""
    parser.add_argument("--sample-rate", type=float, required=True, metavar="Q",
                        help="Poisson sampling rate q = expected batch / dataset size")
    parser.add_argument("--steps", type=int, required=True, metavar="T")
    parser.add_argument("--delta", type=float, required=True, metavar="D")
    parser.add_argument("--accountant", choices=["rdp", "prv"], default="rdp")
    parser.add_argument("--json", metavar="PATH", help=json_help)
