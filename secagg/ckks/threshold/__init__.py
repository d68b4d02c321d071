"""Threshold CKKS: no single key holder (each party's own secret, t-out-of-n decryption with
smudging). The core is sans-IO; see :mod:`.protocol` for the scheme, :mod:`.params` for the
smudging argument and the parameter choice, :mod:`.sharing` for why the key sharing is replicated
rather than Shamir."""

from secagg.ckks.threshold.params import ThresholdParams, plan
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
    "open_bundle",
    "plan",
    "public_key_contribution",
    "round_seed",
    "seal_bundle",
    "setup_digest",
]
