"""``secagg privacy noise``: calibrate the noise multiplier for a target epsilon."""

from __future__ import annotations

import argparse

from secagg.cli.privacy_common import add_mechanism_arguments

HELP = "the noise multiplier sigma that reaches a target epsilon (Opacus calibration)"
DESCRIPTION = """\
The smallest noise multiplier (to Opacus's 0.01 epsilon tolerance) for which STEPS steps at
sampling rate Q stay within (TARGET_EPSILON, DELTA).

  secagg privacy noise --target-epsilon 8 --sample-rate 0.04 --steps 75 --delta 1e-5
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target-epsilon", type=float, required=True, metavar="E")
    add_mechanism_arguments(parser, json_help="write {'noise_multiplier', 'epsilon'}")


def run(args: argparse.Namespace) -> int:
    from secagg.cli._output import write_json
    from secagg.dp import epsilon, noise_multiplier

    sigma = noise_multiplier(target_epsilon=args.target_epsilon, sample_rate=args.sample_rate,
                             steps=args.steps, delta=args.delta, accountant=args.accountant)
    eps = epsilon(sample_rate=args.sample_rate, noise_multiplier=sigma, steps=args.steps,
                  delta=args.delta, accountant=args.accountant)
    print(f"noise_multiplier = {sigma:.4f}  (epsilon {eps:.4f} at delta={args.delta:g}, "
          f"accountant={args.accountant})")
    if args.json:
        write_json(args.json, {"noise_multiplier": sigma, "epsilon": eps,
                               "target_epsilon": args.target_epsilon, "delta": args.delta,
                               "sample_rate": args.sample_rate, "steps": args.steps,
                               "accountant": args.accountant})
    return 0
