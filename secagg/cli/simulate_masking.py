"""``secagg simulate masking``: one whole SecAgg/SecAgg+ round in memory, with dropouts."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "run one masking round (SecAgg/SecAgg+) in memory with dropouts at a chosen stage"
DESCRIPTION = """\
Runs one complete secure-aggregation round with the real client and server state machines and
the real wire encoding (no network): N clients each mask a random update of M parameters, a
fraction of them vanish at the chosen stage, and the server unmasks the sum of the survivors.

It then checks the result against the plaintext sum of the survivors' quantised updates
('exact': bit-for-bit equality), and prints what the server saw and what it cost.

Stages a client can drop at:
  advertise      before sending its keys: it is simply left out
  share          after its keys, before its shares: left out, nobody masks with it
  masked-input   after sharing, before uploading: its pairwise masks are recovered from shares
  consistency    (--active only) after uploading, before signing the survivor set
  unmask         after uploading, before revealing shares: its input is still in the sum
  random         each dropping client at a random stage

The neighbour graph and threshold are chosen from --clients, --dropout and --corrupt-rate
(never by hand, unless you pass --neighbours/--threshold to override them).

The round runs in active (malicious-server) mode by default: each simulated enterprise holds an
identity pinned in a roster, adverts and the survivor set are signed, the graph comes from the
roster and every check is made per neighbourhood. --passive runs the honest-but-curious protocol
instead (a server that deviates can read an update there: for experiments only).

Adversaries (--adversary NAME): the round is played against a malicious server or enterprise
and the report says whether the attack learned or changed an honest input (attack_succeeded),
whether the honest clients got the correct sum or refused cleanly (honest_completed), which
check stopped it (detected_by) and whether the released sum is exact. No random dropouts are
simulated then: the adversary decides who drops. --insecure-positive-control switches the
targeted defence off, to show the same attack succeeding.
  swap-keys           the server swaps the victim's view of its peers' keys for its own
  rig-graph           the server shows the victim only its colluders, making them its neighbours
  tailored-survivors  the server tells each client a different survivor set
  split-survivors     tailored survivor sets, each signed by a group of t clients
  low-order-key       an enterprise advertises an all-zero X25519 key
  garbage-shares      an enterprise sends random bytes as its sealed shares

examples:
  secagg simulate masking --clients 20 --params 100000 --dropout 0.2 --stage random --seed 1
  secagg simulate masking --clients 40 --params 2000 --graph sparse --adversary split-survivors \\
      --json out.json
