"""``secagg simulate ckks``: one whole CKKS round in memory, with the real client/server objects."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "run one CKKS (homomorphic encryption) round in memory: key ceremony, sum, safe release"
DESCRIPTION = """\
Runs one complete CKKS aggregation round with the real client and server objects and the real
wire bytes (no network): the clients run the key ceremony (a client deals the key, sealed to the
others through the server), each encrypts a weighted random update of M parameters, some drop
out, the server checks and sums the ciphertexts from public material only, and one client
decrypts the aggregate and releases it rounded to the preset's grid.

It checks the release against the numpy weighted sum of the survivors and prints sizes, timings
(including the client's upload sketch and aggregate check) and the error the preset promises.

With --adversary NAME the round is played with a malicious party instead (see
secagg.ckks.adversary), and the report says whether the attack succeeded, whether every honest
client got the correct sum or refused cleanly, and which check stopped it:

  swap-keys        the server substitutes its own X25519 key for a peer's in the key ceremony
  forge-aggregate  the server passes one client's upload (summed with itself) off as the aggregate
  low-order-key    an enterprise advertises a low-order X25519 key
  garbage-shares   an enterprise uploads garbage ciphertexts under its own valid signature

The exit code is 0 when the attack failed and the honest clients completed, 1 otherwise.

presets:
  compact   N=8192, one 60-bit prime, scale 2^40: ~2.0x float32, error <= 2^-20
  precise   N=8192, 60+60 bits (+60 special), scale 2^60: ~4.0x float32, error <= 2^-32

examples:
  secagg simulate ckks --clients 10 --params 100000 --dropout 0.2 --weighted
  secagg simulate ckks --clients 5 --params 20000 --adversary swap-keys --json out.json
"""

ADVERSARIES = ("swap-keys", "forge-aggregate", "low-order-key", "garbage-shares")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=10, help="number of clients (default 10)")
    parser.add_argument("--params", type=int, default=100_000, help="parameters per update (default 100000)")
    parser.add_argument(
        "--preset",
        choices=("compact", "precise"),
        default="compact",
        help="CKKS parameter preset (default compact)",
    )
    parser.add_argument(
        "--dropout", type=float, default=0.0, help="fraction of clients that never upload (default 0)"
    )
    parser.add_argument(
        "--weighted", action="store_true", help="weight each client by a random example count in 1..8"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for updates and dropouts")
    parser.add_argument(
        "--adversary",
        choices=ADVERSARIES,
        help="play the round with this attack (a malicious server or enterprise) and report it",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from secagg.ckks.presets import Preset
    from secagg.ckks.simulate import make_config, run_round
    from secagg.cli._output import print_table, write_json
    from secagg.encoding.clipping import clip_linf
    from secagg.errors import InvalidParameter

    if args.clients < 2:
        raise InvalidParameter(f"--clients must be >= 2, found {args.clients}")
    if args.params < 1:
        raise InvalidParameter(f"--params must be >= 1, found {args.params}")
    if not 0 <= args.dropout < 1:
        raise InvalidParameter(f"--dropout must be in [0, 1), found {args.dropout}")
    if args.seed < 0:
        raise InvalidParameter(f"--seed must be >= 0, found {args.seed}")
    if args.adversary:
        return _adversary(args)
    params = Preset.from_name(args.preset).params
    rng = np.random.default_rng(args.seed)  # simulation data, not secret
    config = make_config(
        params, update_size=args.params, num_clients=args.clients, value_bound=1.0, weight_bound=8.0
    )
    updates = {
        i: clip_linf(rng.normal(0, 0.05, args.params).astype(np.float32), config.value_bound)
        for i in config.client_ids
    }
    weights = {i: float(rng.integers(1, 9)) if args.weighted else 1.0 for i in config.client_ids}
    n_drop = min(round(args.dropout * args.clients), args.clients - config.min_clients)
    candidates = [i for i in config.client_ids if i != config.dealer]
    drop = sorted(int(i) for i in rng.choice(candidates, size=n_drop, replace=False))
    result = run_round(config, updates, weights=weights, drop=drop)

    kept = [i for i in config.client_ids if i not in drop]
    expected = sum(weights[i] * updates[i].astype(np.float64) for i in kept)
    error = float(np.max(np.abs(result.release.weighted_sum - np.asarray(expected))))
    upload = float(np.mean(list(result.upload_bytes.values())))
    report: dict[str, Any] = {
        "clients": args.clients,
        "params": args.params,
        "preset": params.describe(),
        "dropped": drop,
        "contributors": list(result.release.contributors),
        "bytes_per_param_ratio": upload / (4 * args.params),
        "upload_bytes": int(upload),
        "aggregate_bytes": result.aggregate_bytes,
        "key_ceremony_s": result.ceremony_s,
        "client_encrypt_s": float(np.mean(list(result.client_encrypt_s.values()))),
        "client_sketch_s": float(np.mean(list(result.client_sketch_s.values()))),
        "server_sum_s": result.server_sum_s,
        "client_decrypt_s": result.client_decrypt_s,
        "client_verify_aggregate_s": result.client_verify_s,
        "max_abs_error": error,
        "promised_max_abs_error": params.release_quantum,
        "total_weight": result.release.total_weight,
        "ok": error <= params.release_quantum,
    }
    print(f"CKKS round: {params.describe()}")
    print_table(
        [
            ["contributors", f"{len(kept)} of {args.clients} (dropped: {drop or 'none'})"],
            ["upload per client", f"{upload / 1e6:.2f} MB ({report['bytes_per_param_ratio']:.3f}x float32)"],
            ["key ceremony", f"{result.ceremony_s:.3f} s"],
            ["client encrypt + sketch (mean)",
             f"{report['client_encrypt_s']:.3f} s (sketch {report['client_sketch_s']:.3f} s)"],
            ["server check + sum", f"{result.server_sum_s:.3f} s"],
            ["client decrypt + release",
             f"{result.client_decrypt_s:.3f} s (verify {result.client_verify_s:.3f} s)"],
            ["max |error| of weighted sum", f"{error:.3g} (promised <= {params.release_quantum:.3g})"],
        ],
        header=["", "value"],
    )
    if args.json:
        write_json(args.json, report)
    return 0 if report["ok"] else 1


def _adversary(args: argparse.Namespace) -> int:
    from secagg.ckks.adversary import run_attack
    from secagg.cli._output import print_table, write_json
    from secagg.errors import InvalidParameter

    if args.clients < 3:
        raise InvalidParameter(f"--clients must be >= 3 with --adversary, found {args.clients}")
    report = run_attack(args.adversary, clients=args.clients, params=args.params, preset=args.preset,
                        seed=args.seed)
    data = report.to_dict()
    print(f"CKKS round under attack: {report.adversary} ({report.variant}), {report.clients} clients, "
          f"{report.params} params")
    print_table(
        [
            ["attack succeeded", str(report.attack_succeeded).lower()],
            ["honest clients completed", str(report.honest_completed).lower()],
            ["detected by", report.detected_by or "-"],
            ["exact (honest release = plaintext sum)",
             "-" if report.exact is None else str(report.exact).lower()],
            ["what happened", report.detail],
            *([["round ended", report.round_ended]] if report.round_ended else []),
        ],
        header=["", "value"],
    )
    if args.json:
        write_json(args.json, data)
    return 0 if not report.attack_succeeded and report.honest_completed else 1
