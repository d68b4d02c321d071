"""``secagg-client``: one enterprise takes part in rounds on a secagg server.

With ``--data`` / ``--enterprise`` it trains the enterprise model with DP-LoRA each round
(:class:`clients.federated.FederatedEnterprise`); with ``--update`` / ``--random`` it sends a
fixed or random vector (what ``secagg bench e2e`` runs: protection cost without training).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

HELP = "take part in aggregation rounds on a secagg server"
DESCRIPTION = """\
Connects to a secagg server with this enterprise's bearer token, waits for rounds, runs the
protocol the round asks for (masking or ckks; plain only on servers started with --allow-plain),
and applies each released aggregate.

With --data (your CSV/JSONL records: text, sensor readings, label) or --enterprise (a dataset
shipped with secagg), each round trains the model with DP-SGD (Opacus, secure noise) on LoRA
adapters and the head, within the --epsilon budget kept in the --ledger file; the released mean
update is applied, so every enterprise ends with the same combined model. --state-dir makes the
client resumable: after a restart it reloads the combined model and the rounds it has left. A
round interrupted by the restart is dropped (round secrets never touch disk).

The token is read from --token-file or the SECAGG_TOKEN environment variable (or --token, which
other local users may see in the process list).

examples:
  SECAGG_TOKEN=sat_... secagg-client --server https://agg:8443 --ca-cert ca.pem \\
      --data incidents.csv --name energy --ledger energy.ledger.json --epsilon 8 --rounds 5
  secagg-client --server http://127.0.0.1:8443 --token-file tok --enterprise energy_utility \\
      --ledger /tmp/e.json --rounds 2 --state-dir /tmp/e-state
  secagg-client --server http://127.0.0.1:8443 --token-file tok --random --rounds 3 --out mean.npy
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="server URL, e.g. https://host:8443")
    parser.add_argument("--token", help="bearer token (prefer --token-file or SECAGG_TOKEN)")
    parser.add_argument("--token-file", help="file holding the bearer token")
    parser.add_argument("--ca-cert", help="CA bundle to verify the server's TLS certificate")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE", help="train on these records (.csv or .jsonl)")
    src.add_argument("--enterprise", choices=("energy_utility", "residential_security",
                                              "city_operations"),
                     help="train on a dataset shipped with secagg (demo)")
    src.add_argument("--update", metavar="NPY", help="send this float32 vector (.npy), no training")
    src.add_argument("--random", action="store_true", help="send a random vector (benchmarks)")
    train = parser.add_argument_group("training (with --data / --enterprise)")
    train.add_argument("--name", help="enterprise name in the ledger (default: the file's stem)")
    train.add_argument("--ledger", metavar="JSON", help="privacy ledger file (required to train)")
    train.add_argument("--epsilon", type=float, default=8.0,
                       help="total privacy budget over all rounds (8); delta 1e-5")
    train.add_argument("--epochs", type=int, default=10, help="local DP-SGD epochs per round (10)")
    train.add_argument("--encoder", choices=("minilm", "test_only_tiny"), default="minilm",
                       help="text encoder (minilm: all-MiniLM-L6-v2 from its wheel)")
    train.add_argument("--state-dir", help="save the combined model here after each round "
                       "(resumable)")
    train.add_argument("--audit-dir", help="DEMO/AUDIT ONLY: also write each plaintext update "
                       "here (this machine's disk)")
    train.add_argument("--threads", type=int, default=None, help="torch threads")
    train.add_argument("--events", action="store_true",
                       help="print one JSON line per event (for orchestrators)")
    parser.add_argument("--scale", type=float, default=0.1, help="std of --random updates (0.1)")
    parser.add_argument("--weight", type=int, default=1, help="this client's weight (1); at most "
                        "the round's max_weight (masking) / weight_bound (ckks)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds to take part in (1)")
    parser.add_argument("--seed", type=int, default=None, help="seed for --random")
    parser.add_argument("--out", metavar="NPY", help="write the last released mean here")
    parser.add_argument("--json", metavar="PATH", help="write a per-round report as JSON")
    parser.add_argument("--poll-wait", type=float, default=20.0, help=argparse.SUPPRESS)


def _token(args: argparse.Namespace) -> str:
    from secagg.errors import InvalidParameter

    if args.token_file:
        with open(args.token_file) as f:
            return f.read().strip()
    token = args.token or os.environ.get("SECAGG_TOKEN", "")
    if not token:
        raise InvalidParameter("no token: pass --token-file, set SECAGG_TOKEN, or pass --token")
    return str(token)


