"""``secagg bench masking``: our SecAgg/SecAgg+ against Flower's, in one process."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "benchmark the masking mode against Flower's SecAgg+ in the same run"
DESCRIPTION = """\
Runs one secure-aggregation round of ours and one of Flower 1.41's SecAgg+ (its real workflow
and client mod, driven in-process), with the same clients, parameters, quantisation precision,
graph and threshold, and prints both side by side with the speed-ups.

Timings: client_ms is one client's compute over all stages (averaged over clients); server_ms is
the server's unmask stage; server_total_ms its compute over all stages; round_s the wall time of
the whole simulated round (all clients and the server, one after another, in this process).
Dropped clients vanish after uploading, before unmasking, or with --drop-stage masked-input after
sharing, before uploading (Flower aborts on earlier dropouts; ours does not, see `secagg simulate
masking`).

Also measures our mask expansion (mask_gbps) against the raw AES-256-CTR keystream it is built
on (aes_ctr_gbps), in the same run.

--graph full is SecAgg's complete graph; --graph sparse lets the parameter finder pick the
SecAgg+ neighbour degree for --clients and --dropout (Flower is given the same degree).

Needs the bench extra for --compare flower:  pip install 'secagg[bench]'

examples:
  secagg bench masking --clients 10 --params 1000000 --dropout 0.1 --compare flower --json m.json
  secagg bench masking --clients 100 --params 100000 --dropout 0.1 --graph sparse --compare flower
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=10, help="number of clients (10)")
    parser.add_argument("--params", type=int, default=1_000_000, help="parameters (1000000)")
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="fraction dropping before the unmask stage (0.1)")
    parser.add_argument("--drop-stage", choices=("unmask", "masked-input"), default="unmask",
                        help="where dropped clients vanish: after uploading (unmask, default) or "
                        "after sharing, before uploading (masked-input: pairwise masks rebuilt)")
    parser.add_argument("--graph", choices=("full", "sparse"), default="full",
                        help="full graph (SecAgg) or parameter-finder SecAgg+ graph (full)")
    parser.add_argument("--mode", choices=("active", "passive"), default="active",
                        help="active: the malicious-server protocol the service runs (roster "
                        "signatures, consistency round; default); passive: honest-but-curious, "
                        "Flower SecAgg+'s threat model")
    parser.add_argument("--compare", choices=("flower", "none"), default="flower",
                        help="anchor to run side by side (flower)")
    parser.add_argument("--value-bits", type=int, default=16,
                        help="quantisation bits per value, both sides (16)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of ours to take the median of (3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")


def run(args: argparse.Namespace) -> int:
    from secagg.cli._checks import check_range
    from secagg.cli._output import print_table, write_json

    from ..masking import measure_keystream, run_masking_bench

    check_range("--clients", args.clients, low=3)
    check_range("--params", args.params, low=1)
    check_range("--dropout", args.dropout, low=0, high=0.5, high_inclusive=False)
    check_range("--value-bits", args.value_bits, low=1, high=30)
    check_range("--repeats", args.repeats, low=1)
    clip = 8.0
    ours = run_masking_bench(clients=args.clients, params=args.params, dropout=args.dropout,
                             full_graph=args.graph == "full", value_bits=args.value_bits,
                             clip=clip, repeats=args.repeats, seed=args.seed,
                             drop_stage=args.drop_stage, active=args.mode == "active")
    mask_gbps, aes_gbps = measure_keystream()
    report: dict[str, Any] = {
        "correct": ours.correct,
        "client_ms": ours.client_ms,
        "server_ms": ours.server_ms,
        "server_total_ms": ours.server_total_ms,
        "round_s": ours.round_s,
        "upload_bytes_per_param": ours.upload_bytes_per_param,
        "mask_gbps": mask_gbps,
        "aes_ctr_gbps": aes_gbps,
        "mask_vs_keystream": mask_gbps / aes_gbps,
        "clients": args.clients, "params": args.params, "dropout": args.dropout,
        "graph": args.graph, "mode": args.mode, "drop_stage": args.drop_stage, "neighbours": ours.neighbours,
        "threshold": ours.threshold,
        "survivors": ours.survivors, "mod_bits": ours.mod_bits,
    }
    rows: list[list[Any]] = [
        ["correct (exact sum)", ours.correct, ""],
        ["client ms", f"{ours.client_ms:.1f}", ""],
        ["server unmask ms", f"{ours.server_ms:.1f}", ""],
        ["server total ms", f"{ours.server_total_ms:.1f}", ""],
        ["round wall s", f"{ours.round_s:.2f}", ""],
        ["upload bytes/param", f"{ours.upload_bytes_per_param:.3f}", ""],
    ]
    if args.compare == "flower":
        from ..flower_anchor import run_flower_secaggplus

        flower = run_flower_secaggplus(
            num_clients=args.clients, num_params=args.params, dropout=args.dropout,
            num_shares=ours.neighbours + 1, reconstruction_threshold=ours.threshold,
            clipping_range=clip, quantization_range=(1 << args.value_bits) - 1, seed=args.seed,
            drop_stage=args.drop_stage)
        report["flower"] = {
            "client_ms": flower.client_ms, "server_ms": flower.server_ms,
            "upload_bytes_per_param": flower.upload_bytes_per_param, "correct": flower.correct,
        }
        report["speedup_client"] = flower.client_ms / ours.client_ms
        report["speedup_server"] = flower.server_ms / ours.server_ms
        report["correct"] = ours.correct
        rows = [
            ["correct", ours.correct, flower.correct],
            ["client ms", f"{ours.client_ms:.1f}", f"{flower.client_ms:.1f}"],
            ["server unmask ms", f"{ours.server_ms:.1f}", f"{flower.server_ms:.1f}"],
            ["upload bytes/param", f"{ours.upload_bytes_per_param:.3f}",
             f"{flower.upload_bytes_per_param:.3f}"],
            ["speed-up client / server",
             f"{report['speedup_client']:.1f}x / {report['speedup_server']:.1f}x", ""],
        ]
    rows.append(["mask expansion vs raw AES-CTR",
                 f"{mask_gbps:.2f} / {aes_gbps:.2f} GB/s ({100 * mask_gbps / aes_gbps:.0f} %)", ""])
    graph = "full" if args.graph == "full" else f"sparse k={ours.neighbours}"
    print(f"masking bench: {args.clients} clients, {args.params} params, dropout {args.dropout}, "
          f"graph {graph}, t={ours.threshold}")
    print_table(rows, header=["", "secagg", "flower" if args.compare == "flower" else ""])
    if args.json:
        write_json(args.json, report)
    return 0 if ours.correct else 1
