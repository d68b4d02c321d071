"""``secagg privacy epsilon``: epsilon of DP-SGD from its mechanism parameters."""

from __future__ import annotations

import argparse

from secagg.cli.privacy_common import add_mechanism_arguments

HELP = "epsilon of DP-SGD (Poisson sampling + Gaussian noise) by Opacus's RDP or PRV accountant"
DESCRIPTION = """\
Epsilon after STEPS steps, each sampling every example with probability Q and adding Gaussian
noise of standard deviation SIGMA times the clipping norm (add/remove-one-example neighbouring).

  secagg privacy epsilon --sample-rate 0.01 --noise-multiplier 1 --steps 1000 --delta 1e-5
  -> 2.1014 (rdp); --accountant prv gives ~1.83 (tighter)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--noise-multiplier", type=float, required=True, metavar="SIGMA")
    add_mechanism_arguments(parser, json_help="also write {'epsilon': ...} here")


def run(args: argparse.Namespace) -> int:
    from secagg.cli._output import write_json
    from secagg.dp import epsilon

    eps = epsilon(sample_rate=args.sample_rate, noise_multiplier=args.noise_multiplier,
                  steps=args.steps, delta=args.delta, accountant=args.accountant)
    print(f"epsilon = {eps:.4f}  (delta={args.delta:g}, q={args.sample_rate:g}, "
          f"sigma={args.noise_multiplier:g}, steps={args.steps}, accountant={args.accountant})")
    if args.json:
        write_json(args.json, {
            "epsilon": eps, "delta": args.delta, "sample_rate": args.sample_rate,
            "noise_multiplier": args.noise_multiplier, "steps": args.steps,
            "accountant": args.accountant,
        })
    return 0
