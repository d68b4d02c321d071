"""Threshold CKKS: no single key holder (each party's own secret, t-out-of-n decryption with
smudging, each decryption only for a once-per-round statement that a quorum of parties signed).
The core is sans-IO; :mod:`.session` turns it into a round (the config, the server's and a
client's state machines, fresh keys every round), which the server runs as mode
``ckks-threshold`` and the demo as ``secagg demo --mode ckks-threshold``. See :mod:`.protocol` for
the scheme, :mod:`.policy` for the corrupt count, the statement quorum and the minimum uploaders,
:mod:`.params` for the smudging argument and the parameter choice, :mod:`.sharing` for why the
key sharing is replicated rather than Shamir, :mod:`.wire` for the signed, bit-packed messages,
:mod:`.simulate` for an honest federation in one process."""

from secagg.ckks.threshold.params import ThresholdParams, default_threshold, plan
from secagg.ckks.threshold.policy import DecryptionPolicy, decryption_policy
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
from secagg.ckks.threshold.session import ThresholdRoundConfig
from secagg.ckks.threshold.sharing import ShareBundle
from secagg.ckks.threshold.simulate import Federation
from secagg.ckks.threshold.transport import SealedBundle, open_bundle, seal_bundle, setup_digest
from secagg.ckks.threshold.wire import (
    aggregate_digest,
    decode_aggregate,
    decode_partial,
    decode_statement,
    decode_upload,
    encode_aggregate,
    encode_partial,
    encode_statement,
    encode_upload,
)

__all__ = [
    "DecryptionPolicy",
    "Federation",
    "RingContext",
    "SealedBundle",
    "ShareBundle",
    "ThresholdParams",
    "ThresholdParty",
    "ThresholdRoundConfig",
    "aggregate",
    "aggregate_digest",
    "assemble_public_key",
    "chunk_seed",
    "chunks_for",
    "combine",
    "decode_aggregate",
    "decode_partial",
    "decode_statement",
    "decode_upload",
    "decryption_policy",
    "default_threshold",
    "encode_aggregate",
    "encode_partial",
    "encode_statement",
    "encode_upload",
    "open_bundle",
    "plan",
    "public_key_contribution",
    "round_seed",
    "seal_bundle",
    "setup_digest",
]
