"""Protection modes as adapters over the sans-IO server sessions of :mod:`secagg`.

The HTTP layer and the round coordinator only know :class:`RoundProtocol`: take a client's bytes,
say who is still awaited, close a stage, release a result. Each mode maps that onto its protocol
core, so the service never holds its own copy of a protocol. A mode plugs in by registering a
:class:`ModeSpec` (``register_mode``).

``masking`` wraps :class:`secagg.masking.ServerSession` (pairwise masks, SecAgg+).

``ckks`` wraps :class:`secagg.ckks.CKKSServer`. The server only relays the client-only key
ceremony and sums ciphertexts from public material; it never holds the round's secret key, so
its result is the *encrypted* aggregate, which the clients decrypt themselves. Three stages:

* ``advert``: every client posts its public keys. Close: the key request (the roster) goes to
  every advertised client; only the dealer acts on it, the others wait for the next stage.
* ``key-distribution``: only the dealer posts (the round key sealed to each peer). Close: one
  key delivery to each client the dealer sealed a key to, and to the dealer itself as its
  "go" signal (the same public bytes for everyone).
* ``upload``: every keyed client posts its encrypted, signed update. Close: the encrypted sum
  with the signed receipts is the round's result payload.

A silent dealer ends the round (only it can make the key); other silent clients are dropouts
and the rest still get an aggregate while at least ``min_clients`` uploaded.

``plain`` sums float32 uploads with no protection at all. It exists so ``secagg bench e2e`` can
compare a secure round with a plaintext one over the same server and client runtime; the server
refuses it unless started with ``--allow-plain``.
"""

from __future__ import annotations

import math
import secrets
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from secagg.ckks import CKKSRoundConfig, CKKSServer, Preset
from secagg.ckks import wire as ckks_wire
from secagg.ckks.layout import Layout
from secagg.ckks.messages import KeyAdvert, Kind
from secagg.errors import (
    AlreadyUsed,
    InvalidParameter,
    NotEnoughParticipants,
    ProtocolAbort,
    RejectedMessage,
    SecAggError,
)
from secagg.hazmat.seal_codec import max_blob_bytes
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
    """``make_config(num_clients, round_index, options)`` -> JSON config stored with the round;
    ``build(config, participants)`` -> a fresh :class:`RoundProtocol` for it."""

    name: str
    make_config: Callable[[int, int, dict[str, Any]], dict[str, Any]]
    build: Callable[[dict[str, Any], frozenset[int]], RoundProtocol]


MODES: dict[str, ModeSpec] = {}


def register_mode(spec: ModeSpec) -> None:
    MODES[spec.name] = spec


# ---- masking ---------------------------------------------------------------------------------

_MASKING_OPTIONS = {"vector_length", "clip", "value_bits", "max_weight", "dropout_rate",
                    "corrupt_rate", "full_graph", "neighbours", "threshold", "noise_headroom"}


