"""``secagg bench ckks``: our CKKS round against NVIDIA FLARE's TenSEAL recipe, same process."""

from __future__ import annotations

import argparse

HELP = "measure CKKS aggregation against the NVFlare TenSEAL recipe (size, time, error)"
DESCRIPTION = """\
Runs one CKKS round of N clients x M parameters with secagg (seeded symmetric ciphertexts at the
lowest level, two reals per complex slot, client-only key ceremony, weights encrypted) and, with
--compare nvflare, NVIDIA FLARE's recipe as FLARE configures it (TenSEAL ckks_vector per tensor,
N=8192, coeff [60,40,40], scale 2^40, context serialised per tensor), on the same data.

JSON keys: bytes_per_param_ratio, client_encrypt_s, server_sum_s, max_abs_error,
nvflare.bytes_per_param_ratio, nvflare.client_encrypt_s, nvflare.server_sum_s,
nvflare.max_abs_error, size_vs_nvflare (NVFlare bytes / ours).

--preset packed runs the compact wire format instead: one real per polynomial coefficient, residues
bit-packed at the width of a prime chosen for the round (CKKSParams.for_round from the clients,
the bounds and --target-error); its bytes_per_param_ratio target is <= 1.0.

example:
  secagg bench ckks --clients 10 --params 1000000 --compare nvflare --json ckks.json
  secagg bench ckks --clients 10 --params 1000000 --compare nvflare --preset packed
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=10, help="number of clients (default 10)")
    parser.add_argument(
        "--params", type=int, default=1_000_000, help="parameters per update (default 1000000)"
    )
    parser.add_argument(
        "--compare",
        choices=("nvflare", "none"),
        default="nvflare",
        help="anchor to run side by side (default nvflare)",
    )
    parser.add_argument(
        "--preset",
        choices=("compact", "precise", "packed"),
        default="compact",
        help="secagg CKKS preset (default compact); packed: one real per coefficient, residues "
        "bit-packed, the prime chosen for the round (CKKSParams.for_round)",
    )
    parser.add_argument(
        "--target-error",
        type=float,
        default=None,
        help="with --preset packed: target error relative to the sum's range (default 5e-7)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the synthetic updates")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")


def _fmt(value: float, unit: str = "") -> str:
    return f"{value:.3g}{unit}"


def run(args: argparse.Namespace) -> int:
    from secagg.cli._output import print_table, write_json

    from ..ckks import TARGETS, run_bench

    report = run_bench(
        clients=args.clients, params=args.params, compare=args.compare, preset=args.preset, seed=args.seed,
        **({} if args.target_error is None else {"target_error": args.target_error}),
    )
    print(f"CKKS bench: {args.clients} clients x {args.params} params; secagg {report['preset']}")
    keys = [
        ("bytes_per_param_ratio", "x float32"),
        ("client_encrypt_s", " s"),
        ("server_sum_s", " s"),
        ("max_abs_error", ""),
    ]
    flare = report.get("nvflare")
    rows = []
    for key, unit in keys:
        row = [key, _fmt(report[key], unit)]
        if flare:
            row.append(_fmt(flare[key], unit))
        rows.append(row)
    header = ["", "secagg"] + (["nvflare"] if flare else [])
    print_table(rows, header=header)
    if flare:
        print(
            f"size_vs_nvflare: {report['size_vs_nvflare']:.2f}x smaller "
            f"(target >= {TARGETS['size_vs_nvflare_min']})"
        )
        print(
            f"server_sum vs nvflare: {report['server_sum_vs_nvflare']:.2f} (target <= "
            f"{TARGETS['server_sum_vs_nvflare_max']}); without FLARE's per-tensor context: "
            f"{report['server_sum_vs_nvflare_without_context']:.2f}"
        )
        missed = [k for k, ok in report["targets_met"].items() if not ok]
        print("targets: all met" if not missed else f"targets missed: {', '.join(missed)}")
    if args.json:
        write_json(args.json, report)
    return 0
