"""``masking``: pairwise masks (SecAgg, SecAgg+) over :class:`secagg.masking.ServerSession`.

Active (malicious-server) mode only, bound to the federation's pinned roster: adverts and the
consistency round are signed with the enterprises' identity keys and the neighbour graph comes
from the roster. The passive (honest-but-curious) protocol exists only in the library, for
experiments; the service refuses to open it.
"""

from __future__ import annotations

import struct
from typing import Any

from secagg.contract import ReleasedAggregate, http_status
from secagg.dp.client_level import client_level_epsilon
from secagg.dp.distributed import round_noise
from secagg.errors import ErrorCode, InvalidParameter, ProtocolAbort, RejectedMessage
from secagg.identity import Roster
from secagg.masking import MaskingConfig, ServerSession, wire

from .base import (
    ModeSpec,
    Rejected,
    RoundFailed,
    SessionRound,
    bool_option,
    bound_option,
    int_option,
    known_options,
    layout_option,
    rate_option,
    vector_length_option,
)

__all__ = ["MASKING_MODE", "MaskingRound", "masking_config"]

_OPTIONS = {"vector_length", "clip", "value_bits", "max_weight", "dropout_rate", "corrupt_rate",
            "full_graph", "neighbours", "threshold", "noise_headroom", "dp_noise_multiplier",
            "dp_l2_clip"}
#: Integer options and their coarse [low, high] (the library checks the finer rules).
_INTS = {"value_bits": (1, 30), "max_weight": (1, 2**32),
         "noise_headroom": (0, 2**32), "neighbours": (1, 2**31 - 1), "threshold": (1, 2**31 - 1)}
#: Rate options and their (exclusive) upper bound.
_RATES = {"dropout_rate": 1.0, "corrupt_rate": 0.5}


def masking_config(num_clients: int, index: int, options: dict[str, Any],
                   roster: Roster | None) -> dict[str, Any]:
    """An active round's config, bound to the federation's roster (its digest is in the config,
    so every client checks it against the roster it pinned). ``dp_noise_multiplier`` (and
    ``dp_l2_clip``, default ``clip``) turn on client-level distributed DP: every client adds a
    Skellam share calibrated for the round's threshold t of noise shares (the config announces
    it as ``distributed_dp``; clients with a policy check it). :meth:`MaskingConfig.create`'s
    warnings (a small federation's odds of a failed round) are left to the caller, which shows
    them to the operator."""
    known_options("masking", options, {*_OPTIONS, "active"})
    if not bool_option("masking", options, "active") and "active" in options:
        raise InvalidParameter(
            "'active': false is refused: this service runs masking rounds in active "
            "(malicious-server) mode only. Passive mode exists only in the library "
            "(secagg.masking without a roster) for honest-but-curious experiments; leave "
            "'active' out or set it to true")
    if roster is None:
        raise InvalidParameter(
            "this federation has no pinned roster, so its clients cannot verify each other; "
            "create the federation again with `secagg-server federation create --roster "
            "roster.json` (see README, 'Enrolling an enterprise')")
    if len(roster) != num_clients:  # pragma: no cover - federation create enforces it
        raise InvalidParameter(f"the roster has {len(roster)} members, the federation "
                               f"{num_clients} clients")
    layout = layout_option("masking", options)
    if layout is not None:
        options = {**options, "vector_length": layout.size}
    # JSON types and coarse ranges here, each refusal naming the option and what it takes;
    # MaskingConfig.create checks the finer rules (graph degree, threshold, headroom)
    kwargs: dict[str, Any] = {"vector_length": vector_length_option("masking", options)}
    for name in sorted(_OPTIONS & set(options) - {"vector_length"}):
        if name in _INTS:
            if name in ("neighbours", "threshold") and options[name] is None:
                continue  # null: let the server choose, as when it is left out
            kwargs[name] = int_option("masking", options, name, None, *_INTS[name])
        elif name in _RATES:
            kwargs[name] = rate_option("masking", options, name, _RATES[name])
        elif name in ("clip", "dp_noise_multiplier", "dp_l2_clip"):
            kwargs[name] = bound_option("masking", options, name)
        else:  # full_graph
            kwargs[name] = bool_option("masking", options, name)
    cfg = MaskingConfig.create(num_clients=num_clients, round=index, roster=roster, layout=layout,
                               **kwargs)
    noise = round_noise(cfg)
    if noise is not None:  # every client must be able to record the release it will make
        try:
            client_level_epsilon(noise, rounds=1, delta=1e-5)
        except InvalidParameter as exc:
            raise InvalidParameter(f"masking option 'dp_noise_multiplier' "
                                   f"{kwargs.get('dp_noise_multiplier')} gives no finite "
                                   f"client-level epsilon at delta 1e-5 ({exc}); raise it") from None
    return cfg.to_dict()


