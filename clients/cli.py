"""``secagg-client``: one enterprise takes part in rounds on a secagg server.

Until the DP-LoRA trainer is wired in, the update is read from a ``.npy`` file or drawn at random
(``--random``, sized from each round's config), which is what ``secagg bench e2e`` runs.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

HELP = "take part in aggregation rounds on a secagg server"
DESCRIPTION = """\
Connects to a secagg server with this enterprise's bearer token, waits for rounds, runs the
protocol the round asks for (masking; plain only on servers started with --allow-plain), and
prints each released aggregate's summary. A client that restarts mid-round is a dropout for that
round and joins the next: round secrets never touch disk.

The token is read from --token-file or the SECAGG_TOKEN environment variable (or --token, which
other local users may see in the process list).

examples:
  SECAGG_TOKEN=sat_... secagg-client --server https://agg:8443 --ca-cert ca.pem --update u.npy
  secagg-client --server http://127.0.0.1:8443 --token-file tok --random --rounds 3 --out mean.npy
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="server URL, e.g. https://host:8443")
    parser.add_argument("--token", help="bearer token (prefer --token-file or SECAGG_TOKEN)")
    parser.add_argument("--token-file", help="file holding the bearer token")
    parser.add_argument("--ca-cert", help="CA bundle to verify the server's TLS certificate")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--update", metavar="NPY", help="float32 update vector (.npy)")
    src.add_argument("--random", action="store_true", help="a random update per round (testing)")
    parser.add_argument("--scale", type=float, default=0.1, help="std of --random updates (0.1)")
    parser.add_argument("--weight", type=int, default=1, help="this client's weight (1)")
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


def run(args: argparse.Namespace) -> int:
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
