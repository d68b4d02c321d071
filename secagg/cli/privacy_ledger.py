"""``secagg privacy ledger PATH``: show an enterprise's privacy ledger."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from secagg.errors import InvalidParameter

HELP = "show a privacy ledger: every round's spend and the total against the budget"
DESCRIPTION = """\
Reads the JSON ledger an enterprise client keeps (clients.PrivacyLedger) and prints one row per
round. The total is the composition of all rounds in the ledger's accountant, as recorded.

  secagg privacy ledger runs/energy_utility.ledger.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the ledger file")
    parser.add_argument("--json", metavar="PATH", help="also write the ledger contents here")


def run(args: argparse.Namespace) -> int:
    from secagg.cli._output import print_table, write_json

    path = Path(args.path)
    try:
        doc = json.loads(path.read_text())
        rounds = doc["rounds"]
        budget = float(doc["budget_epsilon"])
        delta = float(doc["delta"])
        accountant = str(doc["accountant"])
        enterprise = str(doc["enterprise"])
    except FileNotFoundError:
        raise InvalidParameter(f"ledger file {str(path)!r} does not exist") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidParameter(f"{str(path)!r} is not a privacy ledger: {exc}") from None
    print(f"ledger of '{enterprise}': budget epsilon {budget:g} at delta {delta:g} ({accountant})")
    rows = [[r["round"], f"{r['sample_rate']:.4g}", f"{r['noise_multiplier']:.4g}", r["steps"],
             f"{r['epsilon_rdp']:.4f}", f"{r['epsilon_prv']:.4f}", f"{r['total_epsilon']:.4f}"]
            for r in rounds]
    print_table(rows, header=["round", "q", "sigma", "steps", "eps_rdp", "eps_prv", "total"])
    spent = float(rounds[-1]["total_epsilon"]) if rounds else 0.0
    print(f"spent {spent:.4f} of {budget:g}; remaining {max(0.0, budget - spent):.4f}")
    if args.json:
        write_json(args.json, {**doc, "spent": spent, "remaining": max(0.0, budget - spent)})
    return 0
