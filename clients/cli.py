"""``secagg-client``: one enterprise takes part in rounds on a secagg server.

With ``--data`` / ``--enterprise`` it trains the enterprise model with DP-LoRA each round
(:class:`secagg_clients.federated.FederatedEnterprise`); with ``--update`` / ``--random`` it sends a
fixed or random vector (what ``secagg bench e2e`` runs: protection cost without training).

``secagg-client identity create|show`` and ``secagg-client roster create|show`` enrol the
enterprise (:mod:`secagg_clients.enrolment`): its long-term identity and the federation's roster, which
every enterprise pins and compares out of band.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .cli_tools import enrol, layout
from .events import Reporter

HELP = "take part in aggregation rounds on a secagg server"
DESCRIPTION = """\
Connects to a secagg server with this enterprise's bearer token, waits for rounds, runs the
protocol the round asks for (masking or ckks; plain only on servers started with --allow-plain),
and applies each released aggregate.

--identity is this enterprise's identity file and --roster the federation's roster it pinned
(both made beforehand: see "enrolment" below). Masking rounds are active (malicious-server)
rounds: the client checks that the round is bound to its pinned roster and verifies every
peer's signed keys against it, and refuses the round (reveals nothing more, takes no further
part) if the server deviates from the protocol. Peers that send garbage become dropouts.

With --data (your CSV/JSONL records: text, sensor readings, label) or --enterprise (a dataset
shipped with secagg), each round trains the model with DP-SGD (Opacus, secure noise) on LoRA
adapters and the head, within the --epsilon budget kept in the --ledger file; the released mean
update is applied, so every enterprise ends with the same combined model. --state-dir makes the
client resumable: after a restart it reloads the combined model and the rounds it has left. A
round interrupted by the restart is dropped (round secrets never touch disk).

The token is read from --token-file or the SECAGG_TOKEN environment variable (or --token, which
other local users may see in the process list).

Rounds are always named by the server's round index (what the operator's open_round answers as
"index"). --events jsonl prints one JSON object per line on stdout for each event (ready,
trained, round_opened, stage_done, round_completed, round_dropped, round_refused, error, done;
see secagg_clients.events) and moves the human lines to stderr, so tools parse no prose.

A server that is not there fails in seconds with one line saying which URL, what failed
(connection refused, a host name that does not resolve, an untrusted certificate, http:// against
an HTTPS server or the reverse) and what to try; once the server has answered, connection errors,
timeouts and 5xx answers are retried for a minute (a server restarting mid-round).

