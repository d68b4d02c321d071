"""secagg: privacy-preserving federated fine-tuning.

The protocol core, pure and transport-free. ``import secagg`` loads neither torch nor tenseal:
heavy subpackages are imported on first use. Both parties build on it (``secagg_clients``,
``secagg_server``); it imports neither, nor any application (``tests/test_layers.py``).
"""

from __future__ import annotations

from secagg.errors import (
    AlreadyUsed,
    AuthenticationFailed,
    InvalidParameter,
    NotEnoughParticipants,
    ProtocolAbort,
    RejectedMessage,
    SecAggError,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyUsed",
    "AuthenticationFailed",
    "InvalidParameter",
    "NotEnoughParticipants",
    "ProtocolAbort",
    "RejectedMessage",
    "SecAggError",
    "__version__",
]