"""

STAGES = ("advertise", "share", "masked-input", "consistency", "unmask", "random")
ADVERSARY_NAMES = ("swap-keys", "rig-graph", "tailored-survivors", "split-survivors",
                   "low-order-key", "garbage-shares", "lying-holders",
                   "inconsistent-dealer")  # secagg.masking.adversary.ADVERSARIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=10, help="number of clients (default 10)")
    parser.add_argument("--params", type=int, default=100_000,
                        help="parameters per update (default 100000)")
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="fraction of clients that drop (default 0.1)")
    parser.add_argument("--stage", choices=STAGES, default="random",
                        help="stage at which they drop (default random)")
    parser.add_argument("--seed", type=int, default=0, help="seed for updates and dropouts")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--active", action="store_true",
                      help="active (malicious-server) mode: the default; kept for old scripts")
    mode.add_argument("--passive", action="store_true",
                      help="honest-but-curious protocol (no roster, no consistency round): "
                           "insecure against a deviating server, for experiments only")
    parser.add_argument("--graph", choices=("auto", "full", "sparse"), default="auto",
                        help="auto: the parameter finder's choice; full: SecAgg's complete "
                             "graph; sparse: insist on a SecAgg+ graph (default auto)")
    parser.add_argument("--adversary", choices=ADVERSARY_NAMES, default=None,
                        help="play a named attack (see above) instead of random dropouts")
    parser.add_argument("--victim", type=int, default=0, help="the attacked client (default 0)")
    parser.add_argument("--insecure-positive-control", action="store_true",
                        help="with --adversary: switch the targeted defence off (the attack "
                             "should then succeed)")
    parser.add_argument("--corrupt-rate", type=float, default=0.05,
                        help="fraction of clients assumed to collude with the server (0.05)")
    parser.add_argument("--value-bits", type=int, default=16,
                        help="fixed-point bits per value (default 16)")
    parser.add_argument("--clip", type=float, default=1.0, help="L-inf clipping range (1.0)")
    parser.add_argument("--neighbours", type=int, default=None, help="override graph degree k")
    parser.add_argument("--threshold", type=int, default=None, help="override threshold t")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")


def run(args: argparse.Namespace) -> int:
    import warnings

    import numpy as np

    from secagg.cli._checks import check_range
    from secagg.cli._output import print_table, write_json
    from secagg.errors import InvalidParameter
    from secagg.masking import MaskingConfig, plan_dropouts, simulate_round
    from secagg.masking.simulate import insecure_simulated_federation

    active = not args.passive
    if args.stage == "consistency" and not active:
        raise InvalidParameter("--stage consistency exists only in active mode; drop --passive")
    if args.insecure_positive_control and args.adversary is None:
        raise InvalidParameter("--insecure-positive-control needs --adversary NAME")
    if args.adversary is not None and args.passive:
        raise InvalidParameter("--adversary attacks the active (malicious-server) mode; drop "
                               "--passive (use --insecure-positive-control to see the attack "
                               "against weaker defences)")
    check_range("--clients", args.clients, low=2)
    check_range("--params", args.params, low=1)
    check_range("--dropout", args.dropout, low=0, high=1, high_inclusive=False)
    check_range("--value-bits", args.value_bits, low=1, high=30)
    check_range("--clip", args.clip, low=1e-12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = MaskingConfig.create(
            num_clients=args.clients, vector_length=args.params, clip=args.clip,
            value_bits=args.value_bits, dropout_rate=max(args.dropout, 0.01),
            corrupt_rate=args.corrupt_rate, active=active,
            roster=insecure_simulated_federation(args.clients)[0] if active else None,
            full_graph=args.graph == "full", sparse_graph=args.graph == "sparse",
            neighbours=args.neighbours, threshold=args.threshold, round=1,
        )
    for w in caught:
        print(f"note: {w.message}")
    rng = np.random.default_rng(args.seed)
    updates = [rng.normal(0.0, 0.05, args.params).astype(np.float32) for _ in range(args.clients)]
    check_range("--victim", args.victim, low=0, high=args.clients - 1)
    if args.adversary is not None:
        return _run_adversary(args, config, updates, rng)
    drops = plan_dropouts(args.clients, args.dropout, args.stage, active=active, rng=rng)
    result = simulate_round(config, updates, dropouts=drops, rng=rng)

    by_stage: dict[str, int] = {}
    for s in drops.values():
        by_stage[s.value] = by_stage.get(s.value, 0) + 1
    survivors = len(result.expected_survivors)
    client_ms = 1e3 * float(np.mean([result.client_seconds[i] for i in result.expected_survivors]
                                    or [0.0]))
    report: dict[str, Any] = {
        "exact": result.exact,
        "survivors": survivors,
        "threshold": config.threshold,
        "neighbours": config.neighbours,
        "clients": args.clients,
        "params": args.params,
        "active": active,
        "dropped": by_stage,
        "mod_bits": config.mod_bits,
        "upload_bytes_per_param": result.masked_input_bytes / args.params,
        "client_ms": client_ms,
        "server_ms": 1e3 * sum(result.server_seconds.values()),
        "error": result.error,
    }
    if result.aggregate is not None:
        truth = np.mean([updates[i] for i in result.expected_survivors], axis=0)
        report["max_abs_error_vs_float_mean"] = float(np.max(np.abs(result.aggregate.mean() - truth)))

    graph = "full (SecAgg)" if config.full_graph else f"Harary k={config.neighbours} (SecAgg+)"
    rows: list[list[Any]] = [
        ["clients / params", f"{args.clients} / {args.params}"],
        ["graph / threshold", f"{graph} / t={config.threshold}"],
        ["dropped", ", ".join(f"{v} at {k}" for k, v in sorted(by_stage.items())) or "none"],
        ["survivors in the sum", survivors],
        ["server saw", f"public keys, sealed shares, masked vectors at {config.mod_bits} bits"],
        ["upload per param", f"{report['upload_bytes_per_param']:.3f} bytes"],
        ["client / server compute", f"{client_ms:.1f} ms / {report['server_ms']:.1f} ms"],
    ]
    if result.error:
        rows.append(["result", f"round failed: {result.error}"])
    else:
        rows.append(["exact (== plaintext sum)", result.exact])
        rows.append(["max error vs float mean", f"{report['max_abs_error_vs_float_mean']:.2e}"])
    print_table(rows, header=["masking round", "value"])
    if args.json:
        write_json(args.json, report)
    if result.error:
        return 3
    return 0 if result.exact else 1


def _run_adversary(args: argparse.Namespace, config: Any, updates: Any, rng: Any) -> int:
    from secagg.cli._output import print_table, write_json
    from secagg.masking.adversary import ADVERSARIES, run_adversary

    report = run_adversary(args.adversary, config, updates, victim=args.victim,
                           insecure=args.insecure_positive_control, rng=rng)
    out = report.to_dict()
    out.update(clients=args.clients, params=args.params, neighbours=config.neighbours,
               threshold=config.threshold, graph="full" if config.full_graph else "sparse")
    first_abort = next(iter(report.aborts.values()), None) or \
        next(iter(report.refused.values()), None)
    rows: list[list[Any]] = [
        ["adversary", f"{args.adversary}: {ADVERSARIES[args.adversary]}"],
        ["defences", "OFF (positive control)" if report.insecure else "on"],
        ["graph / threshold", f"{out['graph']} k={config.neighbours} / t={config.threshold}"],
        ["attack succeeded", report.attack_succeeded],
        ["honest clients completed (or refused cleanly)", report.honest_completed],
        ["detected by", report.detected_by or "-"],
        ["first refusal", (first_abort or "-")[:100]],
        ["released sum exact", report.exact],
    ]
    print_table(rows, header=["attack", "outcome"])
    if args.json:
        write_json(args.json, out)
    if report.insecure:
        return 0
    return 0 if not report.attack_succeeded and report.honest_completed else 1
