"""``secagg-server``: run the service, and the operator's offline commands.

    secagg-server --host 127.0.0.1 --port 8443 --data ./srv [--tls-cert F --tls-key F]
    (plain HTTP off the loopback is refused unless --insecure-http; see secagg_server.app.serve)
    secagg-server federation create --data ./srv --name city --roster roster.json [--json]
    secagg-server federation list --data ./srv
    secagg-server federation readmit --data ./srv --federation city --client 3 [--reason TEXT]
    secagg-server inspect --data ./srv [--json]
    secagg-server round open --mode masking --from-model DIR [--option k=v ...] [--json]
    secagg-server round list | show ID | cancel ID   (--server URL --token-file F, see rounds_cli)

Every bad argument, file, port or store is refused with one line naming it (exit 2): numbers
out of range (each numeric option declares its range with ``secagg.cli._checks.number``), a TLS
certificate or key that is missing, unreadable, swapped with the other or not its pair, a port
out of range or already in use, and a store that is not a readable SQLite database. The
operator's commands wait up to 30 s for the running server's write lock; a store still busy
after that is refused as busy ("try again"), not as damaged.

``federation create`` registers the federation with its roster (the enterprises' public
identity keys, assembled by them with ``secagg-client roster create``; the server never sees a
private identity key) and prints the operator token and one token per roster member exactly
once; only their SHA-256 is stored, so a lost token means enrolling again. It writes straight to the store
and can run while the server is up (SQLite WAL allows it; the server reads tokens per request).

``federation readmit`` takes back an enterprise that a failed round named as its culprit (and
that every round opened since has left out): it is recorded in the store (table
``readmissions``, with the operator's reason), and every round the federation opens afterwards
includes the client again; rounds already open keep leaving it out, and the failed round still
names it. A readmitted client named culprit again is left out again. Like ``federation create``
it writes to the store directly (whoever may write ``--data`` is the operator) and works while
the server runs: the server reads the culprits afresh for every round it opens.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


STORE_FILE = "secagg-server.sqlite3"


def _parser() -> argparse.ArgumentParser:
    from secagg.cli._checks import ArgumentParser, name, number

    seconds = number(float, low=0, high=3600, low_open=True, unit="seconds")
    p = ArgumentParser(prog="secagg-server", description="The secagg aggregation server "
                       "(untrusted: it sees masked vectors or ciphertexts only).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the HTTP service (the default command)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=number(int, low=1, high=65535), default=8443,
                       help="TCP port (default 8443)")
    serve.add_argument("--data", required=True, help="data directory (SQLite store, blobs)")
    serve.add_argument("--tls-cert", help="PEM certificate chain (enables HTTPS)")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--insecure-http", action="store_true",
                       help="allow plain HTTP on a non-loopback --host (only behind a TLS proxy "
                       "or an encrypted network: tokens travel in headers)")
    serve.add_argument("--header-timeout", type=seconds, default=10.0, metavar="S",
                       help="a request's line and headers must arrive within S seconds "
                       "(default 10)")
    serve.add_argument("--body-timeout", type=seconds, default=10.0, metavar="S",
                       help="a request body must start within S seconds (default 10)")
    serve.add_argument("--min-body-rate", type=number(int, low=1, high=2**30), default=16384,
                       metavar="BYTES",
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
    create.add_argument("--name", required=True, type=name,
                        help="the federation's name; must be the "
                        "roster's federation name")
    create.add_argument("--roster", required=True, metavar="JSON",
                        help="the federation's roster file (public keys only)")
    create.add_argument("--clients", type=number(int, low=1), help="optional check: the "
                        "number of enterprises "
                        "(must equal the roster's size)")
    create.add_argument("--json", action="store_true", help="print the tokens as JSON")
    listing = fsub.add_parser("list", help="list federations")
    listing.add_argument("--data", required=True)
    readmit = fsub.add_parser(
        "readmit", help="take a left-out culprit back into the federation's next rounds",
        description="A client named as the culprit of a failed round is left out of every "
        "round the federation opens afterwards. Once its enterprise has fixed its software, "
        "readmit it: rounds opened from now on include it (rounds already open still leave it "
        "out). The failed round keeps naming it, and the readmission is stored with --reason. "
        "If a later round names it again, it is left out again. Works while the server runs.")
    readmit.add_argument("--data", required=True)
    readmit.add_argument("--federation", required=True, type=name, metavar="NAME",
                         help="the federation's name")
    readmit.add_argument("--client", required=True, type=number(int, low=0, high=2**31 - 1),
                         metavar="ID", help="the client's id (its roster id, 0..n-1)")
    readmit.add_argument("--reason", metavar="TEXT", help="why it is taken back (stored with "
                         "the readmission, e.g. the fixed version)")
    readmit.add_argument("--json", action="store_true", help="print the readmission as JSON")
    inspect = sub.add_parser("inspect", help="what the store holds, round by round (operator, "
                             "auditors)", description="Summarises the data directory without "
                             "the server running: per round, the messages received (kind, stage, "
                             "sizes), whether any message body is still stored, and the released "
                             "result's size. Message bodies are erased when a round ends.")
    inspect.add_argument("--data", required=True)
    inspect.add_argument("--json", action="store_true", help="print JSON")
    from .rounds_cli import add_round_parser

    add_round_parser(sub)
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
        if args.command == "round":
            from .rounds_cli import run_round_command

            return run_round_command(args)
        return _serve(args)
    except DataDirError as exc:  # an unsafe or unusable --data: one line, what to do
        return _refuse(exc)
    except sqlite3.OperationalError as exc:
        if not _busy(exc):
            return _damaged(args, exc)
        # another connection (the running server) held the write lock past the busy timeout
        return _refuse(f"the store {Path(args.data) / STORE_FILE} is busy (the server, or "
                       f"another command, is writing to it); try again")
    except sqlite3.DatabaseError as exc:  # a damaged store (IntegrityError is handled where due)
        return _damaged(args, exc)


#: SQLite's primary result codes for a database another connection holds
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says the database is locked or busy (not damaged)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return True
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text \
        or "database table is locked" in text


def _damaged(args: argparse.Namespace, exc: sqlite3.DatabaseError) -> int:
    store = Path(args.data) / STORE_FILE
    return _refuse(f"the store {store} is not a readable SQLite database ({exc}); restore it "
                   "from a backup, or move --data aside and create the federation again")


def _refuse(why: object) -> int:
    print(f"secagg-server: error: {why}", file=sys.stderr, flush=True)
    return 2


def _inspect(args: argparse.Namespace) -> int:
    from .store import OPERATOR_BUSY_TIMEOUT, Store

    if not (Path(args.data) / STORE_FILE).is_file():
        print(f"secagg-server: error: {args.data!r} is not a server data directory",
              file=sys.stderr)
        return 2
    store = Store(args.data, busy_timeout=OPERATOR_BUSY_TIMEOUT)
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
    from .store import OPERATOR_BUSY_TIMEOUT, Store

    if args.action == "readmit":
        return _readmit(args)
    roster = None
    if args.action == "create":  # checked before the store creates --data
        roster, why = _load_roster(args)
        if roster is None:
            print(f"secagg-server: error: {why}", file=sys.stderr)
            return 2
    store = Store(args.data, busy_timeout=OPERATOR_BUSY_TIMEOUT)
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


def _readmit(args: argparse.Namespace) -> int:
    from .store import OPERATOR_BUSY_TIMEOUT, NotLeftOut, Store

    if not (Path(args.data) / STORE_FILE).is_file():  # never create a store to readmit into
        return _refuse(f"--data {args.data!r} is not a server data directory (no {STORE_FILE})")
    store = Store(args.data, busy_timeout=OPERATOR_BUSY_TIMEOUT)
    try:
        fid = store.federation_id(args.federation)
        if fid is None:
            names = [f["name"] for f in store.federations()]
            return _refuse(f"--federation {args.federation!r}: no such federation in "
                           f"{args.data} (found: {', '.join(map(repr, names)) or 'none'})")
        size = next(f["clients"] for f in store.federations() if f["name"] == args.federation)
        if not args.client < size:
            return _refuse(f"--client {args.client}: federation {args.federation!r} has no such "
                           f"client (its ids are 0..{size - 1})")
        try:
            done = store.readmit(fid, args.client, args.reason)
        except NotLeftOut as exc:
            left = sorted(store.culprits(fid))
            return _refuse(f"--client {args.client}: {exc}; clients left out of federation "
                           f"{args.federation!r}: {left or 'none'}")
    finally:
        store.close()
    if args.json:
        print(json.dumps({"federation": args.federation, "client": done.client_id,
                          "culprit_of_rounds": list(done.rounds), "next_round": done.next_round,
                          "reason": done.reason, "readmitted": done.created}))
    else:
        print(f"client {done.client_id} readmitted to federation {args.federation!r}: named "
              f"culprit of round(s) {list(done.rounds)}, it takes part in the rounds opened from "
              f"now on (the next is index {done.next_round}); those rounds still record it")
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
        return _refuse(f"bad --header-timeout, --body-timeout or --min-body-rate: {exc}")
    why = tls_problem(args.tls_cert, args.tls_key) or port_problem(args.host, args.port)
    if why:
        return _refuse(why)
    return serve(args.data, host=args.host, port=args.port, tls_cert=args.tls_cert,
                 tls_key=args.tls_key, insecure_http=args.insecure_http,
                 allow_plain=args.allow_plain, log_level=args.log_level, limits=limits)


_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_KEY = re.compile(rb"-----BEGIN (?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----")


def tls_problem(cert: str | None, key: str | None) -> str | None:
    """Why ``--tls-cert``/``--tls-key`` cannot serve HTTPS (one line), or None if they can."""
    import ssl

    if bool(cert) != bool(key):
        return ("--tls-cert and --tls-key go together: pass the certificate chain and its "
                "private key (PEM files)")
    if not cert or not key:
        return None
    pem: dict[str, bytes] = {}
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).exists():
            return f"{flag} {path} does not exist"
        try:
            pem[flag] = Path(path).read_bytes()
        except OSError as exc:
            return f"cannot read {flag} {path} ({exc.strerror or exc})"
    c, k = pem["--tls-cert"], pem["--tls-key"]
    c_is_cert, k_is_key = _PEM_CERT in c, bool(_PEM_KEY.search(k))
    if not c_is_cert and _PEM_KEY.search(c) and _PEM_CERT in k:
        return (f"--tls-cert and --tls-key are swapped: {cert} holds a private key and {key} a "
                f"certificate; pass --tls-cert {key} --tls-key {cert}")
    if not c_is_cert:
        also = "; it holds a private key: pass it as --tls-key" if _PEM_KEY.search(c) else ""
        return f"--tls-cert {cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----){also}"
    if not k_is_key:
        also = "; it holds a certificate: pass it as --tls-cert" if _PEM_CERT in k else ""
        return f"--tls-key {key} holds no PEM private key (-----BEGIN PRIVATE KEY-----){also}"
    if b"ENCRYPTED" in k:
        return (f"--tls-key {key} is encrypted with a passphrase; secagg-server needs it "
                f"unencrypted (mode 0600): openssl pkey -in {key} -out server.key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            return (f"--tls-key {key} is not the private key of the certificate in --tls-cert "
                    f"{cert}; pass the key the certificate was issued for")
        reason = (exc.reason or str(exc)).replace("_", " ").lower()
        return f"cannot use --tls-cert {cert} with --tls-key {key}: {reason}"
    return None


def port_problem(host: str, port: int) -> str | None:
    """Why this process cannot listen on ``host:port`` (in use, privileged, not this machine's
    address), or None. Bound with SO_REUSEADDR, as uvicorn binds."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"--host {host!r} does not resolve to an address of this machine ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"port {port} on {host} is already in use (another secagg-server?); "
                        "choose another --port or stop the process that holds it")
            if exc.errno == errno.EACCES:
                return (f"listening on port {port} needs privileges this user lacks; choose a "
                        "--port of 1024 or above")
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"--host {host!r} is not an address of this machine"
            return f"cannot listen on {host}:{port} ({exc.strerror or exc})"
    return None
