"""``secagg bench ckks``: our CKKS round against NVIDIA FLARE's TenSEAL recipe, same process."""

from __future__ import annotations

import argparse
from typing import Any

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

--mode threshold runs threshold CKKS instead (no single key holder; default --mode dealer): each
client is an enterprise with its own secret, dealt to the others by replicated t-out-of-n sharing
in sealed, roster-signed bundles; uploads are one bit-packed polynomial per chunk, signed and
bound to the round; the server verifies and sums them; --drop-at-decrypt K enterprises (default
n - t) are absent at decryption and the others send signed partial decryptions with smudging
noise, which the server verifies and combines (which enterprises are absent is drawn from
--seed). Each client encrypts its weighted update and its weight. server_sum_s there covers
verifying the signatures and unpacking every upload, the sum, and packing the aggregate.
Extra JSON keys:
  decrypt_s           all partial decryptions counted SEQUENTIALLY (the sum of the decryptors'
                      times, each from the request to its signed partial bytes: checking the
                      signed uploads and re-summing them for its signed round statement, its
                      dealt shares summed, the products, the smudging, packing and signing) plus
                      the server's combine (verify and unpack the partials, add, decode, divide)
  statement_s, statement_download_bytes, statement_quorum, min_uploaders
                      the once-per-round statement each decryptor signs before decrypting
  decrypt_parallel_s  the slowest partial decryption plus the combine (decryptors in parallel)
  threshold           t (--threshold; default a strict majority, 6 of 10)
  dropped_at_decrypt, decryptors, key_setup_s, partial_bytes, threshold_params
Targets printed for threshold mode (issue 14): bytes_per_param_ratio <= 2.5, max_abs_error
<= 1e-6 of the clip range (1.0), server_sum_s <= NVFlare's.

example:
  secagg bench ckks --clients 10 --params 1000000 --compare nvflare --json ckks.json
  secagg bench ckks --clients 10 --params 1000000 --compare nvflare --preset packed
  secagg bench ckks --clients 10 --params 1000000 --mode threshold --compare nvflare --json t.json
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
        "--mode",
        choices=("dealer", "threshold"),
        default="dealer",
        help="dealer: one enterprise makes the round key (default); threshold: threshold CKKS, "
        "no single key holder",
    )
    parser.add_argument(
        "--threshold",
        type=int,
        default=None,
        help="with --mode threshold: partial decryptions needed (default a strict majority, "
        "clients // 2 + 1: 6 of 10)",
    )
    parser.add_argument(
        "--drop-at-decrypt",
        type=int,
        default=None,
        help="with --mode threshold: enterprises absent at decryption (default clients - threshold)",
    )
    parser.add_argument(
        "--preset",
        choices=("compact", "precise", "packed"),
        default=None,
        help="dealer mode's CKKS preset (default compact); packed: one real per coefficient, residues "
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
    from secagg.errors import InvalidParameter

    from ..ckks import TARGETS, run_bench

    if args.mode == "threshold" and (args.preset is not None or args.target_error is not None):
        raise InvalidParameter("--preset and --target-error are dealer-mode options; --mode threshold "
                               "chooses its parameters from the clients, the threshold and the "
                               "promised error (1e-6 of the clip range)")
    if args.mode != "threshold" and args.target_error is not None and args.preset != "packed":
        raise InvalidParameter("--target-error applies to --preset packed only (the named presets "
                               "fix their precision)")
    report = run_bench(
        clients=args.clients, params=args.params, compare=args.compare,
        preset=args.preset or "compact", seed=args.seed, mode=args.mode, threshold=args.threshold,
        drop_at_decrypt=args.drop_at_decrypt,
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
    if report["mode"] == "threshold":
        rows.append(["decrypt_s (sequential)", _fmt(report["decrypt_s"], " s")]
                    + (["-"] if flare else []))
        rows.append(["decrypt_s (parallel)", _fmt(report["decrypt_parallel_s"], " s")]
                    + (["-"] if flare else []))
    header = ["", "secagg"] + (["nvflare"] if flare else [])
    print_table(rows, header=header)
    if report["mode"] == "threshold":
        _print_threshold_targets(report)
    elif flare:
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


def _print_threshold_targets(report: dict[str, Any]) -> None:
    from ..ckks import TARGETS

    met = report["targets_met"]
    print(f"threshold t={report['threshold']} of {report['clients']}; absent at decryption: "
          f"{report['dropped_at_decrypt']}; decrypted by {report['decryptors']}")

    def line(key: str, text: str) -> None:
        print(f"  {text}: {'met' if met[key] else 'MISSED'}")

    print("targets (issue 14, threshold mode):")
    line("bytes_per_param_ratio", f"bytes_per_param_ratio {report['bytes_per_param_ratio']:.3f} "
         f"<= {TARGETS['threshold_bytes_per_param_ratio_max']}")
    line("max_abs_error", f"max_abs_error {report['max_abs_error']:.3g} <= "
         f"{report['promised_max_abs_error']:.0e} (clip range 1.0)")
    if "server_sum_s" in met:
        line("server_sum_s", f"server_sum_s {report['server_sum_s']:.3g} s <= NVFlare's "
             f"(ratio {report['server_sum_vs_nvflare']:.2f}; without FLARE's per-tensor context "
             f"{report['server_sum_vs_nvflare_without_context']:.2f})")
    else:
        print("  server_sum_s <= NVFlare's: not measured (--compare none)")
    line("completed_with_dropped", f"round completes with n - t = "
         f"{report['clients'] - report['threshold']} absent at decryption "
         f"({len(report['dropped_at_decrypt'])} absent this run)")
