"""``secagg privacy ledger PATH``: show an enterprise's privacy ledger."""

from __future__ import annotations

import argparse

HELP = "show a privacy ledger: every round's spend and the total against the budget"
DESCRIPTION = """\
Reads the JSON ledger an enterprise client keeps (secagg.dp.ledger.PrivacyLedger) and prints one
row per round. The total is the composition of all rounds in the ledger's accountant, as
recorded.

  secagg privacy ledger runs/energy_utility.ledger.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the ledger file")
    parser.add_argument("--json", metavar="PATH", help="also write the ledger contents here")


def run(args: argparse.Namespace) -> int:
    from secagg.cli._output import print_table, write_json
    from secagg.dp.ledger import PrivacyLedger  # needs secagg.dp only, not torch

    ledger = PrivacyLedger.load(args.path)  # checks the format and every round, naming the fault
    budget = ledger.budget_epsilon
    print(f"ledger of '{ledger.enterprise}': budget epsilon {budget:g} at delta "
          f"{ledger.delta:g} ({ledger.accountant.value})")
    rows = [[e.round, f"{e.sample_rate:.4g}", f"{e.noise_multiplier:.4g}", e.steps,
             f"{e.epsilon_rdp:.4f}", f"{e.epsilon_prv:.4f}", f"{e.total_epsilon:.4f}"]
            for e in ledger.entries]
    print_table(rows, header=["round", "q", "sigma", "steps", "eps_rdp", "eps_prv", "total"])
    spent = ledger.entries[-1].total_epsilon if ledger.entries else 0.0  # as recorded
    remaining = max(0.0, budget - spent)
    print(f"spent {spent:.4f} of {budget:g}; remaining {remaining:.4f}")
    if args.json:
        write_json(args.json, {**ledger.to_dict(), "spent": spent, "remaining": remaining})
    return 0
