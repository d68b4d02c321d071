"""``ckks-threshold``: threshold CKKS (no single key holder) over
:class:`secagg.ckks.threshold.session.ServerSession`.

Every enterprise draws a fresh CKKS secret each round and deals it to the others by replicated
t-out-of-n sharing through sealed, roster-signed share envelopes that this server relays but
cannot open. Uploads are encryptions under each sender's own secret; the server sums them from
public material, and a decryption needs the signed statements of the policy's quorum and the
smudged partial decryptions of at least ``t`` enterprises that hold shares of every uploader.
The server combines them and releases the plaintext weighted sum and total weight, like
masking. Five stages, the session's: ``advert``, ``deal``, ``upload``, ``statement``,
``partial`` (retried once with the decryptors who answered when some vanished and at least
``t`` remain). Too few enterprises at any stage end the round with a reason naming the stage,
what was short and what was needed.

Options: ``vector_length`` (or ``layout``), ``value_bound`` and ``weight_bound`` (1.0 each:
every value is clipped to ``value_bound``, every weight at most ``weight_bound``),
``threshold`` (default ``n // 2 + 1``) and ``target_error`` (default 1e-6, relative to the
sum's range ``n * weight_bound * max(value_bound, 1)``). The corrupt count, the statement
quorum and the minimum number of uploaders come from the roster's policy
(:mod:`secagg.ckks.threshold.policy`) and are shown in the config. With three enterprises the
quorum is all three: every one must sign for a decryption.

This module imports TenSEAL: :func:`secagg_server.modes.default_modes` loads it only when a
threshold round is opened or rebuilt.
"""

from __future__ import annotations

import secrets
import struct
from typing import Any

import numpy as np

from secagg.ckks.threshold.params import default_threshold
from secagg.ckks.threshold.session import (
    DEFAULT_TARGET_ERROR,
    PROTOCOL,
    ServerSession,
    ServerStage,
    ThresholdRoundConfig,
    peek,
)
from secagg.contract import ReleasedAggregate
from secagg.errors import (
    ErrorCode,
    InvalidParameter,
    NotEnoughParticipants,
    ProtocolAbort,
    RejectedMessage,
    SecAggError,
)
from secagg.identity import Roster

from .base import (
    Rejected,
    RoundFailed,
    SessionRound,
    bound_option,
    found,
    int_option,
    known_options,
    layout_option,
    pinned_roster_ids,
    vector_length_option,
)

__all__ = ["MODE", "ThresholdRound", "threshold_config"]

MODE = "ckks-threshold"
_OPTIONS = ("vector_length", "value_bound", "weight_bound", "threshold", "target_error")


def threshold_config(num_clients: int, index: int, options: dict[str, Any],
                     roster: Roster | None) -> dict[str, Any]:
    """The JSON config of a threshold round, validated by building the
    :class:`ThresholdRoundConfig` (the parameter plan and the policy included). Bound to the
    federation's pinned roster (its digest, its ids, its corrupt rate and security target); the
    session nonce is drawn here and stored with the round, so a restart rebuilds the same
    config."""
    known_options(MODE, options, _OPTIONS)
    pinned_roster_ids(MODE, roster, num_clients,
                      "each other's share envelopes, uploads and statements")
    assert roster is not None
    if num_clients < 2:
        raise InvalidParameter(f"{MODE} rounds need >= 2 clients, the federation has "
                               f"{num_clients}")
    layout = layout_option(MODE, options)
    if layout is not None:
        options = {**options, "vector_length": layout.size}
    vector_length = vector_length_option(MODE, options)
    # at least a majority: every client refuses a weaker round (session._check_policy)
    threshold = int_option(MODE, options, "threshold", default_threshold(num_clients),
                           default_threshold(num_clients), num_clients)
    target = options.get("target_error", DEFAULT_TARGET_ERROR)
    if isinstance(target, bool) or not isinstance(target, int | float) \
            or not 0 < float(target) <= 1e-2:
        raise InvalidParameter(f"{MODE} option 'target_error' must be a number in (0, 0.01] "
                               f"(the released sum's error relative to its range), "
                               f"{found(target)}")
    cfg = ThresholdRoundConfig.for_roster(
        roster, round=index, vector_length=vector_length, session=secrets.token_bytes(32),
        value_bound=bound_option(MODE, options, "value_bound"),
        weight_bound=bound_option(MODE, options, "weight_bound"), threshold=threshold,
        target_error=float(target),
        layout_digest=b"" if layout is None else layout.digest())
    return cfg.to_dict()


#: The client message each stage takes (its routing name, secagg.ckks.threshold.session.peek).
_STAGE_KIND = {ServerStage.ADVERT: "advert", ServerStage.DEAL: "deal",
               ServerStage.UPLOAD: "upload", ServerStage.STATEMENT: "statement",
               ServerStage.PARTIAL: "partial"}


