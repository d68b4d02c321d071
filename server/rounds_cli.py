"""``secagg-server round ...``: the operator's round commands against a running server.

    secagg-server round open --mode masking --from-model ./model [--option clip=2.0 ...]
    secagg-server round list [--json]
    secagg-server round show ID [--json]
    secagg-server round cancel ID

They speak HTTP(S) with the federation's operator token (``--token-file F`` or the environment
variable ``SECAGG_OPERATOR_TOKEN``) through :class:`secagg_server.operator.Operator`; nothing
here loads FastAPI or TenSEAL. ``--from-model`` / ``--layout`` read the model layout the
enterprises published (``secagg-client layout export --out DIR/layout.json``): the server
derives ``vector_length`` from it and binds the round to the layout's digest, so an enterprise
fine-tuning another model refuses the round.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_round_parser", "run_round_command"]

TOKEN_ENV = "SECAGG_OPERATOR_TOKEN"  # noqa: S105 (a variable name, not a token)
LAYOUT_FILE = "layout.json"


def add_round_parser(sub: Any) -> None:
    from secagg.cli._checks import number

    rnd = sub.add_parser("round", help="open, list, show or cancel rounds on a running server "
                         "(operator token)")
    rsub = rnd.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", default="https://127.0.0.1:8443",
                       help="the server's URL (default https://127.0.0.1:8443)")
        p.add_argument("--token-file", metavar="F", help="file holding the operator token "
                       f"(default: the environment variable {TOKEN_ENV})")
        p.add_argument("--ca-cert", metavar="PEM", help="CA bundle that signed the server's "
                       "certificate")

    opened = rsub.add_parser("open", help="open the federation's next round")
    common(opened)
    opened.add_argument("--mode", required=True,
                        choices=("masking", "ckks", "ckks-threshold", "plain"))
    src = opened.add_mutually_exclusive_group()
    src.add_argument("--from-model", metavar="DIR", help=f"the model directory an enterprise "
                     f"published ({LAYOUT_FILE} from `secagg-client layout export`)")
    src.add_argument("--layout", metavar="PARAMSPEC.json", help="the model layout file")
    opened.add_argument("--option", action="append", default=[], metavar="K=V",
                        help="a mode option (value as JSON, else a string), repeatable: "
                        "clip=2.0, value_bound=2.0, vector_length=N (without a layout); "
                        "masking with client-level DP: dp_noise_multiplier=Z [dp_l2_clip=C] "
                        "(every client adds Skellam noise inside the sum, calibrated for the "
                        "round's threshold of survivors); ckks below float32 on the wire: "
                        "preset=packed [target_error=1e-6] (parameters sized to the round)")
    opened.add_argument("--stage-timeout", type=number(float, low=0.1, high=86400,
                                                       unit="seconds"),
                        default=60.0, metavar="S", help="seconds per stage (default 60)")
    opened.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    listing = rsub.add_parser("list", help="every round: id, mode, status, stage, awaited clients")
    common(listing)
    listing.add_argument("--json", action="store_true")
    show = rsub.add_parser("show", help="one round's status")
    common(show)
    show.add_argument("id", type=number(int, low=0, high=2**63 - 1), metavar="ID")
    show.add_argument("--json", action="store_true")
    cancel = rsub.add_parser("cancel", help="end an open round now (clients hear it was "
                             "cancelled; nothing is released)")
    common(cancel)
    cancel.add_argument("id", type=number(int, low=0, high=2**63 - 1), metavar="ID")


class _Refused(Exception):
    pass


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise _Refused(f"cannot read --token-file {args.token_file}: "
                           f"{exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise _Refused(f"--token-file {args.token_file} is not text; it should hold the "
                           "operator token printed by 'federation create'") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise _Refused(f"no operator token: pass --token-file F or set {TOKEN_ENV}")
    if not token:
        raise _Refused(f"--token-file {args.token_file} is empty")
    return token


def _layout(args: argparse.Namespace) -> Any:
    from secagg.encoding import ParamSpec

    path = None
    if args.from_model:
        path = Path(args.from_model)
        if path.is_dir():
            path = path / LAYOUT_FILE
        if not path.is_file():
            raise _Refused(f"--from-model {args.from_model}: no {LAYOUT_FILE} there; an "
                           "enterprise writes it with `secagg-client layout export --out "
                           f"{Path(args.from_model) / LAYOUT_FILE}`")
    elif args.layout:
        path = Path(args.layout)
    if path is None:
        return None
    try:
        return ParamSpec.from_json(path.read_text())
    except OSError as exc:
        raise _Refused(f"cannot read the layout {path}: {exc.strerror or exc}") from None


def _options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise _Refused(f"--option {pair!r}: expected K=V, e.g. clip=2.0")
        try:
            options[key.strip()] = json.loads(raw)
        except ValueError:
            options[key.strip()] = raw
    return options


def _line(info: dict[str, Any]) -> str:
    text = f"round {info['round_id']} (index {info['index']}, {info['mode']}): {info['status']}"
    if "stage" in info:
        text += f", stage {info['stage']}, awaiting clients {info.get('awaiting_clients', [])}"
    if info.get("reason"):
        text += f" ({info['reason']})"
    return text


def run_round_command(args: argparse.Namespace) -> int:
    from secagg.errors import SecAggError

    from .operator import Operator, OperatorError

    try:
        token = _token(args)
        with Operator(args.server, token, verify=args.ca_cert or True) as op:
            if args.action == "open":
                layout = _layout(args)
                info = op.open_round(args.mode, _options(args.option), layout=layout,
                                     stage_timeout_s=args.stage_timeout)
                if args.json:
                    print(json.dumps(info))
                else:
                    print(_line(info))
                    digest = info.get("config", {}).get("layout_digest")
                    if digest:
                        print(f"  model layout {digest[:16]}..., vector_length "
                              f"{info['config'].get('vector_length')}")
                    for note in info.get("notes", []):
                        print(f"  note: {note}")
            elif args.action == "list":
                rounds = op.rounds()
                if args.json:
                    print(json.dumps(rounds))
                elif not rounds:
                    print("no rounds yet")
                else:
                    for info in rounds:
                        print(_line(info))
            elif args.action == "show":
                info = op.status(args.id)
                print(json.dumps(info) if args.json else _line(info))
            else:
                info = op.cancel(args.id)
                print(_line(info))
        return 0
    except OperatorError as exc:
        return _fail(_server_said(str(exc)))
    except (_Refused, SecAggError) as exc:
        return _fail(str(exc))
    except Exception as exc:  # httpx transport errors: which URL, what failed
        import httpx

        if isinstance(exc, httpx.HTTPError):
            return _fail(f"cannot reach {args.server}: {type(exc).__name__}: {exc}")
        raise


def _server_said(text: str) -> str:
    """An :class:`OperatorError`'s text with the server's JSON detail pulled out."""
    head, sep, body = text.partition(": server answered ")
    if sep:
        status, _, raw = body.partition(": ")
        try:
            err = json.loads(raw)
            return f"{head}: {status}: {err.get('detail', raw)}"
        except ValueError:
            pass
    return text


def _fail(why: str) -> int:
    print(f"secagg-server round: error: {why}", file=sys.stderr, flush=True)
    return 2
