"""The untrusted aggregation server: an HTTP service over the sans-IO protocol sessions of
:mod:`secagg`, a round coordinator with stage deadlines, and a durable SQLite round store.

Installed as ``secagg_server`` (the repository folder is ``server/``). Run it with
``secagg-server --host H --port P --data DIR``; create a federation with
``secagg-server federation create --data DIR --name N --roster roster.json``. The operator's
Python side (start the process, create the federation, open rounds) is
:mod:`secagg_server.operator`. It imports :mod:`secagg` and never the client side, torch, peft,
opacus or transformers (``tests/test_layers.py`` checks every import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cli import main
from .modes import ModeSpec, RoundProtocol, default_modes, register_mode
from .store import Store

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["ModeSpec", "RoundProtocol", "Store", "create_app", "default_modes", "main",
           "register_mode"]


def __getattr__(name: str) -> Any:
    """``create_app`` loads FastAPI: only when asked for (``secagg-server --help`` and the
    operator's round commands never load it)."""
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
