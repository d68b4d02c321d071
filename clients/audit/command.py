"""``secagg audit``: the command (registered through the ``secagg.commands`` entry points)."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import warnings
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from secagg.errors import InvalidParameter

HELP = ("audit an enterprise: ledger accounting, an empirical DP-SGD test, the server's view, "
        "a configuration checklist and membership inference on the released model")
DESCRIPTION = """\
Audits one enterprise from its privacy ledger and its training data, and writes
DIR/report.json, DIR/report.html (self-contained) and PNG figures.

Accounting: every round of the ledger recomposed by two accountants, RDP and PRV
(sample-level), the budget left, and a flag where the two differ by more than 2 %.

Empirical audit (Steinke, Nasr, Jagielski 2023, "Privacy Auditing with One (1) Training Run"):
the enterprise's own DP-SGD pipeline trains once, with the mechanism the ledger's round
records (sample rate, noise multiplier, steps), on the data plus M gradient canaries
(white-box: per-example gradient set to a Dirac direction) and M input canaries (black-box:
odd, mislabelled records), each included with probability 1/2. Guessing which were included
certifies a LOWER bound on epsilon at the given confidence. A bound above the ledger's claim
means the pipeline leaks more than it records; a bound far below it is normal (one-run audits
are loose: they catch bugs, they do not measure tightness). The same guesses are also bounded
through f-DP (Mahloujifar, Melis, Chaudhuri 2024): against the (epsilon, delta) curve, and, where
the round is a full-batch Gaussian (q = 1), against the Gaussian curve, which certifies far more
at high epsilon (at epsilon 8 with --canaries 1000: about 4.4-5.8 where Steinke's bound gives
2.6-3.0). Use --canaries 1000 or more for claims above epsilon 4. A noise check compares the
noise actually added with the recorded noise multiplier. Each bound holds at --confidence; the
verdict flags a violation when any of its 4 bounds (6 at q = 1) exceeds the claim, so a correct
pipeline is flagged with probability at most 4 or 6 x (1 - confidence), 20 or 30 % at the
default (a union bound, stated in the report).

Server view: a real masking round (active mode) and a real CKKS round (SEAL ciphertexts) are
played in memory with the enterprise's records as one client's data (each update: one FedSGD
step of a softmax head over public features of the records, 2,564 weights); the attacker gets
everything the server stores (masking: every message it received, the unmask shares included,
i.e. fewer than t shares of each secret it must not learn; CKKS: public parameters and
ciphertexts) and its best estimate of that client's update is scored (correlation, relative
error, gradient membership inference AUC). The contrast is the same attack on a plaintext
FedAvg round (the update read exactly), and positive controls (t colluding holders; the CKKS
secret key) show the attack recovers the update when the protection is gone.