class MaskingRound(SessionRound):
    """Adapter over :class:`secagg.masking.ServerSession` (party ids = the roster's ids, which
    are the enrolment ids). The session checks every advert and consistency signature against
    the roster as it arrives, so a forged one never reaches the clients (who check again)."""

    session: ServerSession

    def __init__(self, config: dict[str, Any], participants: frozenset[int],
                 roster: Roster | None) -> None:
        self.config = MaskingConfig.from_dict(config)
        if roster is None:
            raise InvalidParameter("masking rounds need the federation's roster")
        self.session = ServerSession(self.config, participants=participants, roster=roster)

    def claimed_sender(self, body: bytes) -> int | None:
        try:
            return wire.peek_header(body).party
        except InvalidParameter:
            return None

    def receive(self, client_id: int, body: bytes) -> None:
        try:
            self.session.receive(body)
        except RejectedMessage as exc:
            # the session says why with a code (never read from the text): a state conflict
            # (409), a wrong sender (403) or a bad message (400)
            want = f"a {self.session.stage.value!r} stage message (see secagg.masking.wire)"
            code = ErrorCode(exc.code)
            raise Rejected(http_status(code), code.value, str(exc), want) from None
        except (ValueError, struct.error, KeyError, TypeError) as exc:
            raise Rejected(400, "invalid_message", f"malformed message: {type(exc).__name__}: "
                           f"{exc}") from None

    def advance(self) -> dict[int, bytes]:
        try:
            return self.session.advance_bytes()
        except ProtocolAbort as exc:  # NotEnoughParticipants included
            raise RoundFailed(str(exc), culprit=exc.culprit) from None

    def result(self) -> tuple[ReleasedAggregate, bytes]:
        agg = self.session.result
        # "excluded": clients a neighbour reported for share boxes that did not open (garbage
        # from a malicious client, or tampering): left out of the sum like dropouts
        meta = ReleasedAggregate(
            mode="masking", round_id=self.config.round, survivors=tuple(agg.survivors),
            dropped=tuple(agg.dropped), excluded=tuple(agg.excluded),
            total_weight=float(agg.total_weight), layout_digest=self.config.layout_digest.hex(),
            extra={"dtype": "<u4", "length": int(agg.total.size),
                   **self._noise_extra(len(agg.survivors))})
        return meta, agg.total.astype("<u4", copy=False).tobytes()


    def _noise_extra(self, survivors: int) -> dict[str, Any]:
        """For a distributed-DP round: the noise shares in the sum (one per survivor) and the
        centring offset (survivors * c) to take off before dequantising."""
        from secagg.dp.distributed import round_noise

        noise = round_noise(self.config)
        if noise is None:
            return {}
        return {"distributed_dp": {"noise_shares": survivors,
                                   "noise_offset": survivors * noise.share_bound,
                                   "min_noise_shares": noise.min_clients}}


MASKING_MODE = ModeSpec("masking", masking_config, MaskingRound,
                        quorum=lambda config: int(config["threshold"]),
                        options_doc="secagg.masking.MaskingConfig.create")
