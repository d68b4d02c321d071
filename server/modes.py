"""Protection modes as adapters over the sans-IO server sessions of :mod:`secagg`.

The HTTP layer and the round coordinator only know :class:`RoundProtocol`: take a client's bytes,
say who is still awaited, close a stage, release a result. Each mode maps that onto its protocol
core, so the service never holds its own copy of a protocol. A mode plugs in by registering a
:class:`ModeSpec` (``register_mode``).

``masking`` wraps :class:`secagg.masking.ServerSession` (pairwise masks, SecAgg+) in active
(malicious-server) mode, bound to the federation's pinned roster: adverts and the consistency
round are signed with the enterprises' identity keys and the neighbour graph comes from the
roster. The passive (honest-but-curious) protocol exists only in the library, for experiments;
the service refuses to open it.

``ckks`` wraps :class:`secagg.ckks.ServerSession`, bound to the federation's pinned roster like
masking (the config carries the roster's digest, client ids are roster ids, and the key
ceremony and every upload are signed with the enterprises' identity keys). The server only
relays the client-only key ceremony and sums ciphertexts from public material; it never holds
the round's secret key, so its result is the *encrypted* aggregate, which the clients verify
(sealed sketches: it must be the sum of the announced, signed uploads) and decrypt themselves.
Three stages, the session's:

* ``advert``: every client posts its signed box key. Close: the key request (every accepted
  advert) goes to every advertised client; only the dealer acts on it, the others wait.
* ``key-distribution``: only the dealer posts (the round key sealed to each peer, signed).
  Close: one key delivery, the same public bytes, to the dealer (its "go") and to each client
  the dealer sealed a key to.
* ``upload``: every keyed client posts its encrypted, signed, sketched update. Close: the
  encrypted sum with the signed receipts is the round's result payload.

A silent dealer ends the round (only it can make the key); other silent clients are dropouts
and the rest still get an aggregate while at least ``min_clients`` uploaded.

``plain`` sums float32 uploads with no protection at all. It exists so ``secagg bench e2e`` can
compare a secure round with a plaintext one over the same server and client runtime; the server
refuses it unless started with ``--allow-plain``.
"""

from __future__ import annotations

import json
import math
import secrets
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from secagg import ckks
from secagg.ckks import CKKSRoundConfig, Preset
from secagg.ckks import wire as ckks_wire
from secagg.ckks.messages import Kind
from secagg.errors import (
    InvalidParameter,
    NotEnoughParticipants,
    ProtocolAbort,
    RejectedMessage,
    SecAggError,
)
from secagg.identity import Roster
from secagg.masking import MaskingConfig, ServerSession, Stage, wire

__all__ = ["MODES", "CKKSRound", "ModeSpec", "Rejected", "RoundFailed", "RoundProtocol",
           "register_mode"]

PLAIN_MAGIC = b"SAGP"
_PLAIN_HEADER = struct.Struct("<4sI")


