"""Sizes of the masking protocol's fields and the largest valid client message per stage.

The server refuses a body over :func:`message_limit` before it parses it, so a client cannot
make it allocate more than one honest message's worth per stage.
"""

from __future__ import annotations

from secagg.encoding.packing import packed_size
from secagg.hazmat import shamir
from secagg.hazmat.aead import NONCE_BYTES, TAG_BYTES
from secagg.masking import keys
from secagg.masking.config import MaskingConfig, Stage

__all__ = ["REVEALED_SHARE_BYTES", "SEALED_SHARE_BYTES", "SHARE_COMMITMENTS_BYTES",
           "message_limit"]

SEALED_SHARE_BYTES = NONCE_BYTES + 2 * (shamir.SHARE_BYTES + keys.SALT_BYTES) + TAG_BYTES
REVEALED_SHARE_BYTES = shamir.SHARE_BYTES + keys.SALT_BYTES  # share || salt
SHARE_COMMITMENTS_BYTES = 2 * keys.COMMITMENT_BYTES  # key part, seed part
_HEADER_BYTES = 64


def message_limit(config: MaskingConfig, stage: Stage) -> int:
    """Upper bound on one valid client message at ``stage`` (a bare header once it is done)."""
    k = config.neighbours
    if stage is Stage.DONE:
        return _HEADER_BYTES
    return _HEADER_BYTES + {
        Stage.ADVERTISE: 3 * 36 + 68,
        Stage.SHARE: 12 + k * (8 + SEALED_SHARE_BYTES) + (k + 1) * (8 + SHARE_COMMITMENTS_BYTES)
        + 64,
        Stage.MASKED_INPUT: 8 + 4 * k + packed_size(config.wire_length, config.mod_bits),
        Stage.CONSISTENCY: 4 + 64,
        Stage.UNMASK: 12 + (k + 1) * (8 + REVEALED_SHARE_BYTES) + k * (8 + keys.MASK_KEY_BYTES),
    }[stage]
