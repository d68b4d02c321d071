"""``secagg bench e2e``: a secure round vs a plaintext round over the real server, end to end."""

from __future__ import annotations

import argparse

HELP = "time a secure round against a plaintext round over the real server and client runtime"
DESCRIPTION = """\
Starts a real secagg server on 127.0.0.1 (random free port, temporary data directory) and one
client process per --clients, each holding a random float32 update of --params values. The same
processes run alternating secure and plaintext rounds (plain: the server sums float32 uploads,
no protection; same server, store, HTTP and runtime), --repeats of each, and the medians are
reported. A round's time runs from the operator opening it to the last client holding the
released aggregate. No training is involved, so the ratio measures the protection alone.

--mode picks the secure round: masking (pairwise masks, clip 1.0) or ckks (CKKS, COMPACT preset,
value_bound 1.0; the clients decrypt the released aggregate, so its time is in the round). For
ckks the error is measured on one extra, untimed round whose mean each client writes.

Keys in --json: secure_round_s, plain_round_s, ratio (target <= 1.5 at 10 clients x 1M params),
max_abs_error_vs_plaintext (secure aggregate vs the plaintext sum of the same updates).

examples:
  secagg bench e2e --mode masking --clients 10 --params 1000000 --json e2e.json
  secagg bench e2e --mode ckks --clients 3 --params 100000 --json e2e_ckks.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secagg.cli._checks import number

    parser.add_argument("--mode", choices=("masking", "ckks"), default="masking",
                        help="protection mode of the secure round: masking or ckks (masking)")
    parser.add_argument("--clients", type=int, default=10, help="client processes (10)")
    parser.add_argument("--params", type=int, default=1_000_000, help="parameters (1000000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of each kind (3)")
    parser.add_argument("--warmup", type=number(int, low=0), default=1,
                        help="untimed pairs of rounds first (1)")
    parser.add_argument("--seed", type=number(int, low=0), default=0)
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")


def run(args: argparse.Namespace) -> int:
    from secagg.cli._output import print_table, write_json
    from secagg.errors import InvalidParameter

    from ..e2e import AVAILABLE_MODES, run_e2e_bench

    if args.mode not in AVAILABLE_MODES:
        raise InvalidParameter(f"--mode {args.mode} is not available: the server runs "
                               f"{', '.join(AVAILABLE_MODES)} rounds")
    if args.clients < 3 or args.params < 1 or args.repeats < 1:
        raise InvalidParameter("need --clients >= 3, --params >= 1 and --repeats >= 1")
    res = run_e2e_bench(clients=args.clients, params=args.params, repeats=args.repeats, warmup=args.warmup,
                        seed=args.seed, mode=args.mode)
    report = {
        "mode": args.mode, "clients": args.clients, "params": args.params,
        "repeats": args.repeats, "secure_round_s": res.secure_round_s,
        "plain_round_s": res.plain_round_s, "ratio": res.ratio,
        "secure_rounds_s": res.secure_rounds_s, "plain_rounds_s": res.plain_rounds_s,
        "max_abs_error_vs_plaintext": res.max_abs_error_vs_plaintext,
        "survivors": res.survivors,
    }
    print(f"e2e bench: {args.mode}, {args.clients} client processes, {args.params} params, "
          f"median of {args.repeats}")
    print_table([
        ["secure round s", f"{res.secure_round_s:.3f}",
         " ".join(f"{t:.3f}" for t in res.secure_rounds_s)],
        ["plain round s", f"{res.plain_round_s:.3f}",
         " ".join(f"{t:.3f}" for t in res.plain_rounds_s)],
        ["ratio (target <= 1.5)", f"{res.ratio:.2f}", ""],
        ["max |secure - plain|", f"{res.max_abs_error_vs_plaintext:.2e}", ""],
    ], header=["", "median", "all"])
    if args.json:
        write_json(args.json, report)
    return 0
