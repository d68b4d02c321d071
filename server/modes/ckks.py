"""``ckks``: CKKS homomorphic encryption over :class:`secagg.ckks.ServerSession`.

Bound to the federation's pinned roster like masking (the config carries the roster's digest,
client ids are roster ids, and the key ceremony and every upload are signed with the
enterprises' identity keys). The server only relays the client-only key ceremony and sums
ciphertexts from public material; it never holds the round's secret key, so its result is the
*encrypted* aggregate, which the clients verify (sealed sketches: it must be the sum of the
announced, signed uploads) and decrypt themselves. Three stages, the session's:

* ``advert``: every client posts its signed box key. Close: the key request (every accepted
  advert) goes to every advertised client; only the dealer acts on it, the others wait.
* ``key-distribution``: only the dealer posts (the round key sealed to each peer, signed).
  Close: one key delivery, the same public bytes, to the dealer (its "go") and to each client
  the dealer sealed a key to.
* ``upload``: every keyed client posts its encrypted, signed, sketched update. Close: the
  encrypted sum with the signed receipts is the round's result payload.

A silent dealer ends the round (only it can make the key); other silent clients are dropouts
and the rest still get an aggregate while at least ``min_clients`` uploaded.

This module imports TenSEAL (through :mod:`secagg.ckks`): :func:`secagg_server.modes.default_modes`
loads it only when a ckks round is opened or rebuilt, so a masking-only server never does.
"""

from __future__ import annotations

import secrets
import struct
from typing import Any

