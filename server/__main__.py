"""``python -m secagg_server`` is ``secagg-server``.

An unsafe data directory (someone else's, group/world-writable) is refused by the store with a
message saying how to fix it; here that message is the whole output, for every command."""

import sys

from .cli import main
from .store import DataDirError

try:
    code = main()
except DataDirError as exc:
    print(f"secagg-server: error: {exc}", file=sys.stderr)
    code = 2
raise SystemExit(code)