exit status:
  0  at least one round released an aggregate to this client (rounds it dropped out of or
     refused are reported on stdout and in --json; with --rounds N > 1 a refused round does not
     fail the run when others complete); also 0 when rounds were only dropped, never refused
  3  a round was refused and no round completed (e.g. --rounds 1 and the server deviated, or
     the server's federation is bound to another roster than --roster)
  2  bad arguments, identity/roster/token problems, or the server unreachable or refusing

enrolment (once per enterprise, before the federation is created):
  secagg-client identity create --out energy.identity.json --name energy
      # writes the private identity (0600) and energy.identity.json.pub.json to send the others
  secagg-client roster create --federation city --out roster.json a.pub.json b.pub.json ...
  secagg-client roster show roster.json     # compare fingerprints and digest by phone
  secagg-client identity show energy.identity.json

examples:
  SECAGG_TOKEN=sat_... secagg-client --server https://agg:8443 --ca-cert ca.pem \\
      --identity energy.identity.json --roster roster.json \\
      --data incidents.csv --name energy --ledger energy.ledger.json --epsilon 8 --rounds 5
  secagg-client --server http://127.0.0.1:8443 --token-file tok --identity id.json \\
      --roster roster.json --enterprise energy_utility --ledger /tmp/e.json --rounds 2 \\
      --state-dir /tmp/e-state
  secagg-client --server http://127.0.0.1:8443 --token-file tok --identity id.json \\
      --roster roster.json --random --rounds 3 --out mean.npy
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secagg.cli._checks import number

    from .events import EVENT_FORMATS

    seconds = "seconds"
    parser.add_argument("--server", required=True, help="server URL, e.g. https://host:8443")
    parser.add_argument("--token", help="bearer token (prefer --token-file or SECAGG_TOKEN)")
    parser.add_argument("--token-file", help="file holding the bearer token")
    parser.add_argument("--ca-cert", help="CA bundle to verify the server's TLS certificate")
    parser.add_argument("--identity", required=True, metavar="JSON",
                        help="this enterprise's identity file (secagg-client identity create)")
    parser.add_argument("--roster", required=True, metavar="JSON",
                        help="the federation's roster this enterprise pinned (compared out of "
                        "band; never taken from the server)")
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
    train.add_argument("--epsilon", type=number(float, low=0, low_open=True), default=8.0,
                       help="total privacy budget over all rounds (8); delta 1e-5")
    train.add_argument("--epochs", type=number(int, low=1, high=10_000), default=10,
                       help="local DP-SGD epochs per round (10)")
    train.add_argument("--max-noise-multiplier", type=number(float, low=0, low_open=True),
                       default=None, metavar="SIGMA",
                       help="refuse (before training) a round that would need more noise than "
                       "this to fit the budget (8: beyond it the update is mostly noise)")
    train.add_argument("--encoder", choices=("minilm", "test_only_tiny"), default="minilm",
                       help="text encoder (minilm: all-MiniLM-L6-v2 from its wheel)")
    train.add_argument("--state-dir", help="save the combined model here after each round "
                       "(resumable)")
    train.add_argument("--audit-dir", help="DEMO/AUDIT ONLY: also write each plaintext update "
                       "here (this machine's disk)")
    train.add_argument("--threads", type=number(int, low=1, high=1024), default=None,
                       help="torch threads")
    parser.add_argument("--events", nargs="?", const="jsonl", choices=EVENT_FORMATS,
                        help="jsonl: print one JSON object per line on stdout for each event "
                        "(ready, trained, round_opened, stage_done, round_completed, "
                        "round_dropped, round_refused, error, done) for tools; the human lines "
                        "go to stderr (bare --events means jsonl)")
    parser.add_argument("--scale", type=number(float, low=0), default=0.1,
                        help="std of --random updates (0.1)")
    parser.add_argument("--weight", type=number(int, low=1, high=2**31 - 1), default=1,
                        help="this client's weight (1); at most the round's max_weight "
                        "(masking) / weight_bound (ckks)")
    parser.add_argument("--rounds", type=number(int, low=1, high=1_000_000), default=1,
                        help="rounds to take part in (1)")
    parser.add_argument("--min-client-noise", type=number(float, low=0, low_open=True),
                        default=None, metavar="Z",
                        help="client-level DP policy: refuse (before sending anything, one line) "
                        "any round without distributed Skellam noise or with a noise multiplier "
                        "below Z (masking rounds the operator opens with --option "
                        "dp_noise_multiplier=Z); without it, this client adds whatever noise a "
                        "round announces")
    parser.add_argument("--seed", type=number(int, low=0, high=2**63 - 1), default=None,
                        help="seed for --random")
    parser.add_argument("--out", metavar="NPY", help="write the last released mean here")
    parser.add_argument("--json", metavar="PATH", help="write a per-round report as JSON")
    parser.add_argument("--poll-wait", type=number(float, low=0, high=30, low_open=True,
                                                   unit=seconds),
                        default=20.0, help=argparse.SUPPRESS)


def _token(args: argparse.Namespace) -> str:
    from secagg.errors import InvalidParameter

    if args.token_file:
        try:
            with open(args.token_file) as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidParameter(f"cannot read --token-file {args.token_file} "
                                   f"({_why(exc)})") from None
        if not token:
            raise InvalidParameter(f"--token-file {args.token_file} is empty; it should hold "
                                   "the token `secagg-server federation create` printed")
        return token
    token = args.token or os.environ.get("SECAGG_TOKEN", "")
    if not token:
        raise InvalidParameter("no token: pass --token-file, set SECAGG_TOKEN, or pass --token")
    return str(token)


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse --out/--json whose directory does not exist now, not after the rounds."""
    from pathlib import Path

    from secagg.errors import InvalidParameter

    for flag, value in (("--out", args.out), ("--json", args.json)):
        if value and not Path(value).resolve().parent.is_dir():
            raise InvalidParameter(f"{flag} {value}: directory {str(Path(value).parent)!r} does "
                                   "not exist; create it or choose another path")


def load_update(path: str) -> Any:
    """The vector of ``--update PATH`` as float32, or :class:`InvalidParameter` saying what is
    wrong with the file (missing, not a .npy, a matrix, not numbers, NaN/inf)."""
    from pathlib import Path

    import numpy as np

    from secagg.errors import InvalidParameter

    where = f"--update {path}"
    if not Path(path).exists():
        raise InvalidParameter(f"{where} does not exist; pass a vector saved with numpy.save "
                               "(a .npy file)")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        arr = np.load(path, allow_pickle=False) if magic == b"\x93NUMPY" else None
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, OSError) and exc.strerror:
            raise InvalidParameter(f"cannot read {where} ({exc.strerror})") from None
        if "allow_pickle" in str(exc):
            raise InvalidParameter(f"{where} holds Python objects (a pickled array); the update "
                                   "must be real numbers (float32)") from None
        raise InvalidParameter(f"{where} is a damaged .npy file ({_why(exc)})") from None
    if magic.startswith(b"PK"):
        raise InvalidParameter(f"{where} is an .npz archive; save the one update vector with "
                               "numpy.save (a .npy file)")
    if arr is None:
        raise InvalidParameter(f"{where} is not a .npy file (numpy.save writes one)")
    if arr.dtype.kind not in "fiu":
        raise InvalidParameter(f"{where} holds dtype {arr.dtype}; the update must be real "
                               "numbers (float32)")
    if arr.size == 0 or arr.ndim == 0:
        raise InvalidParameter(f"{where} holds {'a scalar' if arr.ndim == 0 else 'no values'}; "
                               "the update is a vector with one value per parameter")
    if sum(1 for n in arr.shape if n > 1) > 1:
        raise InvalidParameter(f"{where} holds an array of shape {arr.shape}; save the update "
                               "as one vector (arr.ravel())")
    vector = arr.astype(np.float32).ravel()
    if not np.all(np.isfinite(vector)):
        raise InvalidParameter(f"{where} holds NaN or infinite values (or values beyond "
                               "float32)")
    return vector


def _train_and_aggregate(args: argparse.Namespace, report: Reporter) -> int:
    from pathlib import Path

    from secagg.cli._output import write_json
    from secagg.errors import InvalidParameter

    from .data import enterprise_path
    from .federated import FederatedEnterprise, FederationPlan
    from .model import EncoderKind

    if not args.ledger:
        raise InvalidParameter("training needs --ledger FILE (the privacy ledger that keeps this "
                               "enterprise's budget across runs)")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    data = Path(args.data) if args.data else enterprise_path(args.enterprise)
    name = args.name or args.enterprise or data.stem
    ceiling = {} if args.max_noise_multiplier is None else \
        {"max_noise_multiplier": args.max_noise_multiplier}
    plan = FederationPlan(rounds=args.rounds, budget_epsilon=args.epsilon, epochs=args.epochs,
                          encoder=EncoderKind.parse(args.encoder), weight=args.weight, **ceiling)
    identity, roster = _enrolment(args)
    with FederatedEnterprise.connect(args.server, _token(args), data=data, name=name,
                                     identity=identity, roster=roster,
                                     ledger=args.ledger, plan=plan,
                                     verify=args.ca_cert or True, audit_dir=args.audit_dir,
                                     state_dir=args.state_dir, on_event=report,
                                     dp_policy=_dp_policy(args, delta=plan.delta)) as ent:
        result = ent.run(progress=not args.events)
    if args.json:
        write_json(args.json, result.to_dict())
    return _finish(report, completed=sum(1 for r in result.rounds if not r.dropped),
                   dropped=sum(1 for r in result.rounds if r.dropped and not r.refused),
                   refused=[f"round {r.index}: {r.reason}" for r in result.rounds if r.refused],
                   done=False)


def _dp_policy(args: argparse.Namespace, *, delta: float = 1e-5) -> Any:
    """The client-level DP policy --min-client-noise asks for (None without it)."""
    if getattr(args, "min_client_noise", None) is None:
        return None
    from secagg.dp.client_level import DistributedDPPolicy

    return DistributedDPPolicy(min_noise_multiplier=args.min_client_noise, delta=delta)


def _exit_code(*, completed: int, refused: list[str], report: Reporter | None = None) -> int:
    """0 unless a round was refused and none completed (then 3, saying why); see --help."""
    if refused and not completed:
        return (report or Reporter()).error(
            f"refused {len(refused)} round(s) and completed none: " + "; ".join(refused), 3)
    return 0


def _finish(report: Reporter, *, completed: int, dropped: int, refused: list[str],
            done: bool = True) -> int:
    """The exit code (an ``error`` event first when it is 3); ``done``: also the ``done`` event
    (the training loop sends its own)."""
    code = _exit_code(completed=completed, refused=refused, report=report)
    if done:
        report("done", {"completed": completed, "dropped": dropped, "refused": len(refused)})
    return code


def _vector_length(config: object) -> int | None:
    """The round's ``vector_length`` if it is a usable length (the config comes from the
    server: anything else is None, and the round is refused)."""
    try:
        value = config.get("vector_length") if isinstance(config, dict) else None
        if value is None or isinstance(value, bool):
            return None
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return n if 1 <= n <= 2**31 else None


def _enrolment(args: argparse.Namespace) -> tuple[Any, Any]:
    """This enterprise's identity and the pinned roster, or InvalidParameter naming the file."""
    from secagg.identity import Identity, Roster

    return Identity.load(args.identity), Roster.load(args.roster)


