"""Create the example federation's key material in one directory (a stand-in for what each
enterprise does on its own machine): ``id-<i>.json`` (each enterprise's identity, mode 0600) and
``roster.json`` (the public roster every party pins).

    python make_federation.py --out keys --clients 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

from secagg.identity import Identity, Roster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="keys", help="directory to create (keys)")
    parser.add_argument("--clients", type=int, default=3, help="enterprises (3)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(mode=0o700, exist_ok=False)
    identities = [Identity.create(out / f"id-{i}.json", name=f"enterprise-{i}")
                  for i in range(args.clients)]
    Roster.of("flower-example", identities).save(out / "roster.json")
    for i, ident in enumerate(identities):
        print(f"client {i}: {ident.name} {ident.fingerprint}")
    print(f"roster: {out / 'roster.json'}")


if __name__ == "__main__":
    main()
