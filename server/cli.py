"""``secagg-server``: run the service, and the operator's offline commands.

    secagg-server --host 127.0.0.1 --port 8443 --data ./srv [--tls-cert F --tls-key F]
    secagg-server federation create --data ./srv --name city --clients 3 [--json]
    secagg-server federation list --data ./srv
    secagg-server inspect --data ./srv [--json]

``federation create`` prints the operator token and one token per client exactly once; only
their SHA-256 is stored, so a lost token means enrolling again. It writes straight to the store
and can run while the server is up (SQLite WAL allows it; the server reads tokens per request).
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="secagg-server", description="The secagg aggregation "
                                "server (untrusted: it sees masked vectors or ciphertexts only).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the HTTP service (the default command)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--data", required=True, help="data directory (SQLite store, blobs)")
    serve.add_argument("--tls-cert", help="PEM certificate chain (enables HTTPS)")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--allow-plain", action="store_true",
                       help="also accept unprotected 'plain' rounds (benchmarks only)")
    serve.add_argument("--log-level", default="warning",
                       choices=("debug", "info", "warning", "error"))
    fed = sub.add_parser("federation", help="create or list federations (operator)")
    fsub = fed.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = fsub.add_parser("create", help="create a federation and print its tokens")
    create.add_argument("--data", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--clients", type=int, required=True, help="number of enterprises")
    create.add_argument("--json", action="store_true", help="print the tokens as JSON")
    listing = fsub.add_parser("list", help="list federations")
    listing.add_argument("--data", required=True)
    inspect = sub.add_parser("inspect", help="what the store holds, round by round (operator, "
                             "auditors)", description="Summarises the data directory without "
                             "the server running: per round, the messages received (kind, stage, "
                             "sizes), whether any message body is still stored, and the released "
                             "result's size. Message bodies are erased when a round ends.")
    inspect.add_argument("--data", required=True)
    inspect.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "serve")
    args = _parser().parse_args(args_list)
    if args.command == "federation":
        return _federation(args)
    if args.command == "inspect":
        return _inspect(args)
    return _serve(args)


def _inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from server.store import Store

    if not (Path(args.data) / "secagg-server.sqlite3").is_file():
        print(f"secagg-server: error: {args.data!r} is not a server data directory",
              file=sys.stderr)
        return 2
    store = Store(args.data)
    try:
        summary = store.summary()
    finally:
        store.close()
    if args.json:
        print(json.dumps(summary))
        return 0
    for r in summary["rounds"]:
        stages = ", ".join(f"{s['stage']}: {s['messages']} msgs {s['bytes']} B"
                           for s in r["stages"])
        print(f"round {r['index']} ({r['mode']}, {r['status']}): {stages}; bodies still stored: "
              f"{r['bodies_stored']}; result {r['result_bytes']} B")
    return 0


def _federation(args: argparse.Namespace) -> int:
    from server.store import Store

    if args.action == "create" and args.clients < 2:  # before the store creates --data
        print("secagg-server: error: --clients must be >= 2 (secure aggregation needs at "
              "least two enterprises)", file=sys.stderr)
        return 2
    store = Store(args.data)
    try:
        if args.action == "list":
            for fed in store.federations():
                print(f"{fed['name']}\t{fed['clients']} clients")
            return 0
        try:
            operator, clients = store.create_federation(args.name, args.clients)
        except sqlite3.IntegrityError:
            print(f"secagg-server: error: federation {args.name!r} already exists",
                  file=sys.stderr)
            return 2
    finally:
        store.close()
    if args.json:
        print(json.dumps({"federation": args.name, "operator_token": operator,
                          "client_tokens": clients}))
    else:
        print(f"federation {args.name!r}: {args.clients} clients. Tokens are shown once; "
              "hand each to its enterprise over a secure channel.")
        print(f"operator\t{operator}")
        for i, token in enumerate(clients):
            print(f"client {i}\t{token}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app

    if bool(args.tls_cert) != bool(args.tls_key):
        print("secagg-server: error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(args.data, allow_plain=args.allow_plain)
    uvicorn.run(app, host=args.host, port=args.port, ssl_certfile=args.tls_cert,
                ssl_keyfile=args.tls_key, log_level=args.log_level, access_log=False)
    return 0