def run(args: argparse.Namespace, report: Reporter | None = None) -> int:
    report = report or Reporter(getattr(args, "events", None))
    _check_outputs(args)
    if args.data or args.enterprise:
        return _train_and_aggregate(args, report)
    import numpy as np

    from secagg.cli._output import write_json
    from secagg.errors import InvalidParameter

    from .runtime import Dropped, RoundRefused, RuntimeClient

    rng = np.random.default_rng(args.seed)
    fixed = None if args.update is None else load_update(args.update)
    verify: bool | str = args.ca_cert or True
    summary: dict[str, Any] = {"rounds": []}
    after = -1
    completed, dropped, refused = 0, 0, []
    identity, roster = _enrolment(args)
    with RuntimeClient(args.server, _token(args), identity=identity, roster=roster,
                       verify=verify, poll_wait=args.poll_wait, on_event=report,
                       dp_policy=_dp_policy(args)) as rt:
        me = rt.check_enrolment()
        report("ready", {"client_id": me["client_id"], "federation": me["federation"],
                         "name": identity.name, "fingerprint": identity.fingerprint,
                         "roster": roster.digest().hex()})
        for r in range(args.rounds):
            info = rt.wait_for_round(after)
            after = info.index
            n = _vector_length(info.config)
            if n is None:  # a malformed config from the server: refuse the round, go on
                given = info.config.get("vector_length") if isinstance(info.config, dict) \
                    else "the config is not an object"
                reason = (f"the round's config has no usable vector_length ({str(given)[:40]}); "
                          "refusing to take part")
                report("round_refused", {"round": info.index, "round_id": info.round_id,
                                         "mode": info.mode, "reason": reason,
                                         "rounds_left": args.rounds - r - 1})
                refused.append(f"round {info.index}: {reason}")
                summary["rounds"].append({"index": info.index, "round_id": info.round_id,
                                          "mode": info.mode, "dropped": True, "refused": True,
                                          "reason": reason})
                continue
            if fixed is not None and fixed.size != n:
                raise InvalidParameter(f"--update {args.update} holds {fixed.size} values but "
                                       f"round {info.index} expects vector_length {n} (set by "
                                       "the operator); save an update of that length")
            update = fixed if fixed is not None else \
                (rng.standard_normal(n, dtype=np.float32) * np.float32(args.scale))
            about = {"round": info.index, "round_id": info.round_id, "mode": info.mode}
            try:
                res = rt.take_part(info, update, args.weight)
            except Dropped as exc:
                is_refusal = isinstance(exc, RoundRefused)
                reason = exc.reason if isinstance(exc, RoundRefused) else str(exc)
                report("round_refused" if is_refusal else "round_dropped",
                       {**about, "reason": reason, "rounds_left": args.rounds - r - 1})
                if is_refusal:
                    refused.append(f"round {info.index}: {reason}")
                else:
                    dropped += 1
                summary["rounds"].append({"index": info.index, "round_id": info.round_id,
                                          "mode": info.mode, "dropped": True,
                                          **({"refused": True} if is_refusal else {}),
                                          "reason": reason})
                continue
            completed += 1
            report("round_completed", {**about, "survivors": list(res.survivors),
                                       "dropped": list(res.dropped),
                                       "total_weight": res.total_weight,
                                       "mean_norm": float(np.linalg.norm(res.mean)),
                                       "received_at": res.received_at})
            summary["rounds"].append({
                "index": info.index, "round_id": info.round_id, "mode": info.mode,
                "dropped": False, "survivors": list(res.survivors),
                "total_weight": res.total_weight, "received_at": res.received_at,
            })
            if args.out:
                np.save(args.out, res.mean)
    if args.json:
        write_json(args.json, summary)
    return _finish(report, completed=completed, dropped=dropped, refused=refused)



def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``secagg-client`` console script (kept out of ``secagg``'s CLI so the
    protocol package never imports the client side)."""
    import sys

    from secagg.cli._checks import ArgumentParser
    from secagg.errors import SecAggError

    from .connection import ServerRefused

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "layout":
        try:
            return layout(argv[1:])
        except SecAggError as exc:
            print(f"secagg-client: error: {exc}", file=sys.stderr)
            return 2
    if argv and argv[0] in ("identity", "roster"):
        try:
            return enrol(argv)
        except SecAggError as exc:
            print(f"secagg-client: error: {exc}", file=sys.stderr)
            return 2
    parser = ArgumentParser(prog="secagg-client", description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    report = Reporter(args.events)
    try:
        return run(args, report)
    except (SecAggError, ServerRefused, ConnectionError) as exc:  # a bad token, an unreachable server
        return report.error(str(exc), 2)
