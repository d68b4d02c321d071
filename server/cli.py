"""``secagg-server``: run the service, and the operator's offline commands.

    secagg-server --host 127.0.0.1 --port 8443 --data ./srv [--tls-cert F --tls-key F]
    (plain HTTP off the loopback is refused unless --insecure-http; see secagg_server.app.serve)
    secagg-server federation create --data ./srv --name city --roster roster.json [--json]
    secagg-server federation list --data ./srv
    secagg-server inspect --data ./srv [--json]

``federation create`` registers the federation with its roster (the enterprises' public
identity keys, assembled by them with ``secagg-client roster create``; the server never sees a
private identity key) and prints the operator token and one token per roster member exactly
once; only their SHA-256 is stored, so a lost token means enrolling again. It writes straight to the store
and can run while the server is up (SQLite WAL allows it; the server reads tokens per request).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

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
    serve.add_argument("--insecure-http", action="store_true",
                       help="allow plain HTTP on a non-loopback --host (only behind a TLS proxy "
                       "or an encrypted network: tokens travel in headers)")
    serve.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                       help="a request's line and headers must arrive within S seconds "
                       "(default 10)")
    serve.add_argument("--body-timeout", type=float, default=10.0, metavar="S",
                       help="a request body must start within S seconds (default 10)")
    serve.add_argument("--min-body-rate", type=int, default=16384, metavar="BYTES",
                       help="...and then arrive at BYTES per second on average (default 16384)")
    serve.add_argument("--allow-plain", action="store_true",
                       help="also accept unprotected 'plain' rounds (benchmarks only)")
    serve.add_argument("--log-level", default="warning",
                       choices=("debug", "info", "warning", "error"))
    fed = sub.add_parser("federation", help="create or list federations (operator)")
    fsub = fed.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = fsub.add_parser(
        "create", help="create a federation from its roster and print its tokens",
        description="Registers a federation with the roster its enterprises assembled "
        "(`secagg-client roster create`) and compared (`secagg-client roster show`). Masking "
        "rounds are bound to this roster: every client checks each peer's signed keys against "
        "the roster it pinned itself, so the server cannot add, drop or swap a member. One "
        "client token per roster member id (0..n-1).")
    create.add_argument("--data", required=True)
    create.add_argument("--name", required=True, help="the federation's name; must be the "
                        "roster's federation name")
    create.add_argument("--roster", required=True, metavar="JSON",
                        help="the federation's roster file (public keys only)")
    create.add_argument("--clients", type=int, help="optional check: the number of enterprises "
                        "(must equal the roster's size)")
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
    from .store import DataDirError

    try:
        if args.command == "federation":
            return _federation(args)
        if args.command == "inspect":
            return _inspect(args)
        return _serve(args)
    except DataDirError as exc:  # an unsafe or unusable --data: one line, what to do
        print(f"secagg-server: error: {exc}", file=sys.stderr)
        return 2


def _inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .store import Store

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
    from .store import Store

    roster = None
    if args.action == "create":  # checked before the store creates --data
        roster, why = _load_roster(args)
        if roster is None:
            print(f"secagg-server: error: {why}", file=sys.stderr)
            return 2
    store = Store(args.data)
    try:
        if args.action == "list":
            for fed in store.federations():
                fid = store.federation_id(fed["name"])
                pinned = None if fid is None else store.roster(fid)
                digest = _roster_digest(pinned) if pinned else "no roster"
                print(f"{fed['name']}\t{fed['clients']} clients\troster {digest}")
            return 0
        assert roster is not None
        try:
            operator, clients = store.create_federation(args.name, len(roster),
                                                        roster.to_dict())
        except sqlite3.IntegrityError:
            print(f"secagg-server: error: federation {args.name!r} already exists",
                  file=sys.stderr)
            return 2
    finally:
        store.close()
    if args.json:
        print(json.dumps({"federation": args.name, "operator_token": operator,
                          "client_tokens": clients, "roster_digest": roster.digest().hex()}))
    else:
        print(f"federation {args.name!r}: {len(roster)} clients, roster digest "
              f"{roster.digest().hex()}. Tokens are shown once; hand each to its enterprise "
              "over a secure channel.")
        print(f"operator\t{operator}")
        for i, token in enumerate(clients):
            member = roster.member(i)
            print(f"client {i}\t{token}\t{member.name} {member.fingerprint}")
    return 0


def _load_roster(args: argparse.Namespace) -> tuple[Any, str]:
    """(the roster, "") if ``--roster`` fits ``--name`` and ``--clients``; else (None, why)."""
    from secagg.errors import InvalidParameter
    from secagg.identity import Roster

    try:
        roster = Roster.load(args.roster)
    except InvalidParameter as exc:
        return None, f"{exc} (assemble it with `secagg-client roster create`)"
    if roster.federation != args.name:
        return None, (f"--name is {args.name!r} but roster {args.roster} is for federation "
                      f"{roster.federation!r}; use the roster's name or assemble the roster again")
    if args.clients is not None and args.clients != len(roster):
        return None, (f"--clients {args.clients} does not match the roster's {len(roster)} "
                      "members (leave --clients out: the roster decides)")
    if sorted(roster.ids) != list(range(len(roster))):
        return None, (f"roster ids must be 0..{len(roster) - 1} (the service numbers its clients "
                      f"so), found {list(roster.ids)}; `secagg-client roster create` numbers "
                      "members in argument order")
    return roster, ""


def _roster_digest(data: dict[str, Any]) -> str:
    from secagg.errors import InvalidParameter
    from secagg.identity import Roster

    try:
        return Roster.from_dict(data).digest().hex()
    except InvalidParameter:
        return "unreadable roster"


def _serve(args: argparse.Namespace) -> int:
    from .app import Limits, serve

    try:
        limits = Limits(header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                        body_min_rate=args.min_body_rate)
    except ValueError as exc:
        print(f"secagg-server: error: bad --header-timeout, --body-timeout or --min-body-rate: "
              f"{exc}", file=sys.stderr)
        return 2
    return serve(args.data, host=args.host, port=args.port, tls_cert=args.tls_cert,
                 tls_key=args.tls_key, insecure_http=args.insecure_http,
                 allow_plain=args.allow_plain, log_level=args.log_level, limits=limits)
