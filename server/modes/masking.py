"""``masking``: pairwise masks (SecAgg, SecAgg+) over :class:`secagg.masking.ServerSession`.

Active (malicious-server) mode only, bound to the federation's pinned roster: adverts and the
consistency round are signed with the enterprises' identity keys and the neighbour graph comes
from the roster. The passive (honest-but-curious) protocol exists only in the library, for
experiments; the service refuses to open it.
"""

from __future__ import annotations

import struct
from typing import Any

from secagg.errors import InvalidParameter, ProtocolAbort, RejectedMessage
from secagg.identity import Roster
from secagg.masking import MaskingConfig, ServerSession, Stage, wire

from .base import (
    ModeSpec,
    Rejected,
    RoundFailed,
    bool_option,
    bound_option,
    int_option,
    rate_option,
)

__all__ = ["MASKING_MODE", "MaskingRound", "masking_config"]

_OPTIONS = {"vector_length", "clip", "value_bits", "max_weight", "dropout_rate", "corrupt_rate",
            "full_graph", "neighbours", "threshold", "noise_headroom"}
#: Integer options and their coarse [low, high] (the library checks the finer rules).
_INTS = {"vector_length": (1, 2**31 - 1), "value_bits": (1, 30), "max_weight": (1, 2**32),
         "noise_headroom": (0, 2**32), "neighbours": (1, 2**31 - 1), "threshold": (1, 2**31 - 1)}
#: Rate options and their (exclusive) upper bound.
_RATES = {"dropout_rate": 1.0, "corrupt_rate": 0.5}


def masking_config(num_clients: int, index: int, options: dict[str, Any],
                   roster: Roster | None) -> dict[str, Any]:
    """An active round's config, bound to the federation's roster (its digest is in the config,
    so every client checks it against the roster it pinned). :meth:`MaskingConfig.create`'s
    warnings (a small federation's odds of a failed round) are left to the caller, which shows
    them to the operator."""
    unknown = set(options) - _OPTIONS - {"active"}
    if unknown:
        raise InvalidParameter(f"unknown masking option(s) {sorted(unknown)}; allowed: "
                               f"{sorted(_OPTIONS)}")
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
    if "vector_length" not in options:
        raise InvalidParameter("masking rounds need 'vector_length' (parameters per update)")
    # JSON types and coarse ranges here, each refusal naming the option and what it takes;
    # MaskingConfig.create checks the finer rules (graph degree, threshold, headroom)
    kwargs: dict[str, Any] = {}
    for name in sorted(_OPTIONS & set(options)):
        if name in _INTS:
            if name in ("neighbours", "threshold") and options[name] is None:
                continue  # null: let the server choose, as when it is left out
            kwargs[name] = int_option("masking", options, name, None, *_INTS[name])
        elif name in _RATES:
            kwargs[name] = rate_option("masking", options, name, _RATES[name])
        elif name == "clip":
            kwargs[name] = bound_option("masking", options, name)
        else:  # full_graph
            kwargs[name] = bool_option("masking", options, name)
    cfg = MaskingConfig.create(num_clients=num_clients, round=index, roster=roster, **kwargs)
    return cfg.to_dict()


_REJECT_CODES = (  # how a RejectedMessage reason starts -> (HTTP status, code)
    ("replayed message", 409, "replayed"),
    ("a second, different message", 409, "conflicting_message"),
    ("the round is already complete", 409, "round_complete"),
    ("expected ", 409, "wrong_stage"),
)


class MaskingRound:
    """Adapter over :class:`secagg.masking.ServerSession` (party ids = the roster's ids, which
    are the enrolment ids). The session checks every advert and consistency signature against
    the roster as it arrives, so a forged one never reaches the clients (who check again)."""

    def __init__(self, config: dict[str, Any], participants: frozenset[int],
                 roster: Roster | None) -> None:
        self.config = MaskingConfig.from_dict(config)
        if roster is None:
            raise InvalidParameter("masking rounds need the federation's roster")
        self.session = ServerSession(self.config, participants=participants, roster=roster)

    @property
    def stage(self) -> str:
        return self.session.stage.value

    @property
    def expected(self) -> frozenset[int]:
        return self.session.expected

    @property
    def done(self) -> bool:
        return self.session.stage is Stage.DONE

    def max_message_bytes(self) -> int:
        return self.session.max_message_bytes()

    def claimed_sender(self, body: bytes) -> int | None:
        try:
            return wire.peek_header(body).party
        except InvalidParameter:
            return None

    def receive(self, client_id: int, body: bytes) -> None:
        try:
            self.session.receive(body)
        except RejectedMessage as exc:
            want = f"a {self.session.stage.value!r} stage message (see secagg.masking.wire)"
            if exc.sender is not None:  # it decoded: a state conflict, or a bad field (400)
                if "; not expected at " in exc.reason:
                    raise Rejected(409, "not_expected", str(exc), want) from None
                for prefix, status, code in _REJECT_CODES:
                    if exc.reason.startswith(prefix):
                        raise Rejected(status, code, str(exc), want) from None
            raise Rejected(400, "invalid_message", str(exc), want) from None
        except (ValueError, struct.error, KeyError, TypeError) as exc:
            raise Rejected(400, "invalid_message", f"malformed message: {type(exc).__name__}: "
                           f"{exc}") from None

    def advance(self) -> dict[int, bytes]:
        try:
            return self.session.advance_bytes()
        except ProtocolAbort as exc:  # NotEnoughParticipants included
            raise RoundFailed(str(exc)) from None

    def result(self) -> tuple[dict[str, Any], bytes]:
        agg = self.session.result
        # "excluded": clients a neighbour reported for share boxes that did not open (garbage
        # from a malicious client, or tampering): left out of the sum like dropouts
        meta = {"kind": "masking", "dtype": "<u4", "length": int(agg.total.size),
                "total_weight": agg.total_weight, "survivors": list(agg.survivors),
                "dropped": list(agg.dropped), "excluded": list(agg.excluded)}
        return meta, agg.total.astype("<u4", copy=False).tobytes()


MASKING_MODE = ModeSpec("masking", masking_config, MaskingRound,
                        options_doc="secagg.masking.MaskingConfig.create")
