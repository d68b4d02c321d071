"""``secagg bench flower``: secagg's Flower mod and workflow vs Flower's SecAgg+ vs plain FedAvg,
in Flower's simulation engine."""

from __future__ import annotations

import argparse

HELP = "time a round with secagg's Flower integration, with Flower's SecAgg+ and plain, in Flower"
DESCRIPTION = """\
Runs, inside one Flower simulation (Ray backend, one SuperNode per client), one FedAvg round with
secagg's mod and workflow (active mode, pinned roster), one with Flower 1.41's own SecAgg+
(secaggplus_mod + SecAggPlusWorkflow, same graph degree and threshold, same quantisation bits,
clip 8) and one plain round (no protection), --repeats of each, and reports the medians. Every
client returns a fixed random float32 update of --params values, so the times measure the
protection inside Flower, not training. A round's time is the fit workflow's wall time in the
ServerApp (Ray's start-up and one warm-up round excluded).

Keys in --json: secure_round_s, plain_round_s, ratio (secure / plain; target <= 1.5 at 10 clients x
1M params), flower_secaggplus_round_s, speedup_vs_flower (Flower's SecAgg+ / secure; target >= 3),
and max_abs_error_vs_plain for both secure kinds; secure_exchanges_s: for each secure round, the
wall time of each of its message exchanges (setup, share keys, masked input with the clients'
training, consistency, unmask). Every exchange pays the engine's own latency (Flower's
simulation engine moves messages from its LinkState to the ClientApps on a 0.1 s poll, and runs
them on one Ray actor per core), which a plain round pays once.

With --ckks, also ckks_threshold_round_s, ckks_threshold_ratio (to plain),
ckks_threshold_exchanges_s and max_abs_error_vs_plain.ckks_threshold: a round of secagg's
threshold CKKS (ThresholdCKKSWorkflow + threshold_ckks_mod: no key holder) in the same
simulation.

engine_floor_round_s: the least any round of three exchanges takes in this engine, measured in
the same run as a plain round followed by two exchanges of empty messages (answered without
running the ClientApp); engine_floor_ratio = engine_floor_round_s / plain_round_s. A round that
stays secure against a malicious server when clients drop out needs three exchanges at least
(upload, consistency check on the survivor set, unmasking), so when engine_floor_ratio exceeds
1.5 no such protocol meets the ratio target in this engine, and flower_secaggplus_round_s /
engine_floor_round_s bounds the speed-up any of them can reach.

Needs flwr with its simulation extra:  pip install 'flwr[simulation]==1.41.*'

examples:
  secagg bench flower --clients 10 --params 1000000 --json flower.json
  secagg bench flower --clients 3 --params 1000
  secagg bench flower --clients 10 --params 1000000 --ckks
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=10, help="SuperNodes (10)")
    parser.add_argument("--params", type=int, default=1_000_000, help="parameters (1000000)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of each kind (1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ckks", action="store_true",
                        help="also run a threshold-CKKS round (ThresholdCKKSWorkflow + "
                             "threshold_ckks_mod) in the same simulation")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")


def run(args: argparse.Namespace) -> int:
    from secagg.cli._checks import check_range
    from secagg.cli._output import print_table, write_json

    from ..flower_engine import run_flower_engine_bench

    check_range("--clients", args.clients, low=3)
    check_range("--params", args.params, low=1)
    check_range("--repeats", args.repeats, low=1)
    res = run_flower_engine_bench(clients=args.clients, params=args.params,
                                  repeats=args.repeats, seed=args.seed, ckks=args.ckks)
    report = {
        "engine": "flower-simulation-ray", "clients": args.clients, "params": args.params,
        "repeats": args.repeats,
        "secure_round_s": res.secure_round_s, "plain_round_s": res.plain_round_s,
        "ratio": res.secure_round_s / res.plain_round_s,
        "flower_secaggplus_round_s": res.flower_round_s,
        "speedup_vs_flower": res.flower_round_s / res.secure_round_s,
        "secure_rounds_s": res.secure_rounds_s, "plain_rounds_s": res.plain_rounds_s,
        "flower_secaggplus_rounds_s": res.flower_rounds_s,
        "max_abs_error_vs_plain": {"secure": res.secure_error, "flower_secaggplus": res.flower_error},
        "neighbours": res.neighbours, "threshold": res.threshold, "value_bits": res.value_bits,
        "secure_exchanges_s": res.secure_exchanges_s,
        "engine_floor_round_s": res.floor_round_s,
        "engine_floor_ratio": res.floor_round_s / res.plain_round_s,
        "engine_floor_rounds_s": res.floor_rounds_s,
    }
    if args.ckks:
        report.update({
            "ckks_threshold_round_s": res.ckks_round_s, "ckks_threshold_rounds_s": res.ckks_rounds_s,
            "ckks_threshold_ratio": (res.ckks_round_s or 0.0) / res.plain_round_s,
            "ckks_threshold_exchanges_s": res.ckks_exchanges_s,
        })
        report["max_abs_error_vs_plain"]["ckks_threshold"] = res.ckks_error
    print(f"flower bench: {args.clients} SuperNodes, {args.params} params, median of "
          f"{args.repeats}; graph k={res.neighbours}, t={res.threshold}, {res.value_bits} bits")
    print_table([
        ["secagg mod + workflow", f"{res.secure_round_s:.3f}", f"{res.secure_error:.1e}"],
        ["Flower SecAgg+", f"{res.flower_round_s:.3f}", f"{res.flower_error:.1e}"],
        ["plain FedAvg", f"{res.plain_round_s:.3f}", ""],
        ["ratio secure / plain (target <= 1.5)", f"{report['ratio']:.2f}", ""],
        ["speed-up vs Flower SecAgg+ (target >= 3)", f"{report['speedup_vs_flower']:.2f}", ""],
        ["engine floor: plain + 2 empty exchanges", f"{res.floor_round_s:.3f}", ""],
        ["  its ratio to plain (least for 3 exchanges)", f"{report['engine_floor_ratio']:.2f}",
         ""],
        ["  Flower SecAgg+ / floor (most speed-up)",
         f"{res.flower_round_s / res.floor_round_s:.2f}", ""],
    ] + ([["secagg threshold CKKS (--ckks)", f"{res.ckks_round_s:.3f}",
            f"{res.ckks_error:.1e}"]] if args.ckks and res.ckks_round_s is not None
         and res.ckks_error is not None else []),
        header=["round", "s", "max |err| vs plain"])
    for i, spans in enumerate(res.secure_exchanges_s, 1):
        print(f"secure round {i}: {len(spans)} exchanges, "
              + " + ".join(f"{s:.3f}" for s in spans) + f" = {sum(spans):.3f} s")
    for i, spans in enumerate(res.ckks_exchanges_s, 1):
        print(f"threshold CKKS round {i}: {len(spans)} exchanges, "
              + " + ".join(f"{s:.3f}" for s in spans) + f" = {sum(spans):.3f} s")
    if args.json:
        write_json(args.json, report)
    return 0
