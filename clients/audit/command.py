"""``secagg audit``: the command (registered through the ``secagg.commands`` entry points)."""

from __future__ import annotations

import argparse
import shlex
import warnings
from pathlib import Path

HELP = "audit an enterprise: its ledger's accounting and an empirical test of its DP-SGD"
DESCRIPTION = """\
Audits one enterprise from its privacy ledger and its training data, and writes
DIR/report.json, DIR/report.html (self-contained) and PNG figures.

Accounting: every round of the ledger recomposed by two accountants, RDP and PRV
(sample-level), the budget left, and a flag where the two differ by more than 2 %.

Empirical audit (Steinke, Nasr, Jagielski 2023, "Privacy Auditing with One (1) Training Run"):
the enterprise's own DP-SGD pipeline trains once, with the mechanism the ledger's round
records (sample rate, noise multiplier, steps), on the data plus M gradient canaries
(white-box: per-example gradient set to a Dirac direction) and M input canaries (black-box:
odd, mislabelled records), each included with probability 1/2. Guessing which were included
certifies a LOWER bound on epsilon at the given confidence. A bound above the ledger's claim
means the pipeline leaks more than it records; a bound far below it is normal (one-run audits
are loose: they catch bugs, they do not measure tightness). A noise check compares the noise
actually added with the recorded noise multiplier.

--plant injects a known bug so you can see the audit catch it:
  noise-halved              half the recorded noise (caught by the noise check)
  no-clipping               per-example gradients not clipped (bound exceeds the claim)
  sample-rate-misreported   full batches under the recorded q (bound exceeds the claim)

examples:
  secagg audit --ledger runs/energy_utility.ledger.json \\
      --data clients/datasets/energy_utility.csv --out audit/
  secagg audit --ledger L --data D --out audit-bug/ --plant no-clipping --canaries 200

Costs one training run of the round (plus 2M rows); no output is sent anywhere.
Exit status: 0 audited (read the verdict), 2 bad input (one line on stderr).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", required=True, metavar="L",
                        help="the enterprise's privacy ledger (JSON, as the client keeps it)")
    parser.add_argument("--data", required=True, metavar="D",
                        help="the enterprise's training records (.csv or .jsonl)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the report")
    parser.add_argument("--canaries", type=int, default=200, metavar="M",
                        help="canaries of each kind (default 200; more gives tighter bounds)")
    parser.add_argument("--plant", choices=("noise-halved", "no-clipping",
                                            "sample-rate-misreported"),
                        help="plant a known bug in the audited run (see above)")
    parser.add_argument("--round", type=int, metavar="N",
                        help="ledger round whose mechanism is audited (default: the last)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence of the lower bounds (default 0.95)")
    parser.add_argument("--encoder", choices=("minilm", "test_only_tiny"), default="minilm",
                        help="text encoder of the audited model (test_only_tiny: tests only)")
    parser.add_argument("--clip-norm", type=float, default=1.0,
                        help="per-example clip norm of the pipeline (default 1.0)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the auditor's canary choices (not of the DP noise)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from secagg.dp.ledger import PrivacyLedger
    from secagg.errors import InvalidParameter

    from ..data import load_records
    from .accounting import account_ledger
    from .empirical import Plant, audit_pipeline
    from .report import write_report

    ledger = PrivacyLedger.load(args.ledger)
    records = load_records(args.data)
    entries = ledger.entries
    if not entries:
        raise InvalidParameter(f"ledger {args.ledger!r} records no round yet: nothing to audit")
    n = len(entries) if args.round is None else args.round
    if not 1 <= n <= len(entries):
        raise InvalidParameter(f"--round must be in 1..{len(entries)}, found {n}")
    entry = entries[n - 1]
    command = "secagg audit " + shlex.join(
        ["--ledger", args.ledger, "--data", args.data, "--out", args.out,
         "--canaries", str(args.canaries), "--round", str(n), "--encoder", args.encoder,
         "--seed", str(args.seed)] + (["--plant", args.plant] if args.plant else []))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"opacus\..*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        accounting = account_ledger(ledger)
        empirical = audit_pipeline(
            records, sample_rate=entry.sample_rate, noise_multiplier=entry.noise_multiplier,
            steps=entry.steps, delta=entry.delta, canaries=args.canaries,
            plant=Plant(args.plant) if args.plant else None, confidence=args.confidence,
            encoder=args.encoder, clip_norm=args.clip_norm, seed=args.seed,
            progress=not args.no_progress)
    doc = write_report(Path(args.out), accounting=accounting, empirical=empirical,
                       command=command, ledger=args.ledger, data=args.data)
    print(doc["verdict"]["text"])
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0