def _masking_config(num_clients: int, index: int, options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - _MASKING_OPTIONS - {"active"}
    if unknown:
        raise InvalidParameter(f"unknown masking option(s) {sorted(unknown)}; allowed: "
                               f"{sorted(_MASKING_OPTIONS)}")
    if options.get("active"):
        raise InvalidParameter("active mode needs each client's enrolled signing key; this server "
                               "does not enrol signing keys yet, so 'active' must be false")
    if "vector_length" not in options:
        raise InvalidParameter("masking rounds need 'vector_length' (parameters per update)")
    kwargs = {k: options[k] for k in _MASKING_OPTIONS if k in options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-federation dropout notes; the operator chose n
        cfg = MaskingConfig.create(num_clients=num_clients, round=index, **kwargs)
    return cfg.to_dict()


_REJECT_CODES = (  # how a RejectedMessage reason starts -> (HTTP status, code)
    ("replayed message", 409, "replayed"),
    ("a second, different message", 409, "conflicting_message"),
    ("the round is already complete", 409, "round_complete"),
    ("expected ", 409, "wrong_stage"),
)


class MaskingRound:
    """Adapter over :class:`secagg.masking.ServerSession` (party ids = enrolment ids)."""

    def __init__(self, config: dict[str, Any], participants: frozenset[int]) -> None:
        self.config = MaskingConfig.from_dict(config)
        self.session = ServerSession(self.config, participants=participants)

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
        meta = {"kind": "masking", "dtype": "<u4", "length": int(agg.total.size),
                "total_weight": agg.total_weight, "survivors": list(agg.survivors),
                "dropped": list(agg.dropped)}
        return meta, agg.total.astype("<u4", copy=False).tobytes()


register_mode(ModeSpec("masking", _masking_config, MaskingRound))


# ---- ckks ------------------------------------------------------------------------------------

CKKS_PROTOCOL = "secagg-ckks"
_CKKS_OPTIONS = ("vector_length", "preset", "value_bound", "weight_bound", "min_clients", "dealer")


def _int_option(options: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameter(f"ckks option '{name}' must be an integer in [{low}, {high}], "
                               f"found {value!r}")
    return value


def _bound_option(options: dict[str, Any], name: str) -> float:
    value = options.get(name, 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value <= 0:
        raise InvalidParameter(f"ckks option '{name}' must be a finite number > 0, found {value!r}")
    return float(value)


def _ckks_config(num_clients: int, index: int, options: dict[str, Any]) -> dict[str, Any]:
    """The JSON config of a CKKS round, validated by building the :class:`CKKSRoundConfig`.

    Client ids are the enrolment ids ``0..n-1``. Everything random (the session) is drawn here
    and stored with the round, so rebuilding the round after a restart gives the same config.
    The dealer rotates with the round index unless the operator names one, so one dead client
    cannot sink every round. ``digest`` lets a client check it rebuilt the identical config.
    """
    unknown = set(options) - set(_CKKS_OPTIONS)
    if unknown:
        raise InvalidParameter(f"unknown ckks option(s) {sorted(unknown)}; allowed: "
                               f"{sorted(_CKKS_OPTIONS)}")
    if "vector_length" not in options:
        raise InvalidParameter("ckks rounds need 'vector_length' (parameters per update)")
    if num_clients < 2:
        raise InvalidParameter(f"ckks rounds need >= 2 clients, the federation has {num_clients}")
    preset = options.get("preset", "compact")
    if not isinstance(preset, str):
        raise InvalidParameter(f"ckks option 'preset' must be one of {[p.name.lower() for p in Preset]}, "
                               f"found {preset!r}")
    config = {
        "protocol": CKKS_PROTOCOL,
        "num_clients": num_clients,
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


def _upload_limit(cfg: CKKSRoundConfig) -> int:
    """Largest valid upload: frame, five length-prefixed fields (digest, round, sender, the
    chunks, the Ed25519 signature), each chunk at most one SEAL ciphertext of the round's size."""
    p = cfg.params
    chunks = Layout(cfg.update_size, p.slots).chunks
    return 5 + 5 * 4 + 32 + 8 + 4 + chunks * (4 + max_blob_bytes(p.poly_modulus_degree, p.level_primes)) + 64


#: An advert: frame + 5 fields (digest 32, id 4, X25519 32, Ed25519 32, signature 64) = 189.
_ADVERT_LIMIT = 5 + 5 * 4 + 32 + 4 + 32 + 32 + 64
#: One sealed key box in a distribution: u32 recipient + ephemeral key, nonce, 64-byte seed, tag.
_BOX_LIMIT = 4 + 4 + 32 + 12 + 64 + 16
#: The client -> server kinds, and which of their fields names the sender.
_SENDER_FIELD: dict[int, int] = {Kind.ADVERT.value: 1, Kind.KEY_DISTRIBUTION.value: 1,
                                 Kind.UPLOAD.value: 2}


def _peek_ckks(body: bytes) -> tuple[int | None, int | None]:
    """``(kind, sender)`` from a CKKS frame's header; None where unclear.

    Only for routing and the token check: the full parse in :class:`CKKSServer` decides."""
    kind, _ = ckks_wire.peek(body)
    field = None if kind is None else _SENDER_FIELD.get(kind)
    if field is None:
        return kind, None
    _, raw = ckks_wire.peek(body, field)
    return kind, int.from_bytes(raw, "big") if raw is not None and len(raw) == 4 else None


_CKKS_ADVERT, _CKKS_KEYS, _CKKS_UPLOAD, _CKKS_DONE = "advert", "key-distribution", "upload", "done"
_CKKS_STAGE_KIND = {_CKKS_ADVERT: Kind.ADVERT, _CKKS_KEYS: Kind.KEY_DISTRIBUTION,
                    _CKKS_UPLOAD: Kind.UPLOAD}
_KIND_NAMES = {k.value: k.name.lower().replace("_", " ") for k in Kind}


class CKKSRound:
    """Adapter over :class:`secagg.ckks.CKKSServer` (client ids = enrolment ids ``0..n-1``).

    Deterministic: the server holds no randomness of its own (the session is in the config),
    rejected messages change nothing (uploads are checked with ``sender=None`` so a refusal
    does not mark the sender as dropped: a refusal is not stored, so replay could not repeat
    it), and every outgoing message is a pure function of the accepted ones.
    """

    def __init__(self, config: dict[str, Any], participants: frozenset[int]) -> None:
        self.config = CKKSRoundConfig.from_dict(config)
        if participants != frozenset(self.config.client_ids):
            raise InvalidParameter(f"ckks round config names clients {list(self.config.client_ids)}, "
                                   f"the round has {sorted(participants)}")
        self.participants = participants
        self.dealer = self.config.dealer
        self.server = CKKSServer(self.config)
        self._stage = _CKKS_ADVERT
        self._advertised: set[int] = set()
        self._dealt = False
        self._keyed: frozenset[int] = frozenset()
        self._aggregate: bytes | None = None
        self._limits = {
            _CKKS_ADVERT: _ADVERT_LIMIT,
            _CKKS_KEYS: 5 + 5 * 4 + 32 + 4 + 32 + len(participants) * _BOX_LIMIT + 64,
            _CKKS_UPLOAD: _upload_limit(self.config),
        }
        self._limits[_CKKS_DONE] = self._limits[_CKKS_UPLOAD]

    @property
    def stage(self) -> str:
        return self._stage

    @property
    def expected(self) -> frozenset[int]:
        if self._stage == _CKKS_ADVERT:
            return self.participants - self._advertised
        if self._stage == _CKKS_KEYS:
            return frozenset() if self._dealt else frozenset({self.dealer})
        if self._stage == _CKKS_UPLOAD:
            return self._keyed - set(self.server.accepted)
        return frozenset()

    @property
    def done(self) -> bool:
        return self._stage == _CKKS_DONE

    def max_message_bytes(self) -> int:
        return self._limits[self._stage]

    def claimed_sender(self, body: bytes) -> int | None:
        return _peek_ckks(body)[1]

    # -- messages ------------------------------------------------------------------------------

    def _want(self) -> str:
        kind = _CKKS_STAGE_KIND.get(self._stage)
        who = f"the dealer (client {self.dealer})" if self._stage == _CKKS_KEYS else "each client"
        return (f"at stage {self._stage!r}: one '{_KIND_NAMES[kind]}' message from {who} "
                "(see secagg.ckks.messages)") if kind is not None else "nothing: the round is over"

    def receive(self, client_id: int, body: bytes) -> None:
        want = self._want()
        if self._stage == _CKKS_DONE:
            raise Rejected(409, "round_complete", "the round is already complete")
        kind, sender = _peek_ckks(body)
        if sender is not None and sender != client_id:
            raise Rejected(403, "wrong_sender", f"the message says it is from client {sender}; "
                           f"it was sent as client {client_id}", f"sender {client_id}")
        stage_kind = _CKKS_STAGE_KIND[self._stage]
        if kind in _SENDER_FIELD and kind != stage_kind:
            raise Rejected(409, "wrong_stage", f"a '{_KIND_NAMES[kind]}' message does not belong to "
                           f"stage {self._stage!r}", want)
        try:
            if self._stage == _CKKS_ADVERT:
                self._receive_advert(client_id, body, want)
            elif self._stage == _CKKS_KEYS:
                self._receive_keys(client_id, body, want)
            else:
                self._receive_upload(client_id, body, want)
        except RejectedMessage as exc:
            if exc.reason.startswith("duplicate "):
                raise Rejected(409, "conflicting_message", f"{exc}: a second, different message "
                               "from this client", want) from None
            raise Rejected(400, "invalid_message", str(exc), want) from None
        except AlreadyUsed as exc:  # the library's own stage guard (kept in step with ours)
            raise Rejected(409, "wrong_stage", str(exc), want) from None
        except (SecAggError, ValueError, struct.error, KeyError, TypeError, IndexError) as exc:
            raise Rejected(400, "invalid_message", f"malformed message: {type(exc).__name__}: "
                           f"{exc}", want) from None

    def _receive_advert(self, client_id: int, body: bytes, want: str) -> None:
        if client_id in self._advertised:
            raise Rejected(409, "conflicting_message", f"client {client_id} already sent a "
                           "different key advert this round", want)
        advert = KeyAdvert.from_bytes(body, sender=client_id)
        if advert.client_id != client_id:  # pragma: no cover - the header peek rules it out
            raise Rejected(403, "wrong_sender", f"the advert is for client {advert.client_id}", want)
        self.server.receive_advert(body)
        self._advertised.add(client_id)

    def _receive_keys(self, client_id: int, body: bytes, want: str) -> None:
        if client_id != self.dealer:
            raise Rejected(409, "not_expected", f"client {client_id} has nothing to send at stage "
                           f"{self._stage!r}; it waits for its key delivery", want)
        if self._dealt:  # unreachable through the coordinator (the stage closes at once)
            raise Rejected(409, "conflicting_message", "the key distribution was already taken", want)
        self.server.receive_key_distribution(body)
        self._dealt = True

    def _receive_upload(self, client_id: int, body: bytes, want: str) -> None:
        if client_id not in self._keyed:
            raise Rejected(409, "not_expected", f"client {client_id} holds no key this round (no "
                           "advert in time, or the dealer sealed it none), so it cannot upload",
                           want)
        if client_id in self.server.accepted:
            raise Rejected(409, "conflicting_message", f"client {client_id} already uploaded; "
                           "the first upload is already in the sum", want)
        # sender=None: the server must not record the refusal (see the class docstring); the
        # sender itself was checked against the token above and by the signature inside.
        self.server.receive_upload(body, sender=None)
        if self.server.accepted[-1] != client_id:  # pragma: no cover - the peek above rules it out
            raise AssertionError("accepted an upload for another client")

    # -- stage closes --------------------------------------------------------------------------

    def advance(self) -> dict[int, bytes]:
        if self._stage == _CKKS_ADVERT:
            return self._close_adverts()
        if self._stage == _CKKS_KEYS:
            return self._close_keys()
        if self._stage == _CKKS_UPLOAD:
            try:
                self._aggregate = self.server.aggregate()
            except NotEnoughParticipants as exc:
                raise RoundFailed(
                    f"only {exc.have} client(s) uploaded before the deadline and min_clients is "
                    f"{exc.need}; an aggregate of fewer would expose too much, so nothing is "
                    "released") from None
            self._stage = _CKKS_DONE
        return {}

    def _close_adverts(self) -> dict[int, bytes]:
        if self.dealer not in self._advertised:
            raise RoundFailed(
                f"the dealer (client {self.dealer}) sent no key advert before the deadline; only "
                "the dealer makes the round's key, so the round cannot go on (the next round has "
                "another dealer unless the 'dealer' option pins it)")
        try:
            request = self.server.key_request()
        except NotEnoughParticipants:
            raise RoundFailed(f"only {len(self._advertised)} client(s) sent a key advert before the "
                              f"deadline and min_clients is {self.config.min_clients}; the round "
                              "cannot go on") from None
        self._stage = _CKKS_KEYS
        # Everyone who advertised gets the (public) roster: the dealer deals from it, the
        # others learn they are in and keep polling (a client left out of a stage's messages
        # counts as dropped).
        return dict.fromkeys(sorted(self._advertised), request)

    def _close_keys(self) -> dict[int, bytes]:
        if not self._dealt:
            raise RoundFailed(
                f"the dealer (client {self.dealer}) sent no key distribution before the deadline; "
                "no one else can make the round's key, so the round cannot go on")
        out: dict[int, bytes] = {}
        for i in sorted(self._advertised - {self.dealer}):
            try:
                out[i] = self.server.key_delivery(i)
            except RejectedMessage:  # the dealer sealed this client no key: it cannot take part
                continue
        if len(out) + 1 < self.config.min_clients:
            raise RoundFailed(f"the dealer sealed the key to {len(out)} other client(s); with the "
                              f"dealer that is below min_clients={self.config.min_clients}")
        out[self.dealer] = next(iter(out.values()))  # one message for everyone: the dealer's go
        self._keyed = frozenset(out)
        self._stage = _CKKS_UPLOAD
        return out

    def result(self) -> tuple[dict[str, Any], bytes]:
        if self._aggregate is None:
            raise ProtocolAbort("result", "the ckks round has not released its aggregate")
        survivors = list(self.server.accepted)
        meta = {"kind": "ckks", "encrypted": True, "preset": self.config.params.name,
                "length": self.config.update_size,
                "total_weight": None,  # encrypted with the sum: only the clients learn it
                "survivors": sorted(survivors),
                "dropped": sorted(self.participants - set(survivors))}
        return meta, self._aggregate


register_mode(ModeSpec("ckks", _ckks_config, CKKSRound))


# ---- plain (no protection; benchmarks only) --------------------------------------------------

def _plain_config(num_clients: int, index: int, options: dict[str, Any]) -> dict[str, Any]:
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

    def __init__(self, config: dict[str, Any], participants: frozenset[int]) -> None:
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
