"""``secagg demo``: three enterprises improve one model; the server sees only protected updates.

The ``secagg`` CLI loads this module through the ``secagg.commands`` entry point that
pyproject.toml registers; it exists in a source checkout only (``bash scripts/demo.sh`` runs it).
"""

from __future__ import annotations

import argparse
from typing import Any

from secagg.errors import InvalidParameter

HELP = "the smart-city demo: a real server and one DP-training process per enterprise"
DESCRIPTION = """\
Starts a real secagg-server on 127.0.0.1 and one secagg-client process per enterprise (an energy
utility, a residential security firm and a city operations centre, each with its own small,
differently distributed dataset shipped with secagg). Each round, every enterprise fine-tunes
LoRA adapters and a sensor head on MiniLM with DP-SGD (Opacus, secure noise) and sends only a
protected update: pairwise-masked (--mode masking), CKKS-encrypted under a key one enterprise
deals (--mode ckks), or threshold CKKS (--mode ckks-threshold: every enterprise encrypts under
its own fresh secret, dealt to the others in shares; no one holds the key, and a decryption needs
the signed statements of a quorum and the partial decryptions of t = 2 of 3). The server releases
the combined update, every enterprise applies it, and the demo ends with a table:
accuracy of each enterprise's model (at the start, trained alone, combined), epsilon spent,
bytes sent, and what the server held.

Takes a few minutes on 2 cores (most of it DP training). The operator role (opening rounds,
reading the server's store) is played by this command; it never sees an update except through
the enterprises' local audit files, which exist so the demo can check the released aggregate
against the plaintext sum.

examples:
  secagg demo                                   # masking, 3 enterprises, 2 rounds
  secagg demo --mode ckks --json out/demo.json
  secagg demo --mode ckks-threshold             # no single key holder
  secagg demo --rounds 3 --epsilon 4 --workdir /tmp/city   # keep logs, ledgers, server store
  secagg demo --distributed-dp --client-noise 1.0   # + client-level DP inside the masked sum

--distributed-dp (masking only): every round is opened with the operator option
dp_noise_multiplier=Z (--client-noise) and dp_l2_clip=C (--client-clip); each enterprise clips
its update to L2 norm C, adds its Skellam noise share after quantisation (calibrated for the
masking threshold of survivors), refuses a round with less noise (its policy is Z), and records
the released sum's client-level epsilon, from the survivors actually in it, in its ledger. With
three enterprises the noise that protects a whole enterprise swamps the update: the demo shows
the mechanism and its epsilon, not a useful model (client-level DP needs many clients).

--mode ckks-threshold with the three enterprises: the decryption policy's statement quorum is
max(t, floor((n + corrupt) / 2) + 1) = 3, so all three must sign each round's decryption
statement (with one assumed corrupt enterprise, two signatures could not rule out a second,
different statement); after that any t = 2 of them can decrypt, so one may vanish at the
decryption stage. The server releases the plaintext combined update, as with masking.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("masking", "ckks", "ckks-threshold"),
                        default="masking",
                        help="how updates are protected (masking); ckks-threshold: no single "
                        "key holder, all 3 enterprises must sign each decryption statement")
    parser.add_argument("--clients", type=int, default=3, help="enterprises, 2 or 3 (3)")
    parser.add_argument("--rounds", type=int, default=2, help="federated rounds (2)")
    parser.add_argument("--epsilon", type=float, default=8.0,
                        help="each enterprise's total privacy budget over all rounds (8; "
                        "delta 1e-5)")
    parser.add_argument("--epochs", type=int, default=5, help="local DP-SGD epochs per round (5; "
                        "the tuned recipe uses 10 where time allows)")
    parser.add_argument("--distributed-dp", action="store_true",
                        help="client-level DP inside the secure sum: Skellam noise shares added "
                        "by every enterprise (masking only); prints the client-level epsilon")
    parser.add_argument("--client-noise", type=float, default=None, metavar="Z",
                        help="with --distributed-dp: noise multiplier of the released sum "
                        "(std / sensitivity at the threshold's survivors) (1.0)")
    parser.add_argument("--client-clip", type=float, default=None, metavar="C",
                        help="with --distributed-dp: L2 bound of each enterprise's update (1.0)")
    parser.add_argument("--encoder", choices=("minilm", "test_only_tiny"), default="minilm",
                        help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help="keep everything here (must be empty or absent): "
                        "server store, ledgers, client logs")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


_PROTECTED = {
    "masking": "pairwise-masked",
    "ckks": "CKKS-encrypted",
    "ckks-threshold": "threshold-CKKS-encrypted, each under its enterprise's own secret",
}


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def run(args: argparse.Namespace) -> int:
    from secagg.cli._output import print_table, write_json

    from .demo import DemoConfig, run_demo

    given = [flag for flag, v in (("--client-noise", args.client_noise),
                                  ("--client-clip", args.client_clip)) if v is not None]
    if given and not args.distributed_dp:
        raise InvalidParameter(f"{' and '.join(given)} set the client-level noise inside the "
                               "masked sum, which only --distributed-dp adds; add "
                               "--distributed-dp (with --mode masking) or leave them out")
    args.client_noise = 1.0 if args.client_noise is None else args.client_noise
    args.client_clip = 1.0 if args.client_clip is None else args.client_clip
    cfg = DemoConfig(mode=args.mode, clients=args.clients, rounds=args.rounds,
                     epsilon=args.epsilon, epochs=args.epochs, encoder=args.encoder,
                     workdir=args.workdir, progress=not args.no_progress,
                     distributed_dp=args.distributed_dp, client_noise=args.client_noise,
                     client_clip=args.client_clip)
    report: dict[str, Any] = run_demo(cfg)
    acc = report["accuracy"]
    print()
    print(f"secagg demo: {report['clients']} enterprises, mode {report['mode']}, "
          f"{report['rounds_completed']}/{report['rounds_requested']} rounds completed, "
          f"{report['trainable_parameters']} trainable parameters, {report['wall_s']:.0f} s")
    print()
    print_table(
        [[name, _pct(a["start"]), _pct(a["local_only"]), _pct(a["combined"]),
          f"{report['epsilon'][name]:.2f}", _mb(report["bytes_sent"][name])]
         for name, a in acc.items()]
        + [["all test data", "", "", _pct(report["combined_accuracy"]), "", ""]],
        header=["enterprise", "start", "trained alone", "combined model",
                f"epsilon (delta {report['delta']:g})", "bytes sent"],
    )
    cl = report.get("client_level")
    if cl:
        print()
        print(f"client-level DP (distributed Skellam noise inside the masked sum): noise "
              f"multiplier {cl['noise_multiplier']:g}, L2 clip {cl['l2_clip']:g}, calibrated for "
              f"{cl['min_noise_shares']} noise shares (the masking threshold)")
        print_table(
            [[name, ", ".join(str(s) for s in cl["noise_shares"][name]),
              f"{cl['epsilon'][name]:.3f}"] for name in acc],
            header=["enterprise", "noise shares per round",
                    f"client-level epsilon (delta {report['delta']:g})"])
    srv = report["server"]
    print()
    print_table([
        ["protected", "every update: LoRA adapters + head, DP-SGD noised, then "
         + _PROTECTED[report["mode"]]],
        ["server saw", f"{srv['messages']} messages, {_mb(srv['bytes_received'])}: {srv['held']}"],
        ["server released", "the combined update only"
         + (" (as a ciphertext the enterprises decrypt)" if report["mode"] == "ckks" else "")],
        ["server disk now", f"{srv['bodies_stored_after']} message bodies (erased after each "
         f"round); plaintext updates found: {srv['plaintext_updates_found_on_disk']}"],
        ["aggregate check", f"max |released - plaintext sum| = "
         f"{report['max_abs_error_vs_plaintext']:.2e}"
         + (" (the distributed DP noise, by design)" if cl else "")],
    ], header=["", ""])
    th = report.get("threshold")
    if th:
        print()
        print(f"threshold CKKS: no one holds the key; a decryption needs {th['quorum']} of "
              f"{th['clients']} signed statements (the policy's quorum: with 3 enterprises all "
              f"must sign) and t = {th['threshold']} partial decryptions; decrypted by "
              + "; ".join(f"round {r + 1}: clients {d}" for r, d in enumerate(th["decryptors"])))
    if report.get("workdir"):
        print(f"\nlogs, ledgers and the server store: {report['workdir']}")
    if args.json:
        write_json(args.json, report)
    return 0
