"""Threshold CKKS: no single key holder (each party's own secret, t-out-of-n decryption with
smudging). The core is sans-IO; see :mod:`.protocol` for the scheme, :mod:`.params` for the
smudging argument and the parameter choice, :mod:`.sharing` for why the key sharing is replicated
rather than Shamir, :mod:`.wire` for the signed, bit-packed messages."""

from secagg.ckks.threshold.params import ThresholdParams, default_threshold, plan
from secagg.ckks.threshold.protocol import (
    ThresholdParty,
    aggregate,
    assemble_public_key,
    chunk_seed,
    chunks_for,
    combine,
    public_key_contribution,
    round_seed,
)
from secagg.ckks.threshold.rings import RingContext
from secagg.ckks.threshold.sharing import ShareBundle
from secagg.ckks.threshold.transport import SealedBundle, open_bundle, seal_bundle, setup_digest
from secagg.ckks.threshold.wire import (
    decode_aggregate,
    decode_partial,
    decode_upload,
    encode_aggregate,
    encode_partial,
    encode_upload,
)

__all__ = [
    "RingContext",
    "SealedBundle",
    "ShareBundle",
    "ThresholdParams",
    "ThresholdParty",
    "aggregate",
    "assemble_public_key",
    "chunk_seed",
    "chunks_for",
    "combine",
    "decode_aggregate",
    "decode_partial",
    "decode_upload",
    "default_threshold",
    "encode_aggregate",
    "encode_partial",
    "encode_upload",
    "open_bundle",
    "plan",
    "public_key_contribution",
    "round_seed",
    "seal_bundle",
    "setup_digest",
]
