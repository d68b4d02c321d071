"""``secagg privacy ledger PATH``: show and verify an enterprise's privacy ledger."""

from __future__ import annotations

import argparse

HELP = "show and verify a privacy ledger: every round's spend, the recomputed total, the chain"
DESCRIPTION = """\
Reads the hash-chained ledger an enterprise client keeps (secagg.dp.ledger.PrivacyLedger), checks
its chain (an edited, reordered or cut entry is named) and prints one row per round. Totals are
recomputed by composing every round's mechanism in the ledger's accountant; totals written in
the file are never used. A broken chain is shown (with the totals of what could be read) and the
command exits 1.

  secagg privacy ledger runs/energy_utility.ledger.json
  secagg privacy ledger L --verify --roster roster.json      # signed by the roster's enterprise?
  secagg privacy ledger L --verify --public-key 64HEX --anchor HEADHASH

Cutting the file back to an earlier round leaves a valid shorter ledger; only an anchor kept
outside the file (a head hash recorded earlier, --anchor) or the server's round records catch it.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the ledger file")
    parser.add_argument("--json", metavar="PATH", help="also write the ledger contents here")
    parser.add_argument("--verify", action="store_true",
                        help="exit 1 unless the chain is intact and (with --roster or "
                             "--public-key) its last head is signed by the enterprise's identity")
    parser.add_argument("--roster", metavar="JSON",
                        help="the federation's pinned roster: the member named like the "
                             "ledger's enterprise must have signed it")
    parser.add_argument("--public-key", metavar="HEX",
                        help="the enterprise's Ed25519 identity public key (64 hex digits)")
    parser.add_argument("--anchor", metavar="HASH",
                        help="a head hash recorded earlier; the ledger must still contain it")


def run(args: argparse.Namespace) -> int:
    from secagg.cli._output import print_table, write_json
    from secagg.dp.ledger import LedgerTampered, PrivacyLedger  # needs secagg.dp only, not torch
    from secagg.errors import AuthenticationFailed, InvalidParameter

    ledger = PrivacyLedger.load(args.path, strict=False)  # a broken chain is shown, not hidden
    budget = ledger.budget_epsilon
    print(f"ledger of '{ledger.enterprise}': budget epsilon {budget:g} at delta "
          f"{ledger.delta:g} ({ledger.accountant.value})")
    rows = [[e.round, e.server_round_id or "-", e.mode.value if e.mode else "-",
             f"{e.sample_rate:.4g}", f"{e.noise_multiplier:.4g}", e.steps,
             "-" if e.clip_norm is None else f"{e.clip_norm:g}", f"{e.epsilon_rdp:.4f}",
             f"{e.epsilon_prv:.4f}", f"{e.total_epsilon:.4f}", e.timestamp]
            for e in ledger.entries]
    print_table(rows, header=["round", "server_round", "mode", "q", "sigma", "steps", "clip",
                              "eps_rdp", "eps_prv", "total", "time (UTC)"])
    spent = ledger.spent()  # recomputed from the mechanisms, never read from the file
    remaining = max(0.0, budget - spent)
    print(f"spent {spent:.4f} of {budget:g}; remaining {remaining:.4f} (recomputed by "
          f"composing {len(ledger.entries)} rounds)")
    if ledger.client_level_entries:
        print("client-level DP (distributed Skellam noise in the released sum; composed at "
              "integer Renyi orders, not charged against the budget above):")
        print_table([[e.round, e.server_round_id or "-", f"{e.noise_multiplier:.4g}",
                      f"{e.l2_clip:g}", f"{e.noise_shares}/{e.min_noise_shares}",
                      f"{e.epsilon:.4f}", f"{e.total_epsilon:.4f}", e.timestamp]
                     for e in ledger.client_level_entries],
                    header=["round", "server_round", "z", "l2 clip", "shares/min", "epsilon",
                            "total", "time (UTC)"])
        print(f"client-level epsilon {ledger.client_level_spent():.4f} at delta "
              f"{ledger.delta:g} (recomputed by composing "
              f"{len(ledger.client_level_entries)} releases)")
    print(f"chain: {ledger.status.describe()}")
    report = ledger.to_dict()
    code = 0 if ledger.status.intact else 1
    if args.verify or args.roster or args.public_key or args.anchor:
        roster = key = None
        if args.roster:
            from secagg.identity import Roster

            roster = Roster.load(args.roster)
        if args.public_key:
            try:
                key = bytes.fromhex(args.public_key)
            except ValueError:
                raise InvalidParameter("--public-key must be 64 hex digits (an Ed25519 identity "
                                       "public key)") from None
        try:
            ledger.verify(public_key=key, roster=roster, anchor=args.anchor)
            who = "" if roster is None and key is None else ", signed by the enterprise's identity"
            print(f"verified: chain intact{who}"
                  f"{', anchor found' if args.anchor else ''}")
            report["verified"] = True
        except (LedgerTampered, AuthenticationFailed) as exc:
            print(f"NOT verified: {exc}")
            report["verified"], code = False, 1
    if args.json:
        write_json(args.json, report)
    return code
