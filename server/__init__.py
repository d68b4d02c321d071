"""The untrusted aggregation server: an HTTP service over the sans-IO protocol sessions of
:mod:`secagg`, a round coordinator with stage deadlines, and a durable SQLite round store.

Run it with ``secagg-server --host H --port P --data DIR``; create a federation with
``secagg-server federation create --data DIR --name N --clients K``. It never imports torch,
peft or opacus.
"""

from __future__ import annotations

from server.app import create_app
from server.cli import main
from server.modes import MODES, ModeSpec, RoundProtocol, register_mode
from server.store import Store

__all__ = ["MODES", "ModeSpec", "RoundProtocol", "Store", "create_app", "main", "register_mode"]