def _train_and_aggregate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clients.data import enterprise_path
    from clients.federated import FederatedEnterprise, FederationPlan, print_event
    from clients.model import EncoderKind
    from secagg.cli._output import write_json
    from secagg.errors import InvalidParameter

    if not args.ledger:
        raise InvalidParameter("training needs --ledger FILE (the privacy ledger that keeps this "
                               "enterprise's budget across runs)")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    data = Path(args.data) if args.data else enterprise_path(args.enterprise)
    name = args.name or args.enterprise or data.stem
    plan = FederationPlan(rounds=args.rounds, budget_epsilon=args.epsilon, epochs=args.epochs,
                          encoder=EncoderKind.parse(args.encoder), weight=args.weight)

    def human(kind: str, d: dict[str, Any]) -> None:
        if kind == "ready":
            print(f"client {d['client_id']} of federation {d['federation']!r}: {name}, "
                  f"{d['dimension']} trainable parameters, start accuracy {d['accuracy']:.3f}",
                  flush=True)
        elif kind == "trained":
            print(f"trained for round {d['round'] + 1}: local accuracy {d['local_accuracy']:.3f}, "
                  f"epsilon spent {d['epsilon']:.3f}", flush=True)
        elif kind == "round":
            print(f"round {d['round']} ({d['mode']}): aggregate of {len(d['survivors'])} clients, "
                  f"combined-model accuracy {d['accuracy']:.3f}", flush=True)
        elif kind == "dropped":
            print(f"round {d['round']}: dropped ({d['reason']})", flush=True)

    with FederatedEnterprise.connect(args.server, _token(args), data=data, name=name,
                                     ledger=args.ledger, plan=plan,
                                     verify=args.ca_cert or True, audit_dir=args.audit_dir,
                                     state_dir=args.state_dir,
                                     on_event=print_event if args.events else human) as ent:
        report = ent.run(progress=not args.events)
    if args.json:
        write_json(args.json, report.to_dict())
    return 0


def run(args: argparse.Namespace) -> int:
    if args.data or args.enterprise:
        return _train_and_aggregate(args)
    import numpy as np

    from clients.runtime import Dropped, RuntimeClient
    from secagg.cli._output import write_json

    rng = np.random.default_rng(args.seed)
    fixed = None if args.update is None else np.load(args.update).astype(np.float32).ravel()
    verify: bool | str = args.ca_cert or True
    report: dict[str, Any] = {"rounds": []}
    after = -1
    with RuntimeClient(args.server, _token(args), verify=verify, poll_wait=args.poll_wait) as rt:
        me = rt.whoami()
        print(f"client {me['client_id']} of federation {me['federation']!r}", flush=True)
        for _ in range(args.rounds):
            info = rt.wait_for_round(after)
            after = info.index
            n = int(info.config["vector_length"])
            update = fixed if fixed is not None else \
                (rng.standard_normal(n, dtype=np.float32) * np.float32(args.scale))
            try:
                res = rt.take_part(info, update, args.weight)
            except Dropped as exc:
                print(f"round {info.index}: dropped ({exc}); waiting for the next round", flush=True)
                report["rounds"].append({"index": info.index, "mode": info.mode, "dropped": True})
                continue
            print(f"round {info.index} ({info.mode}): aggregate of {len(res.survivors)} clients, "
                  f"total weight {res.total_weight}, |mean|_2 = {np.linalg.norm(res.mean):.4g}",
                  flush=True)
            report["rounds"].append({
                "index": info.index, "round_id": info.round_id, "mode": info.mode,
                "dropped": False, "survivors": list(res.survivors),
                "total_weight": res.total_weight, "received_at": res.received_at,
            })
            if args.out:
                np.save(args.out, res.mean)
    if args.json:
        write_json(args.json, report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``secagg-client`` console script (kept out of ``secagg``'s CLI so the
    protocol package never imports the client side)."""
    import sys

    from clients.runtime import ServerRefused
    from secagg.errors import SecAggError

    parser = argparse.ArgumentParser(prog="secagg-client", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (SecAggError, ServerRefused, ConnectionError) as exc:  # a bad token, an unreachable server
        print(f"secagg-client: error: {exc}", file=sys.stderr)
        return 2
