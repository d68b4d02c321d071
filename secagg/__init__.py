"""secagg: privacy-preserving federated fine-tuning.

The protocol core, pure and transport-free. ``import secagg`` loads neither torch nor tenseal:
heavy subpackages are imported on first use.
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
