"""``secagg-client identity|roster|layout``: the enterprise's offline tools.

``identity create|show`` and ``roster create|show`` enrol the enterprise
(:mod:`secagg_clients.enrolment`): its long-term identity and the federation's roster, which
every enterprise pins and compares out of band. ``layout export`` writes the model layout (the
``ParamSpec`` JSON) the operator opens rounds with (``secagg-server round open --from-model``).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["enrol", "layout"]


ENROL_DESCRIPTION = """\
Enrolling an enterprise in a federation, before the server's operator creates it:

  1. each enterprise, on its own machine:
       secagg-client identity create --out energy.identity.json --name energy
     (the identity file stays there, mode 0600; energy.identity.json.pub.json is public)
  2. the enterprises exchange their .pub.json files; one assembles the roster (ids 0.. in
     argument order) and sends roster.json to all, and the operator:
       secagg-client roster create --federation city --out roster.json a.pub.json b.pub.json
  3. every enterprise runs `secagg-client roster show roster.json` and compares the
     fingerprints and the digest with the others over a second channel (a call)
  4. the operator: secagg-server federation create --data D --name city --roster roster.json
  5. each enterprise: secagg-client --server URL --token-file T --identity energy.identity.json
     --roster roster.json ...
"""


def _enrol_parser() -> argparse.ArgumentParser:
    from secagg.cli._checks import ArgumentParser, name

    parser = ArgumentParser(prog="secagg-client", description=ENROL_DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True, metavar="{identity,roster}")
    ident = sub.add_parser("identity", help="this enterprise's long-term identity")
    isub = ident.add_subparsers(dest="action", required=True, metavar="{create,show}")
    create = isub.add_parser("create", help="create an identity file and its public entry",
                             description="Creates PATH (the private identity, mode 0600; keep it "
                             "on this machine) and PATH.pub.json (name and public key: send it "
                             "to the other enterprises), and prints the public key and its "
                             "fingerprint.")
    create.add_argument("--out", required=True, metavar="PATH", help="identity file to create")
    create.add_argument("--name", required=True, type=name,
                        help="this enterprise's name in the roster "
                        "(letters, digits, '_', '.', '-')")
    show = isub.add_parser("show", help="print an identity's name, public key and fingerprint")
    show.add_argument("path", metavar="PATH")
    rost = sub.add_parser("roster", help="assemble or show the federation's roster")
    rsub = rost.add_subparsers(dest="action", required=True, metavar="{create,show}")
    rcreate = rsub.add_parser("create", help="assemble a roster from public entries",
                              description="Assembles the roster from the enterprises' public "
                              "entries (PATH.pub.json); client ids are 0, 1, ... in argument "
                              "order. Then compare it with `secagg-client roster show`.")
    rcreate.add_argument("--federation", required=True, type=name,
                         help="the federation's name (the "
                         "operator's `federation create --name`)")
    rcreate.add_argument("--out", required=True, metavar="JSON", help="roster file to write")
    rcreate.add_argument("entries", nargs="+", metavar="PUB.json",
                         help="public entries, one per enterprise")
    rshow = rsub.add_parser("show", help="print ids, names, fingerprints and the digest")
    rshow.add_argument("path", metavar="JSON")
    rshow.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _print_roster(roster: Any) -> None:
    print(f"federation {roster.federation!r}: {len(roster)} members")
    width = max(len(mm.name) for mm in roster.members)
    for mm in roster.members:
        print(f"  {mm.client_id:>3}  {mm.name:<{width}}  {mm.fingerprint}")
    print(f"digest {roster.digest().hex()}")


def enrol(argv: list[str]) -> int:
    """``secagg-client identity ...`` / ``secagg-client roster ...``."""
    import json
    import sys
    from pathlib import Path

    from secagg.identity import Identity, Roster

    from .enrolment import assemble_roster, create_identity, public_entry_path

    args = _enrol_parser().parse_args(argv)
    if args.what == "identity" and args.action == "create":
        identity = create_identity(args.out, name=args.name)
        print(f"created identity {args.out} (mode 600: keep it on this machine)")
        print(f"name         {identity.name}")
        print(f"public key   {identity.public_key.hex()}")
        print(f"fingerprint  {identity.fingerprint}")
        print(f"public entry {public_entry_path(args.out)} (send it to the other enterprises)")
        return 0
    if args.what == "identity":
        identity = Identity.load(args.path)
        print(f"name         {identity.name}")
        print(f"public key   {identity.public_key.hex()}")
        print(f"fingerprint  {identity.fingerprint}")
        return 0
    if args.action == "create":
        out = Path(args.out)
        if out.exists():
            print(f"secagg-client: error: {out} already exists; choose another --out or move it "
                  "aside", file=sys.stderr)
            return 2
        roster = assemble_roster(args.federation, list(args.entries))
        roster.save(out)
        print(f"wrote {out}")
        _print_roster(roster)
        print("compare these fingerprints and the digest with every enterprise over a second "
              "channel before using the roster")
        return 0
    roster = Roster.load(args.path)
    if args.json:
        print(json.dumps({"federation": roster.federation, "digest": roster.digest().hex(),
                          "members": [{"id": mm.client_id, "name": mm.name,
                                       "public_key": mm.public_key.hex(),
                                       "fingerprint": mm.fingerprint}
                                      for mm in roster.members]}))
    else:
        _print_roster(roster)
    return 0


def layout(argv: list[str]) -> int:
    """``secagg-client layout export``: write the DP-LoRA model's layout (its trainable
    :class:`~secagg.encoding.ParamSpec` as JSON), which the operator opens rounds with
    (``secagg-server round open --from-model``), so nobody types ``vector_length``."""
    import sys
    from pathlib import Path

    from secagg.cli._checks import ArgumentParser, number

    parser = ArgumentParser(prog="secagg-client layout",
                            description="the model layout the federation fine-tunes")
    sub = parser.add_subparsers(dest="action", required=True, metavar="{export}")
    export = sub.add_parser("export", help="write the model's ParamSpec JSON (tensor names, "
                            "shapes, dtypes) for the operator")
    export.add_argument("--out", required=True, metavar="JSON", help="file to write (- for stdout)")
    export.add_argument("--encoder", choices=("minilm", "test_only_tiny"), default="minilm",
                        help="text encoder, as the enterprises train it (minilm)")
    export.add_argument("--lora-rank", type=number(int, low=1, high=4096), default=8,
                        help="LoRA rank, as the enterprises train it (8)")
    args = parser.parse_args(argv)
    from .model import build_model
    from .updates import trainable_spec

    spec = trainable_spec(build_model(encoder=args.encoder, lora_rank=args.lora_rank))
    text = spec.to_json() + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        try:
            Path(args.out).write_text(text)
        except OSError as exc:
            print(f"secagg-client layout: error: cannot write {args.out}: {exc.strerror}",
                  file=sys.stderr)
            return 2
        print(f"wrote the model layout ({len(spec.tensors)} tensors, {spec.size} parameters, "
              f"digest {spec.digest().hex()[:16]}...) to {args.out}", file=sys.stderr)
    return 0
