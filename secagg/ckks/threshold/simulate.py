"""An honest threshold CKKS federation in one process (tests, benchmarks, examples): identities,
the pinned roster, bound parties with their shares dealt, and every step of a round through the
wire format -- uploads, the server's sum, the statements, the partial decryptions, the combine.

Shares are handed over directly here; :mod:`.transport` seals and signs them for real.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from secagg.ckks.threshold.params import ThresholdParams
from secagg.ckks.threshold.policy import DecryptionPolicy, decryption_policy
from secagg.ckks.threshold.protocol import ThresholdParty, aggregate, chunks_for, combine
from secagg.ckks.threshold.rings import RingContext
from secagg.ckks.threshold.wire import (
    decode_aggregate,
    decode_partial,
    decode_upload,
    encode_aggregate,
    encode_partial,
    encode_upload,
    header_chunks,
)
from secagg.identity import Identity, Roster

__all__ = ["Federation"]


class Federation:
    """``len(ids)`` enterprises with threshold ``threshold`` under ``policy`` (default: the
    roster's, ``corrupt_rate`` 0.05)."""

    def __init__(self, ring: RingContext | ThresholdParams, ids: Sequence[int], threshold: int,
                 *, policy: DecryptionPolicy | None = None, corrupt: int | None = None,
                 name: str = "threshold-federation") -> None:
        self.ring = ring if isinstance(ring, RingContext) else RingContext(ring)
        self.ids = tuple(sorted(ids))
        self.threshold = threshold
        if policy is None:
            policy = decryption_policy(len(self.ids), threshold, corrupt=corrupt) \
                if corrupt is not None else None
        self.identities = {i: Identity.generate(f"enterprise-{i}") for i in self.ids}
        self.roster = Roster(name, tuple(self.identities[i].member(i) for i in self.ids))
        self.parties = {i: ThresholdParty(self.ring, i, self.ids, threshold,
                                          identity=self.identities[i], roster=self.roster,
                                          policy=policy) for i in self.ids}
        first = self.parties[self.ids[0]]
        assert first.setup is not None and first.policy is not None
        self.digest: bytes = first.setup
        self.policy: DecryptionPolicy = first.policy
        for p in self.parties.values():
            for j, bundle in p.deal().items():
                self.parties[j].receive(bundle)

    # -- the steps, each through the bytes ---------------------------------------------------

    def upload(self, round_id: int, values: Mapping[int, npt.ArrayLike]) -> dict[int, bytes]:
        out = {}
        for i, x in values.items():
            c0 = self.parties[i].encrypt_round(x, round_id)
            out[i] = encode_upload(self.ring, identity=self.identities[i],
                                   config_digest=self.digest, round_id=round_id, sender=i,
                                   residues=c0)
        return out

    def server_sum(self, round_id: int, uploads: Mapping[int, bytes]) -> bytes:
        first, chunks = header_chunks(next(iter(uploads.values())))
        residues = {i: decode_upload(b, self.ring, roster=self.roster, config_digest=self.digest,
                                     round_id=round_id, chunks=chunks, first_chunk=first,
                                     sender=i).residues for i, b in uploads.items()}
        return encode_aggregate(self.ring, config_digest=self.digest, round_id=round_id,
                                uploaders=sorted(uploads), residues=aggregate(self.ring, residues),
                                first_chunk=first)

    def statements(self, round_id: int, aggregate_blob: bytes, uploads: Mapping[int, bytes],
                   signers: Iterable[int]) -> dict[int, bytes]:
        return {j: self.parties[j].sign_statement(aggregate_blob, uploads, round_id=round_id)
                for j in signers}

    def partials(self, round_id: int, aggregate_blob: bytes, statements: Mapping[int, bytes],
                 decryptors: Iterable[int]) -> dict[int, bytes]:
        group = sorted(set(decryptors))
        users = self._uploaders(round_id, aggregate_blob)
        out = {}
        for j in group:
            shares = self.parties[j].partial_decrypt(aggregate_blob, statements, group,
                                                     round_id=round_id)
            out[j] = encode_partial(self.ring, identity=self.identities[j],
                                    config_digest=self.digest, round_id=round_id, sender=j,
                                    uploaders=users, decryptors=group, residues=shares,
                                    first_chunk=header_chunks(aggregate_blob)[0])
        return out

    def release(self, round_id: int, aggregate_blob: bytes, partials: Mapping[int, bytes],
                length: int) -> npt.NDArray[np.float64]:
        first, chunks = header_chunks(aggregate_blob)
        agg = decode_aggregate(aggregate_blob, self.ring, config_digest=self.digest,
                               round_id=round_id, chunks=chunks, first_chunk=first)
        group = sorted(partials)
        decoded = {j: decode_partial(b, self.ring, roster=self.roster, config_digest=self.digest,
                                     round_id=round_id, chunks=chunks, first_chunk=first,
                                     uploaders=agg.uploaders, decryptors=group,
                                     sender=j).residues for j, b in partials.items()}
        return combine(self.ring, list(agg.residues), decoded, decryptors=group,
                       threshold=self.threshold, length=length)

    def run_round(self, round_id: int, values: Mapping[int, npt.ArrayLike], *,
                  signers: Iterable[int] | None = None,
                  decryptors: Iterable[int] | None = None) -> npt.NDArray[np.float64]:
        """Every party in ``values`` uploads; ``signers`` (default: all) sign; ``decryptors``
        (default: the first ``t`` signers) decrypt; the released sum."""
        length = max(np.asarray(v).size for v in values.values())
        uploads = self.upload(round_id, values)
        agg = self.server_sum(round_id, uploads)
        signers = list(self.ids if signers is None else signers)
        statements = self.statements(round_id, agg, uploads, signers)
        group = sorted(signers)[: self.threshold] if decryptors is None else list(decryptors)
        return self.release(round_id, agg, self.partials(round_id, agg, statements, group),
                            length)

    def _uploaders(self, round_id: int, aggregate_blob: bytes) -> tuple[int, ...]:
        first, chunks = header_chunks(aggregate_blob)
        return decode_aggregate(aggregate_blob, self.ring, config_digest=self.digest,
                                round_id=round_id, chunks=chunks, first_chunk=first).uploaders

    def chunks(self, length: int) -> int:
        return chunks_for(self.ring, length)