class ThresholdRound(SessionRound):
    """Adapter over :class:`ServerSession` (client ids = the roster's ids). The session checks
    every message completely before it changes anything (roster signatures of adverts,
    envelopes, uploads, statements and partial decryptions; box keys; sizes; residues), so this
    adapter routes bytes, refuses what is not expected from a client at this stage, and maps
    refusals onto HTTP answers and failed closes onto the operator's reasons.

    Deterministic: the session holds no randomness (the session nonce is in the config) and
    reads no clock, so replaying the stored messages and closes rebuilds it after a crash."""

    session: ServerSession

    def __init__(self, config: dict[str, Any], participants: frozenset[int],
                 roster: Roster | None) -> None:
        if roster is None:
            raise InvalidParameter(f"{MODE} rounds need the federation's pinned roster")
        self.config = ThresholdRoundConfig.from_dict(config)
        if participants != frozenset(self.config.client_ids):
            raise InvalidParameter(f"{MODE} round config names clients "
                                   f"{list(self.config.client_ids)}, the round has "
                                   f"{sorted(participants)}")
        self.session = ServerSession(self.config, roster=roster, participants=participants)

    def claimed_sender(self, body: bytes) -> int | None:
        return peek(body)[1]

    def _want(self) -> str:
        stage = self.session.stage
        kind = _STAGE_KIND.get(stage)
        if kind is None:
            return "nothing: the round is over"
        return (f"at stage {stage.value!r}: one '{kind}' message from each client awaited "
                "(see secagg.ckks.threshold.session)")

    def receive(self, client_id: int, body: bytes) -> None:
        stage, want = self.session.stage, self._want()
        if stage is ServerStage.DONE:
            raise Rejected(409, "round_complete", "the round is already complete")
        kind, sender = peek(body)
        if sender is not None and sender != client_id:
            raise Rejected(403, "wrong_sender", f"the message says it is from client {sender}; "
                           f"it was sent as client {client_id}", f"sender {client_id}")
        if kind is not None and kind in _STAGE_KIND.values() and kind != _STAGE_KIND[stage]:
            raise Rejected(409, "wrong_stage", f"a '{kind}' message does not belong to stage "
                           f"{stage.value!r}", want)
        if client_id not in self.session.expected:
            raise self._not_expected(client_id, stage, want)
        try:
            self.session.receive(body)
        except RejectedMessage as exc:
            if exc.code is ErrorCode.REPLAYED:
                raise Rejected(409, "replayed", str(exc), want) from None
            raise Rejected(400, "invalid_message", str(exc), want) from None
        except (SecAggError, ValueError, struct.error, KeyError, TypeError, IndexError) as exc:
            raise Rejected(400, "invalid_message", f"malformed message: {type(exc).__name__}: "
                           f"{exc}", want) from None

    def _not_expected(self, client_id: int, stage: ServerStage, want: str) -> Rejected:
        if client_id in self.session.accepted:
            return Rejected(409, "conflicting_message", f"client {client_id} already sent its "
                            f"'{_STAGE_KIND[stage]}' message this round", want)
        why = {ServerStage.ADVERT: "it is not a participant of this round",
               ServerStage.DEAL: "it sent no valid key advert in time",
               ServerStage.UPLOAD: "its deal was not accepted in time, so no one holds its "
                                   "shares",
               ServerStage.STATEMENT: "it did not upload (or was left out of the sum's signers)",
               ServerStage.PARTIAL: "it is not in the current decrypting set"}[stage]
        return Rejected(409, "not_expected", f"client {client_id} has nothing to send at stage "
                        f"{stage.value!r}: {why}", want)

    def advance(self) -> dict[int, bytes]:
        stage, silent = self.session.stage, self.session.expected
        try:
            return self.session.advance()
        except NotEnoughParticipants as exc:
            gone = f"; silent at this stage: clients {sorted(silent)}" if silent else ""
            raise RoundFailed(f"{MODE} round ended at stage {stage.value!r}: {exc.reason}"
                              f"{gone}") from None
        except ProtocolAbort as exc:
            raise RoundFailed(str(exc), culprit=exc.culprit) from None

    def result(self) -> tuple[ReleasedAggregate, bytes]:
        res = self.session.result  # ProtocolAbort until the partial stage closed
        cfg = self.config
        meta = ReleasedAggregate(
            mode=MODE, round_id=cfg.round, survivors=res.uploaders, dropped=res.dropped,
            excluded=tuple(sorted(res.excluded)), total_weight=res.total_weight,
            layout_digest=cfg.layout_digest.hex(), encrypted=False,
            extra={"protocol": PROTOCOL, "length": cfg.vector_length,
                   "threshold": cfg.threshold, "quorum": cfg.quorum,
                   "signers": list(res.signers), "decryptors": list(res.decryptors),
                   "decryption_attempts": res.attempts, "max_error": cfg.max_error})
        payload = np.ascontiguousarray(res.weighted_sum, dtype="<f8").tobytes()
        return meta, payload