Configuration checklist: pass/fail, each with its fix, computed from the library's real
config objects at their defaults (and from --roster's keys and --server's URL scheme): CKKS
parameters against the HE-standard 128-bit bound, X25519/Ed25519 key sizes, the mask PRG (run
and compared with AES-CTR), the masking threshold against the assumed corruption (fewer than
2t - m corrupt holders per neighbourhood), secure DP noise, quantisation headroom, and TLS (the
--server URL's scheme only, no connection; "not checked" without it).

Released model: the enterprise's pipeline trained twice on half its records, with DP-SGD (the
audited round's noise multiplier) and without; a loss-threshold membership-inference attack
(members vs the held-out half) gives the AUC of each, beside the advantage DP allows.

--plant injects a known bug so you can see the audit catch it:
  noise-halved              half the recorded noise (caught by the noise check, and by the
                            f-DP Gaussian bound at q = 1 with about 2,000 canaries)
  no-clipping               per-example gradients not clipped (bound exceeds the claim)
  sample-rate-misreported   full batches under the recorded q (bound exceeds the claim)

examples:
  secagg audit --ledger runs/energy_utility.ledger.json \\
      --data clients/datasets/energy_utility.csv --out audit/
  secagg audit --ledger L --data D --out audit-bug/ --plant no-clipping --canaries 200
  secagg audit --ledger L --data D --out audit/ --roster roster.json \
      --server https://agg.example.com:8443          # checklist with the real roster and TLS

The report opens with a one-screen summary (a status per section); every figure names the
command that makes it again (every flag that changes a number, the round and federation size
resolved). Costs three training runs of the round (the empirical audit, then the
released model with and without DP) and seconds for the rest; --skip drops sections.
No output is sent anywhere.
Every input (the files, --out, --roster/--clients, --server, the numbers, and whether the
audited round can be run) is checked before the first training run starts. An empty Poisson
batch (likely with few records or canaries for the round's sample rate) is a step of noise
alone, as in DP-SGD's analysis.
Exit status: 0 audited (read the verdict), 2 bad input (one line on stderr, naming the flag).
"""


#: largest simulated federation for the checklist (--clients without --roster)
MAX_CLIENTS = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from secagg.cli._checks import number

    def one_line(message: str) -> NoReturn:  # a refused flag is one line, as every other refusal
        parser.exit(2, f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")

    parser.error = one_line  # type: ignore[method-assign]

    parser.add_argument("--ledger", required=True, metavar="L",
                        help="the enterprise's privacy ledger (JSON, as the client keeps it)")
    parser.add_argument("--data", required=True, metavar="D",
                        help="the enterprise's training records (.csv or .jsonl)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the report")
    parser.add_argument("--canaries", type=number(int, low=2, high=1_000_000), default=200,
                        metavar="M",
                        help="canaries of each kind (default 200; more gives tighter bounds)")
    parser.add_argument("--plant", choices=("noise-halved", "no-clipping",
                                            "sample-rate-misreported"),
                        help="plant a known bug in the audited run (see above)")
    parser.add_argument("--round", type=number(int, low=1), metavar="N",
                        help="ledger round whose mechanism is audited (default: the last)")
    parser.add_argument("--confidence", type=_confidence, default=0.95,
                        help=f"confidence of each lower bound, in [{CONFIDENCE_MIN:g}, "
                             f"{CONFIDENCE_MAX!r}] (default 0.95)")
    parser.add_argument("--encoder", choices=("minilm", "test_only_tiny"), default="minilm",
                        help="text encoder of the audited model (test_only_tiny: tests only)")
    parser.add_argument("--clip-norm", type=number(float, low=0, low_open=True), default=1.0,
                        help="per-example clip norm of the pipeline (default 1.0)")
    parser.add_argument("--seed", type=number(int, low=0, high=2**63 - 1), default=0,
                        help="seed of the auditor's canary choices (not of the DP noise)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--server", metavar="URL",
                        help="the federation server's URL, for the TLS row of the checklist")
    parser.add_argument("--roster", metavar="FILE",
                        help="the federation's roster (its size, policy and identity keys feed "
                             "the checklist; default: a simulated roster of --clients members)")
    parser.add_argument("--clients", type=number(int, low=2, high=MAX_CLIENTS), metavar="N",
                        help="federation size when no roster is given (default 3; with --roster "
                             "it must equal the roster's size)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=("server-view", "checklist", "released"),
                        help="leave a section out (repeatable)")


#: the --confidence values the bounds can use: beyond them the Bonferroni-split confidence of a
#: bound (1 - (1 - confidence) / shares) rounds to 0 or 1 and the bound refuses it, after the
#: training run
CONFIDENCE_MIN, CONFIDENCE_MAX = 1e-6, 0.999999999


def _confidence(text: str) -> float:
    """``--confidence``: a finite number in [CONFIDENCE_MIN, CONFIDENCE_MAX]."""
    rule = f"must be a number in [{CONFIDENCE_MIN:g}, {CONFIDENCE_MAX!r}]"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{rule}, found {text or repr(text)}") from None
    if not (math.isfinite(value) and CONFIDENCE_MIN <= value <= CONFIDENCE_MAX):
        raise argparse.ArgumentTypeError(f"{rule} (the bounds cannot be computed closer to 0 "
                                         f"or 1), found {text}")
    return value


def _released_plan(records: int, sample_rate: float, steps: int) -> tuple[int, int, int, int]:
    """The released-model runs' (members, batch, epochs, steps): half the records, the round's
    expected batch and epochs (q = 1/ceil(members/batch) per step, as the trainer samples)."""
    half = records // 2
    batch = max(1, round(half * sample_rate))
    epochs = max(1, round(steps * sample_rate))
    return half, batch, epochs, epochs * math.ceil(half / batch)


def _check_confidence(args: argparse.Namespace) -> None:
    """The bounds accept ``--confidence`` (run on dummy scores, before any training)."""
    import numpy as np

    from secagg.dp.audit_bound import epsilon_lower_bound_from_scores
    from secagg.dp.audit_fdp import fdp_bound_from_scores

    from .empirical import FDP_GUESS_FRACTIONS

    scores, included = np.array([1.0, 0.5, -0.5, -1.0]), np.array([True, True, False, False])
    try:
        epsilon_lower_bound_from_scores(scores, included, delta=1e-5,
                                        confidence=args.confidence)
        for gaussian in (False, True):
            fdp_bound_from_scores(scores, included, delta=1e-5, confidence=args.confidence,
                                  gaussian=gaussian, fractions=FDP_GUESS_FRACTIONS)
    except InvalidParameter as exc:
        raise InvalidParameter(f"--confidence {args.confidence!r}: the bounds cannot use it "
                               f"({exc}); expected a number in [{CONFIDENCE_MIN:g}, "
                               f"{CONFIDENCE_MAX!r}]") from None


def reproduce_command(args: argparse.Namespace, round_n: int) -> str:
    """The command line that makes this report again: every flag that changes a number or a
    figure (not --no-progress), with ``--round`` resolved to the audited round and the
    federation given as the audit used it (--roster, else --clients)."""
    argv = ["--ledger", args.ledger, "--data", args.data, "--out", args.out,
            "--canaries", str(args.canaries), "--round", str(round_n),
            "--confidence", repr(float(args.confidence)), "--encoder", args.encoder,
            "--clip-norm", repr(float(args.clip_norm)), "--seed", str(args.seed)]
    if args.plant:
        argv += ["--plant", args.plant]
    for section in args.skip:
        argv += ["--skip", section]
    if args.server:
        argv += ["--server", args.server]
    if args.roster:
        argv += ["--roster", args.roster]
    else:
        argv += ["--clients", str(_clients(args))]
    return "secagg audit " + shlex.join(argv)


def _clients(args: argparse.Namespace) -> int:
    return 3 if args.clients is None else int(args.clients)


def _readable_file(flag: str, path: str, what: str) -> None:
    p = Path(path)
    if not p.exists():
        raise InvalidParameter(f"{flag} {path}: does not exist; expected {what}")
    if not p.is_file():
        raise InvalidParameter(f"{flag} {path}: is a folder, not a file; expected {what}")
    if not os.access(p, os.R_OK):
        raise InvalidParameter(f"{flag} {path}: not readable by this user; expected {what} "
                               "you may read")


def _writable_folder(flag: str, path: str) -> None:
    """``path`` is a folder this user may write, or may be created in one (nothing is made)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InvalidParameter(f"{flag} {path}: is a file; expected a folder for the report "
                               "(new or existing)")
    existing = p
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidParameter(f"{flag} {path}: {existing} is a file, so the folder cannot be "
                               "made; expected a path under a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidParameter(f"{flag} {path}: folder {existing} is not writable by this user; "
                               "expected a folder you may write")


def check_inputs(args: argparse.Namespace) -> tuple[Any, list[Any], int, Any]:
    """Every check that can run before training, in the order of the flags: each refusal is one
    line naming the flag, what it found and what it expected. Returns the ledger, the records,
    the audited round's number and the federation (roster, identity keys) for the checklist."""
    from secagg.dp.ledger import PrivacyLedger
    from secagg.identity import Roster

    from ..data import load_records
    from .empirical import batch_size_for

    _readable_file("--ledger", args.ledger, "the enterprise's privacy ledger (JSON)")
    try:
        ledger = PrivacyLedger.load(args.ledger)
    except InvalidParameter as exc:
        raise InvalidParameter(f"--ledger {args.ledger}: {exc}") from None
    _readable_file("--data", args.data, "the enterprise's records (.csv or .jsonl)")
    try:
        records = load_records(args.data)
    except InvalidParameter as exc:
        raise InvalidParameter(f"--data {args.data}: {exc}") from None
    _writable_folder("--out", args.out)
    entries = ledger.entries
    if not entries:
        raise InvalidParameter(f"--ledger {args.ledger}: records no round yet; expected a "
                               "ledger with at least one round (nothing to audit)")
    n = len(entries) if args.round is None else args.round
    if not 1 <= n <= len(entries):
        raise InvalidParameter(f"--round must be in 1..{len(entries)} (the ledger's rounds), "
                               f"found {n}")
    entry = entries[n - 1]
    if args.plant == "sample-rate-misreported" and entry.sample_rate >= 1.0:
        raise InvalidParameter(
            f"--plant sample-rate-misreported: round {n} already records q = 1, found "
            f"{entry.sample_rate}; expected a round with q < 1 (choose it with --round)")
    try:  # the empirical run's batch: q = 1/k on the records plus both kinds of canaries
        batch_size_for(len(records) + 2 * args.canaries, entry.sample_rate)
    except InvalidParameter as exc:
        raise InvalidParameter(f"--ledger {args.ledger} round {n} (audited with "
                               f"--canaries {args.canaries} of each kind): {exc}") from None
    _check_confidence(args)
    if "server-view" not in args.skip and len(records) < SERVER_VIEW_MIN_RECORDS:
        raise InvalidParameter(
            f"--data {args.data}: the server view needs at least {SERVER_VIEW_MIN_RECORDS} "
            f"records, found {len(records)} (or pass --skip server-view)")
    if "released" not in args.skip and len(records) < RELEASED_MIN_RECORDS:
        raise InvalidParameter(
            f"--data {args.data}: the released-model attack needs at least "
            f"{RELEASED_MIN_RECORDS} records, found {len(records)} (or pass --skip released)")
    if args.server is not None:
        parts = urlsplit(args.server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidParameter(f"--server {args.server!r}: expected an http:// or https:// "
                                   "URL with a host, e.g. https://agg.example.com:8443")
    federation: Any = None
    if args.roster:
        _readable_file("--roster", args.roster, "the federation's roster (JSON)")
        try:
            roster = Roster.load(args.roster)
        except InvalidParameter as exc:
            raise InvalidParameter(f"--roster {args.roster}: {exc}") from None
        if args.clients is not None and args.clients != len(roster):
            raise InvalidParameter(f"--clients {args.clients} does not match --roster "
                                   f"{args.roster}, which has {len(roster)} members; expected "
                                   "the roster's size (or leave --clients out)")
        federation = (roster, [m.public_key for m in roster.members])
    if "checklist" not in args.skip:
        if federation is None:
            from secagg.masking.simulate import insecure_simulated_federation

            federation = (insecure_simulated_federation(_clients(args))[0], [])
        _masking(args, federation[0])  # the federation's masking config is made before training
    return ledger, records, n, federation


#: the fewest records the server view (one member and two non-members) and the released-model
#: attack (:func:`~.released.released_model_mia`) can run on
SERVER_VIEW_MIN_RECORDS = 4
RELEASED_MIN_RECORDS = 8


def _masking(args: argparse.Namespace, roster: Any) -> Any:
    from secagg.masking.config import MaskingConfig

    flag = f"--roster {args.roster}" if args.roster else f"--clients {_clients(args)}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"secagg\.masking\..*")
        try:
            return MaskingConfig.create(num_clients=len(roster), vector_length=1, roster=roster)
        except InvalidParameter as exc:
            raise InvalidParameter(f"{flag}: no masking round can be configured for this "
                                   f"federation ({exc})") from None


def run(args: argparse.Namespace) -> int:
    from .accounting import account_ledger
    from .empirical import Plant, audit_pipeline
    from .report import write_report

    ledger, records, n, federation = check_inputs(args)  # before any training
    entry = ledger.entries[n - 1]
    command = reproduce_command(args, n)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"opacus\..*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        accounting = account_ledger(ledger)
        checks = None if "checklist" in args.skip else _checklist(args, entry, federation)
        empirical = audit_pipeline(
            records, sample_rate=entry.sample_rate, noise_multiplier=entry.noise_multiplier,
            steps=entry.steps, delta=entry.delta, canaries=args.canaries,
            plant=Plant(args.plant) if args.plant else None, confidence=args.confidence,
            encoder=args.encoder, clip_norm=args.clip_norm, seed=args.seed,
            progress=not args.no_progress)
        server = None if "server-view" in args.skip else _server_view(records, args.seed)
        released = None if "released" in args.skip else _released(records, entry, args)
    doc = write_report(Path(args.out), accounting=accounting, empirical=empirical,
                       command=command, ledger=args.ledger, data=args.data, server=server,
                       checklist=checks, released=released)
    print(doc["overall"]["text"])
    print(doc["verdict"]["text"])
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def _server_view(records: list[Any], seed: int) -> Any:
    from .server_view import server_view

    members = min(16, len(records) // 4)
    return server_view(records, members=members, nonmembers=min(64, len(records) - 2 * members),
                       seed=seed)


def _checklist(args: argparse.Namespace, entry: Any, federation: tuple[Any, list[bytes]]) -> Any:
    from secagg.ckks.presets import Preset

    from ..trainer import DPConfig
    from .checklist import checklist

    roster, keys = federation
    masking = _masking(args, roster)
    return checklist(masking=masking, corrupt_rate=roster.corrupt_rate,
                     security_bits=roster.security_bits, ckks_params=[p.params for p in Preset],
                     dp_config=DPConfig(noise_multiplier=entry.noise_multiplier),
                     server_url=args.server, roster_keys=keys)


def _released(records: list[Any], entry: Any, args: argparse.Namespace) -> Any:
    from .released import released_model_mia

    _, batch, epochs, _ = _released_plan(len(records), entry.sample_rate, entry.steps)
    return released_model_mia(records, noise_multiplier=entry.noise_multiplier, epochs=epochs,
                              batch_size=batch, delta=entry.delta, encoder=args.encoder,
                              clip_norm=args.clip_norm, seed=args.seed,
                              progress=not args.no_progress)