class Rejected(Exception):
    """A client message was refused (HTTP ``status``); the round state is unchanged."""

    def __init__(self, status: int, code: str, detail: str, expected: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.expected = status, code, detail, expected


class RoundFailed(Exception):
    """The round cannot complete (too few clients, a protocol abort)."""


class RoundProtocol(Protocol):
    """What the coordinator needs from one round of one mode. Must be deterministic: the same
    accepted messages and advances in the same order rebuild the same state (crash recovery)."""

    @property
    def stage(self) -> str: ...
    @property
    def expected(self) -> frozenset[int]: ...
    @property
    def done(self) -> bool: ...
    def max_message_bytes(self) -> int: ...
    def claimed_sender(self, body: bytes) -> int | None: ...
    def receive(self, client_id: int, body: bytes) -> None: ...
    def advance(self) -> dict[int, bytes]: ...
    def result(self) -> tuple[dict[str, Any], bytes]: ...


@dataclass(frozen=True)
class ModeSpec:
    """``make_config(num_clients, round_index, options, roster)`` -> JSON config stored with
    the round; ``build(config, participants, roster)`` -> a fresh :class:`RoundProtocol` for it.

    ``roster`` is the federation's pinned roster (public keys only), or None for a federation
    created without one (a store from before rosters); a mode that needs it refuses then."""

    name: str
    make_config: Callable[[int, int, dict[str, Any], Roster | None], dict[str, Any]]
    build: Callable[[dict[str, Any], frozenset[int], Roster | None], RoundProtocol]


MODES: dict[str, ModeSpec] = {}


def register_mode(spec: ModeSpec) -> None:
    MODES[spec.name] = spec


# ---- masking ---------------------------------------------------------------------------------

_MASKING_OPTIONS = {"vector_length", "clip", "value_bits", "max_weight", "dropout_rate",
                    "corrupt_rate", "full_graph", "neighbours", "threshold", "noise_headroom"}
#: Integer masking options and their coarse [low, high] (the library checks the finer rules).
_MASKING_INTS = {"vector_length": (1, 2**31 - 1), "value_bits": (1, 30), "max_weight": (1, 2**32),
                 "noise_headroom": (0, 2**32), "neighbours": (1, 2**31 - 1),
                 "threshold": (1, 2**31 - 1)}
#: Rate options and their (exclusive) upper bound.
_MASKING_RATES = {"dropout_rate": 1.0, "corrupt_rate": 0.5}


def _masking_config(num_clients: int, index: int, options: dict[str, Any],
                    roster: Roster | None) -> dict[str, Any]:
    """An active round's config, bound to the federation's roster (its digest is in the config,
    so every client checks it against the roster it pinned)."""
    unknown = set(options) - _MASKING_OPTIONS - {"active"}
    if unknown:
        raise InvalidParameter(f"unknown masking option(s) {sorted(unknown)}; allowed: "
                               f"{sorted(_MASKING_OPTIONS)}")
    if not _bool_option(options, "active", "masking") and "active" in options:
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
    for name in sorted(_MASKING_OPTIONS & set(options)):
        if name in _MASKING_INTS:
            if name in ("neighbours", "threshold") and options[name] is None:
                continue  # null: let the server choose, as when it is left out
            kwargs[name] = _int_option(options, name, None, *_MASKING_INTS[name], mode="masking")
        elif name in _MASKING_RATES:
            kwargs[name] = _rate_option(options, name, _MASKING_RATES[name], "masking")
        elif name == "clip":
            kwargs[name] = _bound_option(options, name, "masking")
        else:  # full_graph
            kwargs[name] = _bool_option(options, name, "masking")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-federation dropout notes; the operator chose n
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


register_mode(ModeSpec("masking", _masking_config, MaskingRound))


# ---- ckks ------------------------------------------------------------------------------------

CKKS_PROTOCOL = "secagg-ckks"
_CKKS_OPTIONS = ("vector_length", "preset", "value_bound", "weight_bound", "min_clients", "dealer")


def _found(value: Any) -> str:
    """``found <the value as JSON> (<its JSON type>)``, for an option's refusal."""
    if value is None:
        return "found null"
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        text = type(value).__name__
    text = text if len(text) <= 40 else text[:37] + "..."
    kind = ("a boolean" if isinstance(value, bool) else "an integer" if isinstance(value, int)
            else ("a number with a fraction" if math.isfinite(value) else "not a finite number")
            if isinstance(value, float) else "a string" if isinstance(value, str)
            else "a list" if isinstance(value, list) else "an object" if isinstance(value, dict)
            else type(value).__name__)
    return f"found {text} ({kind})"


def _int_option(options: dict[str, Any], name: str, default: int | None, low: int, high: int,
                mode: str = "ckks") -> int:
    """An integer option: a JSON integer (not a boolean, a string or ``10.0``) in [low, high]."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameter(f"{mode} option '{name}' must be an integer in [{low}, {high}] "
                               f"(a JSON integer: no fraction, no quotes), {_found(value)}")
    return value


def _bound_option(options: dict[str, Any], name: str, mode: str = "ckks") -> float:
    """A positive bound: a finite JSON number > 0 (not a boolean, a string, NaN or infinity)."""
    value = options.get(name, 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        raise InvalidParameter(f"{mode} option '{name}' must be a finite number > 0 (a JSON "
                               f"number), {_found(value)}")
    return float(value)


def _rate_option(options: dict[str, Any], name: str, high: float, mode: str) -> float:
    """A rate: a finite JSON number in [0, high)."""
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value < high:
        raise InvalidParameter(f"{mode} option '{name}' must be a number in [0, {high:g}) (a JSON "
                               f"number), {_found(value)}")
    return float(value)


def _bool_option(options: dict[str, Any], name: str, mode: str) -> bool:
    """A flag: JSON true or false (not 0/1 or a string)."""
    value = options.get(name, False)
    if not isinstance(value, bool):
        raise InvalidParameter(f"{mode} option '{name}' must be true or false (a JSON boolean), "
                               f"{_found(value)}")
    return value


def _ckks_config(num_clients: int, index: int, options: dict[str, Any],
                 roster: Roster | None = None) -> dict[str, Any]:
    """The JSON config of a CKKS round, validated by building the :class:`CKKSRoundConfig`.

    Bound to the federation's pinned roster: the config carries the roster's digest (every
    client checks it against the roster it pinned) and the client ids are the roster's ids,
    which are the enrolment ids ``0..n-1``. A federation without a roster is refused. Everything
    random (the session) is drawn here and stored with the round, so rebuilding the round after
    a restart gives the same config. The dealer rotates with the round index unless the
    operator names one, so one dead client cannot sink every round. ``digest`` lets a client
    check it rebuilt the identical config.
    """
    unknown = set(options) - set(_CKKS_OPTIONS)
    if unknown:
        raise InvalidParameter(f"unknown ckks option(s) {sorted(unknown)}; allowed: "
                               f"{sorted(_CKKS_OPTIONS)}")
    if roster is None:
        raise InvalidParameter(
            "this federation has no pinned roster, so its clients cannot verify the key "
            "ceremony or each other's uploads; create the federation again with `secagg-server "
            "federation create --roster roster.json` (see README, 'Enrolling an enterprise')")
    ids = sorted(roster.ids)
    if ids != list(range(num_clients)):  # pragma: no cover - federation create enforces it
        raise InvalidParameter(f"the roster has ids {ids[:8]}, the federation's clients are "
                               f"0..{num_clients - 1}")
    if "vector_length" not in options:
        raise InvalidParameter("ckks rounds need 'vector_length' (parameters per update)")
    if num_clients < 2:
        raise InvalidParameter(f"ckks rounds need >= 2 clients, the federation has {num_clients}")
    preset = options.get("preset", "compact")
    if not isinstance(preset, str):
        raise InvalidParameter(f"ckks option 'preset' must be one of "
                               f"{[p.name.lower() for p in Preset]} (a JSON string), {_found(preset)}")
    config = {
        "protocol": CKKS_PROTOCOL,
        "num_clients": num_clients,
        "client_ids": ids,
        "roster_digest": roster.digest().hex(),
        "round": index,
        "vector_length": _int_option(options, "vector_length", None, 1, 2**31 - 1),
        "preset": Preset.from_name(preset).name.lower(),
        "value_bound": _bound_option(options, "value_bound"),
        "weight_bound": _bound_option(options, "weight_bound"),
        "min_clients": _int_option(options, "min_clients", max(2, num_clients // 2 + 1), 2,
                                   num_clients),
        "dealer": _int_option(options, "dealer", index % num_clients, 0, num_clients - 1),
        "session": secrets.token_bytes(32).hex(),
    }
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


class CKKSRound:
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

    def __init__(self, config: dict[str, Any], participants: frozenset[int],
                 roster: Roster | None) -> None:
        if roster is None:
            raise InvalidParameter("ckks rounds need the federation's pinned roster")
        self.config = CKKSRoundConfig.from_dict(config)
        if participants != frozenset(self.config.client_ids):
            raise InvalidParameter(f"ckks round config names clients {list(self.config.client_ids)}, "
                                   f"the round has {sorted(participants)}")
        self.participants = participants
        self.dealer = self.config.dealer
        self.session = ckks.ServerSession(self.config, participants=participants, roster=roster)
        self._advertised: frozenset[int] = frozenset()  # who the key request went to

    @property
    def stage(self) -> str:
        return self.session.stage.value

    @property
    def expected(self) -> frozenset[int]:
        return self.session.expected

    @property
    def done(self) -> bool:
        return self.session.stage is ckks.ServerStage.DONE

    def max_message_bytes(self) -> int:
        return self.session.max_message_bytes()

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

    def result(self) -> tuple[dict[str, Any], bytes]:
        res = self.session.result  # ProtocolAbort until the upload stage closed
        # "excluded": clients whose advert was accepted but whom the dealer's signed distribution
        # sealed no key (it found their box key unusable): left out of the sum like dropouts
        meta = {"kind": "ckks", "encrypted": True, "preset": self.config.params.name,
                "length": self.config.update_size,
                "total_weight": None,  # encrypted with the sum: only the clients learn it
                "survivors": list(res.contributors), "dropped": list(res.dropped),
                "excluded": sorted(self._advertised - self.session.keyed)}
        return meta, res.aggregate


register_mode(ModeSpec("ckks", _ckks_config, CKKSRound))


# ---- plain (no protection; benchmarks only) --------------------------------------------------

def _plain_config(num_clients: int, index: int, options: dict[str, Any],
                  roster: Roster | None = None) -> dict[str, Any]:
    length = options.get("vector_length")
    if not isinstance(length, int) or length < 1:
        raise InvalidParameter("plain rounds need an integer 'vector_length' >= 1")
    max_weight = options.get("max_weight", 1)
    if not isinstance(max_weight, int) or max_weight < 1:
        raise InvalidParameter("'max_weight' must be an integer >= 1")
    return {"protocol": "secagg-plain", "num_clients": num_clients, "vector_length": length,
            "max_weight": max_weight, "round": index}


class PlainRound:
    """One stage: each client uploads ``SAGP | u32 weight | float32[vector_length]`` (LE)."""

    def __init__(self, config: dict[str, Any], participants: frozenset[int],
                 roster: Roster | None = None) -> None:
        self.length = int(config["vector_length"])
        self.max_weight = int(config["max_weight"])
        self.participants = participants
        self.sum = np.zeros(self.length, dtype=np.float64)
        self.weights: dict[int, int] = {}
        self._done = False

    @property
    def stage(self) -> str:
        return "done" if self._done else "upload"

    @property
    def expected(self) -> frozenset[int]:
        return frozenset() if self._done else self.participants - set(self.weights)

    @property
    def done(self) -> bool:
        return self._done

    def max_message_bytes(self) -> int:
        return _PLAIN_HEADER.size + 4 * self.length

    def claimed_sender(self, body: bytes) -> int | None:
        return None  # the upload carries no party id: the token says who sent it

    def receive(self, client_id: int, body: bytes) -> None:
        want = f"{self.max_message_bytes()} bytes: SAGP, u32 weight, {self.length} float32 (LE)"
        if self._done:
            raise Rejected(409, "round_complete", "the round is already complete")
        if client_id in self.weights:
            raise Rejected(409, "replayed", f"client {client_id} already uploaded")
        if len(body) != self.max_message_bytes() or body[:4] != PLAIN_MAGIC:
            raise Rejected(400, "invalid_message", f"upload is {len(body)} bytes or lacks the "
                           "SAGP magic", want)
        weight = _PLAIN_HEADER.unpack_from(body)[1]
        if not 1 <= weight <= self.max_weight:
            raise Rejected(400, "invalid_message", f"weight {weight} is outside [1, "
                           f"{self.max_weight}]", want)
        vec = np.frombuffer(body, dtype="<f4", offset=_PLAIN_HEADER.size)
        if not np.isfinite(vec).all():
            raise Rejected(400, "invalid_message", "update holds NaN or infinity", want)
        self.sum += weight * vec.astype(np.float64)
        self.weights[client_id] = weight

    def advance(self) -> dict[int, bytes]:
        self._done = True
        if not self.weights:
            raise RoundFailed(str(NotEnoughParticipants("upload", 0, 1)))
        return {}

    def result(self) -> tuple[dict[str, Any], bytes]:
        survivors = sorted(self.weights)
        meta = {"kind": "plain", "dtype": "<f4", "length": self.length,
                "total_weight": sum(self.weights.values()), "survivors": survivors,
                "dropped": sorted(self.participants - set(survivors))}
        return meta, self.sum.astype("<f4").tobytes()


PLAIN_MODE = ModeSpec("plain", _plain_config, PlainRound)