from secagg import ckks
from secagg.ckks import CKKSRoundConfig, Preset
from secagg.ckks import wire as ckks_wire
from secagg.ckks.config import DEFAULT_TARGET_ERROR, PACKED_PRESET
from secagg.ckks.messages import Kind
from secagg.contract import ReleasedAggregate
from secagg.errors import (
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

__all__ = ["CKKS_PROTOCOL", "CKKSRound", "ckks_config"]

CKKS_PROTOCOL = "secagg-ckks"
_OPTIONS = ("vector_length", "preset", "value_bound", "weight_bound", "min_clients", "dealer",
            "target_error")


def ckks_config(num_clients: int, index: int, options: dict[str, Any],
                roster: Roster | None) -> dict[str, Any]:
    """The JSON config of a CKKS round, validated by building the :class:`CKKSRoundConfig`.

    Bound to the federation's pinned roster: the config carries the roster's digest (every
    client checks it against the roster it pinned) and the client ids are the roster's ids,
    which are the enrolment ids ``0..n-1``. A federation without a roster is refused. Everything
    random (the session) is drawn here and stored with the round, so rebuilding the round after
    a restart gives the same config. The dealer rotates with the round index unless the
    operator names one, so one dead client cannot sink every round. ``digest`` lets a client
    check it rebuilt the identical config.
    """
    known_options("ckks", options, _OPTIONS)
    ids = pinned_roster_ids("ckks", roster, num_clients,
                            "the key ceremony or each other's uploads")
    assert roster is not None
    layout = layout_option("ckks", options)
    if layout is not None:
        options = {**options, "vector_length": layout.size}
    vector_length = vector_length_option("ckks", options)
    if num_clients < 2:
        raise InvalidParameter(f"ckks rounds need >= 2 clients, the federation has {num_clients}")
    preset = options.get("preset", "compact")
    presets = [*(p.name.lower() for p in Preset), PACKED_PRESET]
    if not isinstance(preset, str) or preset.lower() not in presets:
        raise InvalidParameter(f"ckks option 'preset' must be one of {presets} (a JSON string; "
                               f"'{PACKED_PRESET}': parameters sized to the round's precision, "
                               f"see secagg.ckks.CKKSParams.for_round), {found(preset)}")
    packed = preset.lower() == PACKED_PRESET
    if "target_error" in options and not packed:
        raise InvalidParameter(f"ckks option 'target_error' applies to preset "
                               f"'{PACKED_PRESET}' only")
    config = {
        "protocol": CKKS_PROTOCOL,
        "num_clients": num_clients,
        "client_ids": ids,
        "roster_digest": roster.digest().hex(),
        "round": index,
        "vector_length": vector_length,
        "preset": PACKED_PRESET if packed else Preset.from_name(preset).name.lower(),
        "value_bound": bound_option("ckks", options, "value_bound"),
        "weight_bound": bound_option("ckks", options, "weight_bound"),
        "min_clients": int_option("ckks", options, "min_clients", max(2, num_clients // 2 + 1), 2,
                                   num_clients),
        "dealer": int_option("ckks", options, "dealer", index % num_clients, 0, num_clients - 1),
        "session": secrets.token_bytes(32).hex(),
        "layout_digest": "" if layout is None else layout.digest().hex(),
    }
    if packed:  # relative to the sum's range (CKKSParams.for_round)
        config["target_error"] = bound_option("ckks", {"target_error": DEFAULT_TARGET_ERROR,
                                                       **options}, "target_error")
    cfg = CKKSRoundConfig.from_dict(config)  # the library's checks too (e.g. the overflow bound)
    config["params"] = cfg.params.name
    config["digest"] = cfg.digest().hex()
    return config


#: The client -> server kinds, and which of their fields names the sender (secagg.ckks.messages).
_SENDER_FIELD: dict[int, int] = {Kind.ADVERT.value: 1, Kind.KEY_DISTRIBUTION.value: 1,
                                 Kind.UPLOAD.value: 2}


def _peek_ckks(body: bytes) -> tuple[int | None, int | None]:
    """``(kind, sender)`` from a CKKS frame's header; None where unclear.

    Only for routing and the token check: the full parse in the session decides."""
    kind, _ = ckks_wire.peek(body)
    field = None if kind is None else _SENDER_FIELD.get(kind)
    if field is None:
        return kind, None
    _, raw = ckks_wire.peek(body, field)
    return kind, int.from_bytes(raw, "big") if raw is not None and len(raw) == 4 else None


#: The client message kind each stage of the session takes.
_CKKS_STAGE_KIND = {ckks.ServerStage.ADVERT: Kind.ADVERT,
                    ckks.ServerStage.KEYS: Kind.KEY_DISTRIBUTION,
                    ckks.ServerStage.UPLOAD: Kind.UPLOAD}
_KIND_NAMES = {k.value: k.name.lower().replace("_", " ") for k in Kind}


class CKKSRound(SessionRound):
    """Adapter over :class:`secagg.ckks.ServerSession` (client ids = the roster's ids, which are
    the enrolment ids). The session checks each message completely before it changes anything
    (the roster signatures of adverts, of the dealer's distribution and of every upload; the
    box keys; every ciphertext), so this adapter only routes bytes, refuses what is not expected
    from a client at this stage, and maps the session's refusals onto HTTP answers.

    Deterministic: the session holds no randomness of its own (the round's session id is in the
    config), a refused message changes nothing (and is never stored), and every outgoing
    message is a pure function of the accepted ones; replaying the stored messages and stage
    closes into a fresh round rebuilds it after a crash.
    """

    session: ckks.ServerSession

    def __init__(self, config: dict[str, Any], participants: frozenset[int],
                 roster: Roster | None) -> None:
        if roster is None:
            raise InvalidParameter("ckks rounds need the federation's pinned roster")
        self.config = CKKSRoundConfig.from_dict(config)
        if participants != frozenset(self.config.client_ids):
            raise InvalidParameter(f"ckks round config names clients {list(self.config.client_ids)}, "
                                   f"the round has {sorted(participants)}")
        self.dealer = self.config.dealer
        self.session = ckks.ServerSession(self.config, participants=participants, roster=roster)
        self._advertised: frozenset[int] = frozenset()  # who the key request went to

    def claimed_sender(self, body: bytes) -> int | None:
        return _peek_ckks(body)[1]

    # -- messages ------------------------------------------------------------------------------

    def _want(self) -> str:
        stage = self.session.stage
        kind = _CKKS_STAGE_KIND.get(stage)
        if kind is None:
            return "nothing: the round is over"
        who = f"the dealer (client {self.dealer})" if stage is ckks.ServerStage.KEYS else "each client"
        return (f"at stage {stage.value!r}: one '{_KIND_NAMES[kind]}' message from {who} "
                "(see secagg.ckks.messages)")

    def receive(self, client_id: int, body: bytes) -> None:
        stage, want = self.session.stage, self._want()
        if stage is ckks.ServerStage.DONE:
            raise Rejected(409, "round_complete", "the round is already complete")
        kind, sender = _peek_ckks(body)
        if sender is not None and sender != client_id:
            raise Rejected(403, "wrong_sender", f"the message says it is from client {sender}; "
                           f"it was sent as client {client_id}", f"sender {client_id}")
        if kind in _SENDER_FIELD and kind != _CKKS_STAGE_KIND[stage]:
            raise Rejected(409, "wrong_stage", f"a '{_KIND_NAMES[kind]}' message does not belong to "
                           f"stage {stage.value!r}", want)
        if client_id not in self.session.expected:
            raise self._not_expected(client_id, stage, want)
        try:
            self.session.receive(body)
        except RejectedMessage as exc:
            # A ckks.MessageRefused names the check that failed (a roster signature, a box key,
            # a ciphertext, the format...); a plain RejectedMessage is a body that does not
            # parse. Either way the message itself is bad (400): the state conflicts (409) were
            # told apart above, from the session's state, before it saw the body.
            raise Rejected(400, "invalid_message", str(exc), want) from None
        except (SecAggError, ValueError, struct.error, KeyError, TypeError, IndexError) as exc:
            raise Rejected(400, "invalid_message", f"malformed message: {type(exc).__name__}: "
                           f"{exc}", want) from None

    def _not_expected(self, client_id: int, stage: ckks.ServerStage, want: str) -> Rejected:
        """Why a message from ``client_id``, which the session does not await, is refused."""
        if stage is ckks.ServerStage.ADVERT:
            return Rejected(409, "conflicting_message", f"client {client_id} already sent a "
                            "different key advert this round", want)
        if stage is ckks.ServerStage.KEYS:
            if client_id != self.dealer:
                return Rejected(409, "not_expected", f"client {client_id} has nothing to send at "
                                f"stage {stage.value!r}; it waits for its key delivery", want)
            return Rejected(409, "conflicting_message", "the key distribution was already taken",
                            want)
        if client_id in self.session.accepted:
            return Rejected(409, "conflicting_message", f"client {client_id} already uploaded; "
                            "the first upload is already in the sum", want)
        return Rejected(409, "not_expected", f"client {client_id} holds no key this round (no "
                        "valid advert in time, or the dealer sealed it none), so it cannot upload",
                        want)

    # -- stage closes --------------------------------------------------------------------------

    def advance(self) -> dict[int, bytes]:
        stage, silent = self.session.stage, self.session.expected
        try:
            out = self.session.advance()
        except NotEnoughParticipants as exc:
            raise RoundFailed(self._failure(stage, silent, exc)) from None
        except ProtocolAbort as exc:
            raise RoundFailed(str(exc)) from None
        if stage is ckks.ServerStage.ADVERT:
            self._advertised = frozenset(out)
        return out

    def _failure(self, stage: ckks.ServerStage, silent: frozenset[int],
                 exc: NotEnoughParticipants) -> str:
        """The operator's reason for a stage close that left too few clients."""
        if stage is ckks.ServerStage.ADVERT and self.dealer in silent:
            return (f"the dealer (client {self.dealer}) sent no valid key advert before the "
                    "deadline; only the dealer makes the round's key, so the round cannot go on "
                    "(the next round has another dealer unless the 'dealer' option pins it)")
        if stage is ckks.ServerStage.ADVERT:
            return (f"only {exc.have} client(s) sent a valid key advert before the deadline and "
                    f"min_clients is {exc.need}; the round cannot go on")
        if stage is ckks.ServerStage.KEYS:
            return (f"the dealer (client {self.dealer}) sent no valid key distribution before the "
                    "deadline; no one else can make the round's key, so the round cannot go on")
        return (f"only {exc.have} client(s) uploaded before the deadline and min_clients is "
                f"{exc.need}; an aggregate of fewer would expose too much, so nothing is released")

    def result(self) -> tuple[ReleasedAggregate, bytes]:
        res = self.session.result  # ProtocolAbort until the upload stage closed
        # "excluded": clients whose advert was accepted but whom the dealer's signed distribution
        # sealed no key (it found their box key unusable): left out of the sum like dropouts.
        # total_weight: None, encrypted with the sum (only the clients learn it)
        meta = ReleasedAggregate(
            mode="ckks", round_id=self.config.round, survivors=tuple(res.contributors),
            dropped=tuple(res.dropped),
            excluded=tuple(sorted(self._advertised - self.session.keyed)), total_weight=None,
            layout_digest=self.config.layout_digest.hex(), encrypted=True,
            extra={"preset": self.config.params.name, "length": self.config.update_size})
        return meta, res.aggregate
