"""Check every secure round in CHECK_DIR against the plaintext weighted mean of its survivors.

    python check_plaintext.py "$PWD/check"

Reads what the apps wrote with the run config ``check-dir`` (see
``secagg_flower_app/plaintext_check.py``); prints one line per round and exits 1 if any round's
released mean is further from the plaintext mean than the fixed-point step.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

from secagg_flower_app.plaintext_check import check_round


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check_dir", type=Path, help="the run's check-dir")
    args = parser.parse_args(argv)
    rounds = sorted(args.check_dir.glob("round-*/released.npz"))
    if not rounds:
        print(f"error: no released round under {args.check_dir}; run the app with "
              f"--run-config \"check-dir='{args.check_dir}'\"", file=sys.stderr)
        return 2
    failed = 0
    for path in rounds:
        try:
            result = check_round(path.parent)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        verdict = "matches" if result.ok else "DOES NOT MATCH"
        print(f"round {result.server_round}: survivors {list(result.survivors)}; released mean "
              f"{verdict} the plaintext mean (max abs error {result.max_abs_error:.3g}, "
              f"tolerance {result.tolerance:.3g})")
        failed += not result.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
