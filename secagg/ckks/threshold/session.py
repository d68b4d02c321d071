"""Threshold CKKS rounds as sans-IO sessions: the round config, the server's and a client's state
machines, bytes in and bytes out (the shape of :mod:`secagg.ckks.server` / :mod:`secagg.ckks.client`
for the dealer mode, over the core of :mod:`.protocol`).

Every round has fresh keys: each client makes a new :class:`.ThresholdParty` (its own secret)
when its session starts and deals it to the peers that advertised a box key this round. The
secret leaves the client's process only through the session's explicit, sealed export
(:meth:`ClientSession.export_state`, :mod:`.session_state`), for transports that run each message
in a fresh process; otherwise a restarted client is a dropout. Since keys are per round, the
round *is* the setup: the setup digest that every threshold message is bound to
(:func:`.transport.setup_digest`) is computed over the pinned roster seen through the round's
config (:func:`round_roster`: its digest binds the config digest, which binds the roster digest,
the session nonce, the round and the parameters), so no signed byte of one round can be replayed
into another.

Stages (:class:`ServerStage`), what each expects, and what closing it sends:

* ``advert``: each client's fresh X25519 box key signed with its roster identity (the dealer
  mode's :class:`secagg.ckks.messages.KeyAdvert`; a low-order key is refused). Close: the key
  request (every accepted advert, :class:`secagg.ckks.messages.KeyRequest`) to each advertiser.
* ``deal``: each advertiser's sealed, roster-signed share bundles (:func:`.transport.seal_bundle`),
  one for every *other advertiser*, each sealed to the box key that peer advertised; a deal that
  leaves out an advertiser or names another key is refused. Close: the dealers ``D`` are those
  whose deal was accepted; each of them gets ``D`` and the envelopes the others of ``D`` sealed
  to it. So every member of ``D`` holds shares from every member of ``D``.
* ``upload``: each member of ``D`` posts its signed upload (``c0`` of ``w_i * x_i`` followed by
  ``w_i`` as one more real, :func:`.wire.encode_upload`) and the dealers whose bundles did not
  open for it (normally none). Close: the uploaders ``U`` are the uploading dealers minus the
  reported ones (a client reporting more than ``|uploads| - min_uploaders`` dealers is ignored
  and not asked to sign); the aggregate of ``U`` and every signed upload of ``U`` go to each
  client that uploaded (it holds shares from all of ``U``).
* ``statement``: each of them re-sums the signed uploads, checks the aggregate and signs the
  round's once-per-round decryption statement (:meth:`.ThresholdParty.sign_statement`, which
  also refuses an uploader it holds no shares of). Close: the signers ``S`` (at least the
  policy's quorum) get every statement and the decrypting set ``G = S``.
* ``partial``: each member of ``G`` posts its signed, smudged partial decryption. Close: with all
  of ``G`` the server combines and the round is done; if some vanished and at least ``t``
  answered, the request goes once more to those who answered (``G`` := them; the parameters were
  planned for two decryptions, ``attempts=2``); otherwise the round ends.

The server's result is the plaintext weighted sum ``sum_{i in U} w_i x_i`` and the total weight,
like masking. Too few clients at any stage end the round with :class:`NotEnoughParticipants`
naming the stage, what was short and what was needed.

A bad message raises :class:`RejectedMessage` and changes nothing; replaying the accepted
messages and the stage closes into a fresh :class:`ServerSession` rebuilds the same state (it
holds no randomness and reads no clock).
"""

from __future__ import annotations

import enum
import hashlib
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.ckks.intake import admit
from secagg.ckks.messages import KeyAdvert, KeyRequest
from secagg.ckks.wire import MAGIC as CKKS_MAGIC
from secagg.ckks.wire import join_fields, split_fields, u32
from secagg.errors import (
    AlreadyUsed,
    AuthenticationFailed,
    ErrorCode,
    InvalidParameter,
    NotEnoughParticipants,
    ProtocolAbort,
    RejectedMessage,
    SecAggError,
)
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes, Unpicklable
from secagg.identity import Identity, Roster

from .params import ThresholdParams, default_threshold, plan
from .policy import DecryptionPolicy, decryption_policy, default_min_uploaders, roster_corrupt
from .protocol import ThresholdParty, aggregate, chunks_for, combine
from .rings import RingContext
from .sharing import terms
from .transport import SealedBundle, open_bundle, seal_bundle, setup_digest
from .wire import (
    MessageKind,
    aggregate_digest,
    decode_partial,
    decode_statement,
    decode_upload,
    encode_aggregate,
    encode_partial,
    encode_upload,
    message_size,
)

__all__ = [
    "DEFAULT_TARGET_ERROR",
    "PROTOCOL",
    "ClientSession",
    "ClientStage",
    "Kind",
    "ServerResult",
    "ServerSession",
    "ServerStage",
    "ThresholdClientResult",
    "ThresholdRoundConfig",
    "peek",
    "round_roster",
]

PROTOCOL = "secagg-ckks-threshold"
VERSION = 1
MAGIC = b"SCT1"
DEFAULT_TARGET_ERROR = 1e-6
#: decryption attempts the parameters are planned for: the first, and one retry
ATTEMPTS = 2
_MAX_CLIENT_ID = 2**32 - 2
_MAX_VECTOR = 2**28
_MIN_SESSION_BYTES = 16
_FRAME = len(MAGIC) + 1
_FIELD = 4
_SIG = 64
_BOX = 32
_SEAL_OVERHEAD = 32 + 12 + 16  # ephemeral key, nonce, tag (secagg.hazmat.sealed_box)
_ROUND_TAG = b"secagg-ckks-threshold/v1/round-roster"


class Kind(enum.IntEnum):
    """Frames of this protocol (magic ``SCT1``); the adverts and the key request are the dealer
    mode's frames (magic ``SCK1``)."""

    DEAL = 1
    DELIVERY = 2
    UPLOAD = 3
    STATEMENT_REQUEST = 4
    STATEMENT = 5
    PARTIAL_REQUEST = 6
    PARTIAL = 7

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


#: client -> server kinds (their field 1 names the sender)
CLIENT_KINDS = frozenset({Kind.DEAL, Kind.UPLOAD, Kind.STATEMENT, Kind.PARTIAL})


def _frame(kind: Kind, fields: Sequence[bytes]) -> bytes:
    return MAGIC + bytes([kind]) + join_fields(fields)


def _unframe(data: bytes, kind: Kind, count: int, sender: int | None = None) -> list[bytes]:
    if len(data) < _FRAME or data[: len(MAGIC)] != MAGIC:
        raise RejectedMessage(sender, f"not a threshold CKKS frame (expected a '{kind.label}' "
                              "message)")
    if data[len(MAGIC)] != kind:
        got = data[len(MAGIC)]
        name = Kind(got).label if got in Kind._value2member_map_ else f"unknown kind {got}"
        raise RejectedMessage(sender, f"expected a '{kind.label}' message, found '{name}'")
    return split_fields(memoryview(data)[_FRAME:], count=count, what=kind.label, sender=sender)


def peek(data: bytes) -> tuple[str | None, int | None]:
    """``(kind name, claimed sender)`` of a client message, for routing only (None where
    unclear): ``"advert"`` for the dealer mode's advert frame, else a :class:`Kind` label."""
    if len(data) < _FRAME:
        return None, None
    head, kind = bytes(data[: len(MAGIC)]), data[len(MAGIC)]
    if head == CKKS_MAGIC:
        name = "advert" if kind == 1 else None
    elif head == MAGIC and kind in Kind._value2member_map_:
        name = Kind(kind).label
    else:
        return None, None
    if name is None:
        return None, None
    pos = _FRAME
    for i in range(2):
        if pos + 4 > len(data):
            return name, None
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if i == 1:
            raw = bytes(data[pos: pos + size])
            return name, int.from_bytes(raw, "big") if size == 4 and len(raw) == 4 else None
        pos += size
    return name, None  # pragma: no cover


def _ids(ids: Iterable[int]) -> bytes:
    return b"".join(u32(i) for i in ids)


def _read_ids(raw: bytes, what: str, sender: int | None) -> tuple[int, ...]:
    if len(raw) % 4:
        raise RejectedMessage(sender, f"{what}: {len(raw)} bytes is not a list of u32 ids")
    ids = tuple(int(x) for x in np.frombuffer(raw, dtype=">u4"))
    if list(ids) != sorted(set(ids)):
        raise RejectedMessage(sender, f"{what} must be distinct ids in increasing order")
    return ids


def _u32(raw: bytes, what: str, sender: int | None) -> int:
    if len(raw) != 4:
        raise RejectedMessage(sender, f"{what} must be 4 bytes, found {len(raw)}")
    return int.from_bytes(raw, "big")


def _tagged(pairs: Iterable[tuple[int, bytes]]) -> bytes:
    return join_fields([u32(i) + blob for i, blob in pairs])


def _read_tagged(raw: bytes, what: str, sender: int | None) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for item in split_fields(raw, what=what, sender=sender):
        if len(item) < 4:
            raise RejectedMessage(sender, f"{what}: an entry is truncated")
        who = int.from_bytes(item[:4], "big")
        if who in out:
            raise RejectedMessage(sender, f"{what}: client {who} appears twice")
        out[who] = item[4:]
    return out


def _envelope_bytes(env: SealedBundle) -> bytes:
    return (u32(env.dealer) + u32(env.recipient) + env.recipient_box + env.signature + env.sealed)


def _read_envelope(raw: bytes, sender: int | None) -> SealedBundle:
    if len(raw) < 8 + _BOX + _SIG + _SEAL_OVERHEAD:
        raise RejectedMessage(sender, "a share envelope is truncated")
    dealer, recipient = struct.unpack_from(">II", raw)
    box = raw[8: 8 + _BOX]
    sig = raw[8 + _BOX: 8 + _BOX + _SIG]
    return SealedBundle(dealer, recipient, box, raw[8 + _BOX + _SIG:], sig)


# ---- the round config -------------------------------------------------------------------------

class _RoundRoster:
    """The pinned roster seen through one round: the same members, keys and checks, but a
    digest that also binds the round's config, so the setup (and every signed byte under it)
    belongs to this round alone (keys are fresh every round)."""

    def __init__(self, roster: Roster, config_digest: bytes) -> None:
        self._roster = roster
        self._digest = hashlib.sha256(_ROUND_TAG + roster.digest() + config_digest).digest()

    @property
    def corrupt_rate(self) -> float:
        return float(self._roster.corrupt_rate)

    @property
    def public_keys(self) -> Mapping[int, bytes]:
        return self._roster.public_keys

    def digest(self) -> bytes:
        return self._digest

    def verify(self, client_id: int, signature: bytes, message: bytes, *, what: str) -> None:
        self._roster.verify(client_id, signature, message, what=what)


def round_roster(config: ThresholdRoundConfig, roster: Roster) -> _RoundRoster:
    """``roster`` bound to ``config`` (refused unless it is the roster the config names)."""
    if roster.digest() != config.roster_digest:
        raise InvalidParameter("the round config is bound to another roster than the pinned "
                               f"one (config {config.roster_digest.hex()[:16]}..., pinned "
                               f"{roster.digest().hex()[:16]}...)")
    return _RoundRoster(roster, config.digest())


@dataclass(frozen=True, slots=True)
class ThresholdRoundConfig:
    """One threshold CKKS round, frozen; its digest is bound into everything signed in it.

    ``client_ids``: the roster's ids (every one is a party of the sharing; who takes part is
    decided by who advertises). ``threshold`` defaults to :func:`.default_threshold`;
    ``corrupt`` (how many parties may collude with the server) and ``min_uploaders`` make the
    :class:`.DecryptionPolicy` (defaults: :func:`.decryption_policy`'s, with ``corrupt`` 0.05 n
    rounded up; :meth:`for_roster` takes the roster's). ``target_error``: the worst-case error
    of each released coordinate of the sum, relative to its range ``n * clip`` (``clip`` =
    ``weight_bound * max(value_bound, 1)``, the range of one weighted value and of one weight).
    The parameters come from :func:`.plan` for ``vector_length + 1`` reals (the weight rides as
    one more) with ``attempts=2``, so one retry of the decryption stays in the smudging budget.
    """

    client_ids: tuple[int, ...]
    round: int
    session: bytes
    roster_digest: bytes
    vector_length: int
    value_bound: float = 1.0
    weight_bound: float = 1.0
    threshold: int = 0  # 0: default_threshold(n)
    corrupt: int = -1  # -1: ceil(0.05 n)
    min_uploaders: int = 0  # 0: the policy's default, max(t, corrupt + 2)
    target_error: float = DEFAULT_TARGET_ERROR
    security_bits: int = 40
    layout_digest: bytes = b""
    params: ThresholdParams = field(init=False, repr=False, compare=False)
    policy: DecryptionPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = self.client_ids
        if not isinstance(ids, tuple) or list(ids) != sorted(set(ids)) \
                or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= _MAX_CLIENT_ID
                       for i in ids):
            raise InvalidParameter("ThresholdRoundConfig.client_ids must be a tuple of distinct "
                                   f"integer ids in increasing order, found {list(ids)[:8]}")
        n = len(ids)
        if n < 2:
            raise InvalidParameter(f"a threshold round needs at least 2 clients, found {n}")
        if not 0 <= self.round < 2**63:
            raise InvalidParameter(f"ThresholdRoundConfig.round must be in [0, 2^63), found "
                                   f"{self.round}")
        if not isinstance(self.session, bytes) or len(self.session) < _MIN_SESSION_BYTES:
            raise InvalidParameter(f"ThresholdRoundConfig.session must be >= {_MIN_SESSION_BYTES} "
                                   "random bytes (secrets.token_bytes(32))")
        if not isinstance(self.roster_digest, bytes) or len(self.roster_digest) != 32:
            raise InvalidParameter("ThresholdRoundConfig.roster_digest must be the 32-byte "
                                   "Roster.digest() of the pinned roster")
        if self.layout_digest and len(self.layout_digest) != 32:
            raise InvalidParameter("ThresholdRoundConfig.layout_digest must be a 32-byte "
                                   "ParamSpec digest or empty")
        if isinstance(self.vector_length, bool) or not 1 <= self.vector_length <= _MAX_VECTOR:
            raise InvalidParameter(f"ThresholdRoundConfig.vector_length must be in [1, "
                                   f"{_MAX_VECTOR}], found {self.vector_length}")
        for name in ("value_bound", "weight_bound"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise InvalidParameter(f"ThresholdRoundConfig.{name} must be finite and > 0, "
                                       f"found {value!r}")
        if not (math.isfinite(self.target_error) and 0 < self.target_error <= 1e-2):
            raise InvalidParameter(f"ThresholdRoundConfig.target_error must be in (0, 0.01], "
                                   f"found {self.target_error!r}")
        t = self.threshold or default_threshold(n)
        if not 2 <= t <= n:
            raise InvalidParameter(f"ThresholdRoundConfig.threshold must be in [2, {n}], found "
                                   f"{self.threshold}")
        corrupt = roster_corrupt(0.05, n) if self.corrupt == -1 else self.corrupt
        policy = decryption_policy(n, t, corrupt=corrupt,
                                   min_uploaders=self.min_uploaders or None)
        object.__setattr__(self, "threshold", t)
        object.__setattr__(self, "corrupt", policy.corrupt)
        object.__setattr__(self, "min_uploaders", policy.min_uploaders)
        object.__setattr__(self, "policy", policy)
        object.__setattr__(self, "params", plan(
            parties=n, threshold=t, clip=self.clip, params_count=self.vector_length + 1,
            rel_error=self.target_error * n, security_bits=self.security_bits,
            attempts=ATTEMPTS))

    @classmethod
    def for_roster(cls, roster: Roster, *, round: int, vector_length: int, session: bytes,
                   **kwargs: Any) -> ThresholdRoundConfig:
        """A config over every member of ``roster`` with its policy (``corrupt`` = the roster's
        ``ceil(corrupt_rate * n)``, its ``security_bits``) unless given."""
        ids = tuple(sorted(roster.ids))
        kwargs.setdefault("corrupt", roster_corrupt(roster.corrupt_rate, len(ids)))
        kwargs.setdefault("security_bits", roster.security_bits)
        return cls(client_ids=ids, round=round, session=session, roster_digest=roster.digest(),
                   vector_length=vector_length, **kwargs)

    @property
    def num_clients(self) -> int:
        return len(self.client_ids)

    def check_roster(self, roster: Roster) -> None:
        """Refuse this config unless it is bound to ``roster``, covers all of it, and its
        threshold, corrupt count and minimum of uploaders are no weaker than the roster's
        policy: what every client and the server check (a client can check it before it trains)."""
        round_roster(self, roster)
        _check_policy(self, roster)

    @property
    def clip(self) -> float:
        """The range of one encrypted real: a weighted value or a weight."""
        return float(self.weight_bound) * max(float(self.value_bound), 1.0)

    @property
    def quorum(self) -> int:
        """Signed statements a decryption needs (:attr:`.DecryptionPolicy.quorum`)."""
        return self.policy.quorum

    @property
    def needed(self) -> int:
        """The fewest clients that can finish a round: uploaders and statement signers both
        come from those that advertised and dealt."""
        return max(self.policy.quorum, self.policy.min_uploaders)

    @property
    def max_error(self) -> float:
        """The promised bound on each released coordinate of the sum: worst case, since the
        digit embedding releases the exact sum of the quantised values (:mod:`.digits`)."""
        return self.target_error * self.num_clients * self.clip

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding of every field (the derived parameters included)."""
        parts = [
            PROTOCOL.encode(), struct.pack(">H", VERSION),
            struct.pack(">I", len(self.client_ids)), _ids(self.client_ids),
            struct.pack(">Q", self.round), hashlib.sha256(self.session).digest(),
            self.roster_digest, struct.pack(">Q", self.vector_length),
            struct.pack(">dd", self.value_bound, self.weight_bound),
            struct.pack(">IIII", self.threshold, self.corrupt, self.min_uploaders,
                        self.security_bits),
            struct.pack(">d", self.target_error), self.layout_digest,
            repr(self.params).encode(),
        ]
        return hashlib.sha256(b"".join(struct.pack(">I", len(x)) + x for x in parts)).digest()

    def to_dict(self) -> dict[str, Any]:
        """The published JSON form (:meth:`from_dict` reads it back), with the ``digest`` and,
        for reading only, the derived parameters and policy."""
        p = self.params
        return {
            "protocol": PROTOCOL, "num_clients": self.num_clients,
            "client_ids": list(self.client_ids), "roster_digest": self.roster_digest.hex(),
            "round": self.round, "session": self.session.hex(),
            "vector_length": self.vector_length, "value_bound": self.value_bound,
            "weight_bound": self.weight_bound, "threshold": self.threshold,
            "corrupt": self.corrupt, "min_uploaders": self.min_uploaders,
            "quorum": self.quorum, "target_error": self.target_error,
            "security_bits": self.security_bits, "layout_digest": self.layout_digest.hex(),
            "params": {"poly_modulus_degree": p.poly_modulus_degree,
                       "coeff_modulus_bits": list(p.coeff_modulus_bits),
                       "scale_bits": p.scale_bits, "smudging_bits": p.smudging_bits,
                       "max_decryptions": p.max_decryptions, "attempts": ATTEMPTS},
            "digest": self.digest().hex(),
        }

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> ThresholdRoundConfig:
        """Rebuild a config from :meth:`to_dict`'s form; a ``digest`` present must match."""
        if config.get("protocol", PROTOCOL) != PROTOCOL:
            raise InvalidParameter(f"not a threshold CKKS round config (protocol "
                                   f"{config.get('protocol')!r}, expected {PROTOCOL!r})")
        try:
            ids = config.get("client_ids")
            client_ids = tuple(int(i) for i in ids) if ids is not None else \
                tuple(range(int(config["num_clients"])))
            cfg = cls(
                client_ids=client_ids, round=int(config["round"]),
                session=bytes.fromhex(str(config["session"])),
                roster_digest=bytes.fromhex(str(config["roster_digest"])),
                vector_length=int(config["vector_length"]),
                value_bound=float(config.get("value_bound", 1.0)),
                weight_bound=float(config.get("weight_bound", 1.0)),
                threshold=int(config.get("threshold", 0)),
                corrupt=int(config.get("corrupt", -1)),
                min_uploaders=int(config.get("min_uploaders", 0)),
                target_error=float(config.get("target_error", DEFAULT_TARGET_ERROR)),
                security_bits=int(config.get("security_bits", 40)),
                layout_digest=bytes.fromhex(str(config.get("layout_digest", ""))))
        except KeyError as exc:
            raise InvalidParameter(f"threshold ckks round config lacks {exc}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidParameter):
                raise
            raise InvalidParameter(f"threshold ckks round config has a field of the wrong type "
                                   f"({exc})") from None
        if "digest" in config and cfg.digest().hex() != config["digest"]:
            raise InvalidParameter("the threshold ckks round config does not match its digest: "
                                   "the two sides disagree on the round (different secagg "
                                   "versions?)")
        return cfg


def _check_policy(config: ThresholdRoundConfig, roster: Roster) -> None:
    """What a client (and the server) refuses in a round config, whoever made it: a round over
    fewer parties than the roster (the corrupt count, threshold and minimum uploaders would be
    computed for a smaller federation, so the server and a few colluders could get one honest
    update released nearly alone) and a policy weaker than the roster's."""
    ids = tuple(sorted(roster.ids))
    if tuple(config.client_ids) != ids:
        raise InvalidParameter(
            f"the round names {len(config.client_ids)} parties {list(config.client_ids)[:8]} but "
            f"the pinned roster has {len(ids)} members; a threshold round is shared over the whole "
            "roster (members that are absent or left out simply do not take part)")
    floor = roster_corrupt(roster.corrupt_rate, len(ids))
    if config.corrupt < floor:
        raise InvalidParameter(f"the round assumes {config.corrupt} corrupt parties; the pinned "
                               f"roster's corrupt_rate {roster.corrupt_rate} means {floor} of "
                               f"{len(ids)}")
    least = default_threshold(len(ids))
    if config.threshold < least:
        raise InvalidParameter(f"the round's threshold is {config.threshold}; with {len(ids)} "
                               f"members it must be at least a majority, {least}")
    need = default_min_uploaders(len(ids), config.threshold, config.corrupt)
    if config.min_uploaders < need:
        raise InvalidParameter(f"the round releases sums of {config.min_uploaders} uploaders; it "
                               f"must be at least max(threshold, corrupt + 2) = {need}, so that "
                               f"every released sum holds at least {need - config.corrupt} honest "
                               "updates")
    if config.security_bits < roster.security_bits:
        raise InvalidParameter(f"the round's smudging targets {config.security_bits} bits; the "
                               f"pinned roster asks for {roster.security_bits}")
    missing = [i for i in config.client_ids if i not in roster.public_keys]
    if missing:
        raise InvalidParameter(f"clients {missing[:8]} of the round are not in the pinned roster")


def _envelope_limit(config: ThresholdRoundConfig) -> int:
    p = config.params
    bundle = 21 + 4 + len(terms(config.client_ids, config.threshold)) * 68 \
        + config.params.data_primes * p.poly_modulus_degree * 8
    return 8 + _BOX + _SIG + _SEAL_OVERHEAD + bundle


# ---- the server -------------------------------------------------------------------------------

class ServerStage(enum.Enum):
    ADVERT = "advert"
    DEAL = "deal"
    UPLOAD = "upload"
    STATEMENT = "statement"
    PARTIAL = "partial"
    DONE = "done"


@dataclass(frozen=True)
class ServerResult:
    """What a threshold round releases: the plaintext weighted sum of the uploaders' updates and
    their total weight (exact sums of the quantised values: the error of each is at most
    ``config.max_error``; integer weights come back exact), who is in it and who decrypted it."""

    weighted_sum: npt.NDArray[np.float64]
    total_weight: float
    uploaders: tuple[int, ...]
    signers: tuple[int, ...]
    decryptors: tuple[int, ...]
    attempts: int
    dropped: tuple[int, ...]
    #: client -> why it was left out although it sent messages (reported bundles, too many reports)
    excluded: Mapping[int, str]

    def mean(self) -> npt.NDArray[np.float64]:
        return self.weighted_sum / self.total_weight


class ServerSession:
    """The aggregator's state for one threshold round. Holds public material only: it can
    neither open a share envelope nor decrypt anything but a sum the clients' statements allow."""

    def __init__(self, config: ThresholdRoundConfig, *, roster: Roster,
                 participants: Iterable[int] | None = None) -> None:
        self.config = config
        self.participants = frozenset(config.client_ids if participants is None else participants)
        if not self.participants <= set(config.client_ids):
            raise InvalidParameter(f"participants {sorted(self.participants - set(config.client_ids))}"
                                   " are not clients of the round config")
        _check_policy(config, roster)
        self._roster = round_roster(config, roster)
        self._digest = config.digest()
        self._setup = setup_digest(self._roster.digest(), config.client_ids, config.threshold,
                                   repr(config.params), policy=config.policy)
        self._ring = RingContext(config.params)
        self._chunks = chunks_for(self._ring, config.vector_length + 1)
        self._stage = ServerStage.ADVERT
        self._seen: set[bytes] = set()
        self._adverts: dict[int, KeyAdvert] = {}
        self._deals: dict[int, dict[int, SealedBundle]] = {}
        self._dealers: tuple[int, ...] = ()
        self._uploads: dict[int, tuple[bytes, npt.NDArray[np.uint64], tuple[int, ...]]] = {}
        self._uploaders: tuple[int, ...] = ()
        self._candidates: frozenset[int] = frozenset()
        self._excluded: dict[int, str] = {}
        self._aggregate = b""
        self._aggregate_digest = b""
        self._summed: npt.NDArray[np.uint64] | None = None
        self._statements: dict[int, bytes] = {}
        self._signers: tuple[int, ...] = ()
        self._attempt = 0
        self._decryptors: tuple[int, ...] = ()
        self._partials: dict[int, npt.NDArray[np.uint64]] = {}
        self._result: ServerResult | None = None

    def __repr__(self) -> str:
        return f"<threshold ServerSession round={self.config.round} stage={self._stage.value}>"

    # ---- public API ------------------------------------------------------------------------

    @property
    def stage(self) -> ServerStage:
        return self._stage

    @property
    def expected(self) -> frozenset[int]:
        """Clients whose message for the current stage is still awaited."""
        stage = self._stage
        if stage is ServerStage.ADVERT:
            return self.participants - set(self._adverts)
        if stage is ServerStage.DEAL:
            return frozenset(self._adverts) - set(self._deals)
        if stage is ServerStage.UPLOAD:
            return frozenset(self._dealers) - set(self._uploads)
        if stage is ServerStage.STATEMENT:
            return self._candidates - set(self._statements)
        if stage is ServerStage.PARTIAL:
            return frozenset(self._decryptors) - set(self._partials)
        return frozenset()

    @property
    def accepted(self) -> tuple[int, ...]:
        """Clients whose message for the current stage was accepted (sorted)."""
        got: dict[ServerStage, Iterable[int]] = {
            ServerStage.ADVERT: self._adverts, ServerStage.DEAL: self._deals,
            ServerStage.UPLOAD: self._uploads, ServerStage.STATEMENT: self._statements,
            ServerStage.PARTIAL: self._partials}
        return tuple(sorted(got.get(self._stage, ())))

    @property
    def advertised(self) -> tuple[int, ...]:
        return tuple(sorted(self._adverts))

    @property
    def dealers(self) -> tuple[int, ...]:
        return self._dealers

    @property
    def uploaders(self) -> tuple[int, ...]:
        return self._uploaders

    @property
    def decryptors(self) -> tuple[int, ...]:
        return self._decryptors

    @property
    def attempt(self) -> int:
        """0 for the first decryption request, 1 for the retry."""
        return self._attempt

    @property
    def excluded(self) -> Mapping[int, str]:
        return dict(self._excluded)

    @property
    def result(self) -> ServerResult:
        if self._result is None:
            raise ProtocolAbort(self._stage.value, "no result yet: the round has not completed")
        return self._result

    def max_message_bytes(self) -> int:
        """Upper bound on one valid client message at the current stage (for body limits)."""
        n, ring, chunks = self.config.num_clients, self._ring, self._chunks
        head = _FRAME + _FIELD + 32 + _FIELD + 4
        stage = self._stage
        if stage is ServerStage.ADVERT:
            return _FRAME + 4 * _FIELD + 32 + 4 + _BOX + _SIG
        if stage is ServerStage.DEAL:
            return head + _FIELD + (n - 1) * (_FIELD + _envelope_limit(self.config))
        if stage is ServerStage.UPLOAD:
            return head + 2 * _FIELD + message_size(MessageKind.UPLOAD, ring, chunks) + 4 * n
        if stage is ServerStage.STATEMENT:
            return head + _FIELD + message_size(MessageKind.STATEMENT, ring, chunks, uploaders=n)
        if stage is ServerStage.PARTIAL:
            return head + 2 * _FIELD + 4 + message_size(MessageKind.PARTIAL, ring, chunks,
                                                        uploaders=n, decryptors=n)
        return 0

    def receive(self, message: bytes) -> None:
        """Accept one client message for the current stage, or raise :class:`RejectedMessage`
        (and change nothing)."""
        data, fingerprint = admit(message, stage=self._stage.value,
                                  done=self._stage is ServerStage.DONE,
                                  limit=self.max_message_bytes(), seen=self._seen)
        handler = {ServerStage.ADVERT: self._receive_advert, ServerStage.DEAL: self._receive_deal,
                   ServerStage.UPLOAD: self._receive_upload,
                   ServerStage.STATEMENT: self._receive_statement,
                   ServerStage.PARTIAL: self._receive_partial}[self._stage]
        handler(data)
        self._seen.add(fingerprint)

    def advance(self) -> dict[int, bytes]:
        """Close the current stage; the next message for each client that goes on.
        :class:`NotEnoughParticipants` (the round is over) when too few remain."""
        stage = self._stage
        closes = {ServerStage.ADVERT: self._close_adverts, ServerStage.DEAL: self._close_deal,
                  ServerStage.UPLOAD: self._close_upload,
                  ServerStage.STATEMENT: self._close_statement,
                  ServerStage.PARTIAL: self._close_partial}
        if stage not in closes:
            raise ProtocolAbort(stage.value, "the round is already complete")
        try:
            return closes[stage]()
        except ProtocolAbort:
            self._stage = ServerStage.DONE
            raise

    # ---- receiving ---------------------------------------------------------------------------

    def _header(self, fields: list[bytes], kind: Kind) -> int:
        who = _u32(fields[1], "sender", None)
        if fields[0] != self._digest:
            raise RejectedMessage(who, f"the {kind.label} is for another round config")
        if who not in self.expected:
            raise RejectedMessage(who, f"client {who} is not awaited at stage "
                                  f"{self._stage.value!r}", ErrorCode.NOT_EXPECTED)
        return who

    def _receive_advert(self, data: bytes) -> None:
        advert = KeyAdvert.from_bytes(data)
        who = advert.client_id
        if advert.config_digest != self._digest:
            raise RejectedMessage(who, "key advert is for another round config")
        if who not in self.participants:
            raise RejectedMessage(who, f"client {who} is not a participant of this round")
        if who in self._adverts:
            raise RejectedMessage(who, "duplicate key advert", ErrorCode.CONFLICTING_MESSAGE)
        try:
            self._roster.verify(who, advert.signature, advert.signed_part(), what="key advert")
        except AuthenticationFailed:
            raise RejectedMessage(who, "key advert is not signed by the sender's roster "
                                  "identity") from None
        try:
            _check_box_key(advert.box_public)
        except InvalidParameter:
            raise RejectedMessage(who, "the X25519 box key is malformed or a low-order "
                                  "point") from None
        self._adverts[who] = advert

    def _receive_deal(self, data: bytes) -> None:
        fields = _unframe(data, Kind.DEAL, 3)
        dealer = self._header(fields, Kind.DEAL)
        limit = _envelope_limit(self.config)
        envelopes: dict[int, SealedBundle] = {}
        for raw in split_fields(fields[2], what="share envelopes", sender=dealer):
            if len(raw) > limit:
                raise RejectedMessage(dealer, f"a share envelope is {len(raw)} bytes, above the "
                                      f"{limit} a bundle of this round can take")
            env = _read_envelope(raw, dealer)
            if env.dealer != dealer:
                raise RejectedMessage(dealer, f"a share envelope names dealer {env.dealer}")
            advert = self._adverts.get(env.recipient)
            if advert is None or env.recipient == dealer or env.recipient in envelopes:
                raise RejectedMessage(dealer, f"a share envelope is addressed to client "
                                      f"{env.recipient}, who did not advertise a key this round "
                                      "(or twice)")
            if env.recipient_box != advert.box_public:
                raise RejectedMessage(dealer, f"the envelope for client {env.recipient} names "
                                      "another box key than the one it advertised")
            try:
                self._roster.verify(dealer, env.signature, env.signed_part(self._setup),
                                    what="share envelope")
            except AuthenticationFailed:
                raise RejectedMessage(dealer, f"the envelope for client {env.recipient} is not "
                                      "signed by the dealer's roster identity") from None
            envelopes[env.recipient] = env
        missing = sorted(set(self._adverts) - {dealer} - set(envelopes))
        if missing:
            raise RejectedMessage(dealer, f"the deal has no envelope for advertised client(s) "
                                  f"{missing[:8]}: a dealer shares its secret with every "
                                  "advertiser")
        self._deals[dealer] = envelopes

    def _receive_upload(self, data: bytes) -> None:
        fields = _unframe(data, Kind.UPLOAD, 4)
        who = self._header(fields, Kind.UPLOAD)
        reports = _read_ids(fields[3], "reported dealers", who)
        if not set(reports) <= set(self._dealers) - {who}:
            raise RejectedMessage(who, f"reported dealers {list(reports)[:8]} are not other "
                                  "dealers of this round")
        decoded = decode_upload(fields[2], self._ring, roster=self._roster,
                                config_digest=self._setup, round_id=self.config.round,
                                chunks=self._chunks, sender=who)
        self._uploads[who] = (fields[2], decoded.residues, reports)

    def _receive_statement(self, data: bytes) -> None:
        fields = _unframe(data, Kind.STATEMENT, 3)
        who = self._header(fields, Kind.STATEMENT)
        decode_statement(fields[2], self._ring, roster=self._roster, config_digest=self._setup,
                         round_id=self.config.round, chunks=self._chunks,
                         uploaders=self._uploaders, digest_of_aggregate=self._aggregate_digest,
                         sender=who)
        self._statements[who] = fields[2]

    def _receive_partial(self, data: bytes) -> None:
        fields = _unframe(data, Kind.PARTIAL, 4)
        who = self._header(fields, Kind.PARTIAL)
        attempt = _u32(fields[2], "attempt", who)
        if attempt != self._attempt:
            raise RejectedMessage(who, f"partial decryption for attempt {attempt}; the current "
                                  f"request is attempt {self._attempt}")
        decoded = decode_partial(fields[3], self._ring, roster=self._roster,
                                 config_digest=self._setup, round_id=self.config.round,
                                 chunks=self._chunks, uploaders=self._uploaders,
                                 decryptors=self._decryptors, sender=who)
        self._partials[who] = decoded.residues

    # ---- stage closes ----------------------------------------------------------------------

    def _short(self, stage: ServerStage, have: int, what: str) -> NotEnoughParticipants:
        cfg = self.config
        return NotEnoughParticipants(
            stage.value, have, cfg.needed,
            f"{what}; the policy needs min_uploaders={cfg.min_uploaders} uploaders and "
            f"{cfg.quorum} statement signers (quorum), both from those who advertised and dealt")

    def _close_adverts(self) -> dict[int, bytes]:
        if len(self._adverts) < self.config.needed:
            raise self._short(ServerStage.ADVERT, len(self._adverts), "valid signed key adverts")
        request = KeyRequest(self._digest, tuple(self._adverts[i] for i in sorted(self._adverts)))
        self._stage = ServerStage.DEAL
        return dict.fromkeys(sorted(self._adverts), request.to_bytes())

    def _close_deal(self) -> dict[int, bytes]:
        dealers = tuple(sorted(self._deals))
        if len(dealers) < self.config.needed:
            raise self._short(ServerStage.DEAL, len(dealers), "complete deals of share bundles")
        self._dealers = dealers
        out = {}
        for j in dealers:
            envs = [_envelope_bytes(self._deals[i][j]) for i in dealers if i != j]
            out[j] = _frame(Kind.DELIVERY, [self._digest, _ids(dealers), join_fields(envs)])
        self._deals = {}  # relayed; the server keeps no envelope it no longer needs
        self._stage = ServerStage.UPLOAD
        return out

    def _close_upload(self) -> dict[int, bytes]:
        cfg = self.config
        sent = tuple(sorted(self._uploads))
        cap = max(0, len(sent) - cfg.min_uploaders)
        reported: set[int] = set()
        candidates = set(sent)
        for j in sent:
            said = set(self._uploads[j][2]) & set(sent)
            if len(said) > cap:  # more than the round can lose: the reporter is left out
                candidates.discard(j)
                self._excluded[j] = (f"reported {len(said)} dealers' bundles as unusable, more "
                                     f"than the {cap} this round can leave out")
            else:
                reported |= said
        for i in sorted(reported):
            self._excluded.setdefault(i, "its share bundle was reported unusable by a recipient")
        uploaders = tuple(i for i in sent if i not in reported)
        if len(uploaders) < cfg.min_uploaders:
            raise NotEnoughParticipants(
                ServerStage.UPLOAD.value, len(uploaders), cfg.min_uploaders,
                "uploads from dealers whose shares every signer holds; the policy's "
                "min_uploaders (a decrypted sum must hold that many updates)")
        if len(candidates) < cfg.quorum:
            raise NotEnoughParticipants(
                ServerStage.UPLOAD.value, len(candidates), cfg.quorum,
                "clients left to sign the decryption statement (the policy's quorum)")
        self._uploaders = uploaders
        self._candidates = frozenset(candidates)
        summed = aggregate(self._ring, {i: self._uploads[i][1] for i in uploaders})
        self._summed = np.stack(summed)
        self._aggregate = encode_aggregate(self._ring, config_digest=self._setup,
                                           round_id=cfg.round, uploaders=uploaders,
                                           residues=self._summed)
        self._aggregate_digest = aggregate_digest(self._aggregate)
        request = _frame(Kind.STATEMENT_REQUEST, [
            self._digest, self._aggregate,
            _tagged((i, self._uploads[i][0]) for i in uploaders)])
        self._uploads = {}
        self._stage = ServerStage.STATEMENT
        return dict.fromkeys(sorted(candidates), request)

    def _partial_request(self) -> dict[int, bytes]:
        request = _frame(Kind.PARTIAL_REQUEST, [
            self._digest, u32(self._attempt), _ids(self._decryptors),
            _tagged((i, self._statements[i]) for i in self._signers)])
        return dict.fromkeys(self._decryptors, request)

    def _close_statement(self) -> dict[int, bytes]:
        cfg = self.config
        signers = tuple(sorted(self._statements))
        if len(signers) < cfg.quorum:
            raise NotEnoughParticipants(
                ServerStage.STATEMENT.value, len(signers), cfg.quorum,
                f"signed decryption statements; the policy's quorum max(t, floor((n + corrupt) "
                f"/ 2) + 1) with n={cfg.num_clients}, t={cfg.threshold}, corrupt={cfg.corrupt}")
        self._signers = signers
        self._decryptors = signers
        self._attempt = 0
        self._stage = ServerStage.PARTIAL
        return self._partial_request()

    def _close_partial(self) -> dict[int, bytes]:
        cfg = self.config
        have = tuple(sorted(self._partials))
        missing = sorted(set(self._decryptors) - set(have))
        if not missing:
            assert self._summed is not None
            try:
                values = combine(self._ring, list(self._summed), self._partials,
                                 decryptors=self._decryptors, threshold=cfg.threshold,
                                 length=cfg.vector_length + 1)
            except InvalidParameter as exc:
                # every upload and partial verified, yet the sum does not decode: an uploader's
                # or a decryptor's residues were not what the protocol makes (no proof says whose)
                raise ProtocolAbort(ServerStage.PARTIAL.value, f"the combined sum does not "
                                    f"decode ({exc}); an enterprise uploaded or decrypted "
                                    "something other than the protocol's values, so nothing "
                                    "is released") from None
            self._result = ServerResult(
                weighted_sum=np.array(values[: cfg.vector_length], dtype=np.float64),
                total_weight=float(values[cfg.vector_length]), uploaders=self._uploaders,
                signers=self._signers, decryptors=self._decryptors, attempts=self._attempt + 1,
                dropped=tuple(sorted(self.participants - set(self._uploaders))),
                excluded=dict(self._excluded))
            self._stage = ServerStage.DONE
            return {}
        if self._attempt + 1 < ATTEMPTS and len(have) >= cfg.threshold:
            self._attempt += 1
            self._decryptors = have
            self._partials = {}
            return self._partial_request()
        why = (f"decryptor(s) {missing[:8]} sent no partial decryption; "
               + (f"the retry also lost members and the smudging budget allows {ATTEMPTS} "
                  "decryptions" if self._attempt + 1 >= ATTEMPTS else
                  f"fewer than t={cfg.threshold} answered, so no retry can decrypt"))
        raise NotEnoughParticipants(ServerStage.PARTIAL.value, len(have), cfg.threshold,
                                    f"partial decryptions (the threshold t); {why}")


def _check_box_key(public: bytes) -> None:
    from secagg.ckks.keys import check_box_key

    check_box_key(public)


# ---- the client -------------------------------------------------------------------------------

class ClientStage(enum.Enum):
    NEW = "new"
    ADVERTISED = "advertised"
    DEALT = "dealt"
    UPLOADED = "uploaded"
    SIGNED = "signed"
    DECRYPTED = "decrypted"
    FAILED = "refused"


@dataclass(frozen=True)
class ThresholdClientResult:
    """What a client vouched for: the uploaders of the sum it signed, the decrypting set of its
    last partial decryption and how many it sent (a runtime checks the server's release
    against it)."""

    uploaders: tuple[int, ...]
    decryptors: tuple[int, ...]
    partials_sent: int


class ClientSession(Unpicklable):
    """One enterprise's state for one threshold round: its fresh secret (in a
    :class:`.ThresholdParty`), its box key, and its update. Redacted and unpicklable.

    ``start()`` is the advert; ``handle_bytes`` answers the key request (the deal), the share
    delivery (the upload), the statement request (the signed statement) and each partial
    request (the partial decryption). Any refusal is a :class:`ProtocolAbort` that ends the
    session; the same message handed twice gets the same reply."""

    def __init__(self, config: ThresholdRoundConfig, client_id: int,
                 update: npt.ArrayLike | None, *, weight: float = 1.0, identity: Identity,
                 roster: Roster) -> None:
        """``update`` (clipped to ``value_bound``) and its ``weight``; or ``update=None`` when it
        does not exist yet: a transport that trains only once the keys are dealt (Flower's, to
        keep the update out of the state it carries between calls) gives it with
        :meth:`provide_update` before the share delivery."""
        self._bind(config, client_id, identity, roster)
        self._values: npt.NDArray[np.float64] | None = None
        if update is not None:
            self._values = _weighted_values(config, update, weight)
        self._party: ThresholdParty | None = None
        self._box = X25519KeyPair.generate()
        self._stage = ClientStage.NEW
        self._advertised: dict[int, bytes] = {}
        self._dealers: tuple[int, ...] = ()
        self.reported: tuple[int, ...] = ()
        self._aggregate = b""
        self._uploaders: tuple[int, ...] = ()
        self._decryptors: tuple[int, ...] = ()
        self._attempt = -1
        self._partials = 0
        self._replies: dict[bytes, bytes | None] = {}
        self.failure: ProtocolAbort | None = None

    def __repr__(self) -> str:
        return f"<threshold ClientSession id={self.client_id} stage={self._stage.value} " \
               "secret=redacted>"

    @property
    def awaiting_update(self) -> bool:
        """True while this session was made without its update and can still take it."""
        return self._values is None and self._stage in (
            ClientStage.NEW, ClientStage.ADVERTISED, ClientStage.DEALT)

    def provide_update(self, update: npt.ArrayLike, *, weight: float = 1.0) -> None:
        """Give the update to a session made with ``update=None``: once, before the share
        delivery (the upload is the first message that needs it)."""
        if self._values is not None:
            raise AlreadyUsed(f"client {self.client_id}'s session already holds its update")
        if self._stage not in (ClientStage.NEW, ClientStage.ADVERTISED, ClientStage.DEALT):
            raise ProtocolAbort(self._stage.value, "the update must be given before the share "
                                "delivery")
        self._values = _weighted_values(self.config, update, weight)

    def _bind(self, config: ThresholdRoundConfig, client_id: int, identity: Identity,
              roster: Roster) -> None:
        """The checks on the round, the client and its identity, and what follows from them
        alone; :meth:`restore` runs the same, since none of it is exported."""
        rr = round_roster(config, roster)
        _check_policy(config, roster)
        if client_id not in config.client_ids:
            raise InvalidParameter(f"client_id {client_id} is not in the config's client_ids")
        if roster.member(client_id).public_key != identity.public_key:
            raise InvalidParameter(f"this identity ({identity.fingerprint}) is not client "
                                   f"{client_id}'s entry in the pinned roster")
        self.config = config
        self.client_id = client_id
        self._identity = identity
        self._roster = rr
        self._digest = config.digest()
        self._ring = RingContext(config.params)
        self._setup = setup_digest(rr.digest(), config.client_ids, config.threshold,
                                   repr(config.params), policy=config.policy)

    def export_state(self, key: SecretBytes) -> bytes:
        """This session sealed under ``key`` (from :func:`.session_state.state_key`): the one
        explicit way its secret leaves it, for a transport that runs each message in a fresh
        process. Keep :attr:`stage` and :attr:`partials_sent` beside the blob for
        :meth:`restore`. A refused session (stage ``refused``) has dropped its secret and is
        not exported (:class:`InvalidParameter`): it is a dropout of the round."""
        from .session_state import export_session

        return export_session(self, key)

    @classmethod
    def restore(cls, blob: bytes, key: SecretBytes, *, config: ThresholdRoundConfig,
                client_id: int, identity: Identity, roster: Roster, stage: ClientStage,
                partials_sent: int | None = None) -> ClientSession:
        """The session :meth:`export_state` sealed at ``stage`` (and, at ``decrypted``, after
        ``partials_sent`` partial decryptions: 1 unless given); refuses any other blob with an
        opaque :class:`AuthenticationFailed`. Config, identity and roster are checked as by
        ``__init__`` (:class:`InvalidParameter`)."""
        from .session_state import restore_session

        return restore_session(cls, blob, key, config=config, client_id=client_id,
                               identity=identity, roster=roster, stage=stage,
                               partials_sent=partials_sent)

    @property
    def stage(self) -> ClientStage:
        return self._stage

    @property
    def partials_sent(self) -> int:
        """Partial decryptions this session sent (0, 1, or 2 after a retry): with :attr:`stage`,
        the high-water mark a stored export is restored against (a retry stays at stage
        ``decrypted`` but spends smudging budget, so an export from before it must not open)."""
        return self._partials

    @property
    def signed_uploaders(self) -> tuple[int, ...] | None:
        """The uploaders of the statement this client signed (None before it signed)."""
        return self._uploaders if self._stage in (ClientStage.SIGNED, ClientStage.DECRYPTED) \
            else None

    @property
    def result(self) -> ThresholdClientResult:
        if self._stage is not ClientStage.DECRYPTED:
            why = f"refused: {self.failure}" if self.failure is not None else \
                f"stage {self._stage.value!r}"
            raise ProtocolAbort(self._stage.value, f"client {self.client_id} sent no partial "
                                f"decryption ({why})")
        return ThresholdClientResult(self._uploaders, self._decryptors, self._partials)

    def start(self) -> bytes:
        """The signed advert of this round's fresh box key; the round's secret is drawn here."""
        if self._stage is not ClientStage.NEW:
            raise AlreadyUsed(f"client {self.client_id} already started this round")
        self._party = ThresholdParty(self._ring, self.client_id, self.config.client_ids,
                                     self.config.threshold, identity=self._identity,
                                     roster=self._roster, policy=self.config.policy)
        unsigned = KeyAdvert(self._digest, self.client_id, self._box.public_bytes, b"")
        advert = KeyAdvert(self._digest, self.client_id, self._box.public_bytes,
                           self._identity.signing_key.sign(unsigned.signed_part()))
        self._stage = ClientStage.ADVERTISED
        return advert.to_bytes()

    def handle_bytes(self, data: bytes) -> bytes | None:
        """Answer one server message (None: nothing to send)."""
        data = bytes(data)
        fingerprint = hashlib.sha256(data).digest()
        if fingerprint in self._replies:
            return self._replies[fingerprint]
        if self._stage is ClientStage.FAILED:
            raise AlreadyUsed(f"client {self.client_id} refused this round earlier "
                              f"({self.failure})")
        if self._stage is ClientStage.NEW:
            raise AlreadyUsed(f"client {self.client_id}: call start() before handling messages")
        want = {ClientStage.ADVERTISED: "key request", ClientStage.DEALT: "delivery",
                ClientStage.UPLOADED: "statement request", ClientStage.SIGNED: "partial request",
                ClientStage.DECRYPTED: "partial request"}[self._stage]
        kind = peek_server(data)
        if kind != want:
            raise AlreadyUsed(f"client {self.client_id} is at stage {self._stage.value!r} and "
                              f"waits for a '{want}'; a '{kind or 'unknown'}' message is refused")
        try:
            if kind == "key request":
                reply = self._on_key_request(data)
            elif kind == "delivery":
                reply = self._on_delivery(data)
            elif kind == "statement request":
                reply = self._on_statement_request(data)
            else:
                reply = self._on_partial_request(data)
        except ProtocolAbort as exc:
            self._fail(exc)
            raise
        except (SecAggError, ValueError) as exc:  # a malformed or refused server message
            abort = ProtocolAbort(self._stage.value, f"refused the server's {kind}: {exc}")
            self._fail(abort)
            raise abort from None
        self._replies[fingerprint] = reply
        return reply

    def _require_party(self) -> ThresholdParty:
        if self._party is None:
            raise AlreadyUsed("the session has no keys (not started, or refused)")
        return self._party

    def abandon(self, reason: str) -> None:
        """End this session as a dropout (stage ``refused``), dropping its secret: for a
        transport whose own step failed (a ClientApp that trained and then failed must not be
        asked to train again)."""
        self._fail(ProtocolAbort(self._stage.value, reason))

    def _fail(self, exc: ProtocolAbort) -> None:
        self._stage = ClientStage.FAILED
        self.failure = exc
        self._party = None  # the secret and the shares go with the refusal

    # ---- the steps ---------------------------------------------------------------------------

    def _on_key_request(self, data: bytes) -> bytes:
        stage = "key request"
        try:
            request = KeyRequest.from_bytes(data)
        except RejectedMessage as exc:
            raise ProtocolAbort(stage, f"the key request is malformed: {exc.reason}") from None
        if request.config_digest != self._digest:
            raise ProtocolAbort(stage, "the key request is for another round config")
        boxes: dict[int, bytes] = {}
        for advert in request.adverts:
            who = advert.client_id
            if advert.config_digest != self._digest or who not in self.config.client_ids \
                    or who in boxes:
                raise ProtocolAbort(stage, f"the key request carries an advert for client {who} "
                                    "of another round, or twice")
            try:
                self._roster.verify(who, advert.signature, advert.signed_part(),
                                    what="key advert")
            except AuthenticationFailed:
                raise ProtocolAbort(stage, f"the advert relayed for client {who} is not signed "
                                    "by its roster identity: the server substituted or forged "
                                    "its key; refusing to deal") from None
            if who == self.client_id and advert.box_public != self._box.public_bytes:
                raise ProtocolAbort(stage, "the key request carries another box key for this "
                                    "very client")
            try:
                _check_box_key(advert.box_public)
            except InvalidParameter:
                raise ProtocolAbort(stage, f"client {who}'s signed box key is a low-order or "
                                    "malformed point (the server should have refused it)") \
                    from None
            boxes[who] = advert.box_public
        if self.client_id not in boxes:
            raise ProtocolAbort(stage, "the key request leaves out this client's own advert")
        if len(boxes) < self.config.needed:
            raise NotEnoughParticipants(stage, len(boxes), self.config.needed,
                                        "advertised clients (the policy's quorum and "
                                        "min_uploaders)")
        party = self._require_party()
        bundles = party.deal()
        envelopes = [_envelope_bytes(seal_bundle(bundles[j], identity=self._identity.signing_key,
                                                 recipient_box=boxes[j], session=self._setup))
                     for j in sorted(boxes) if j != self.client_id]
        self._advertised = boxes
        self._stage = ClientStage.DEALT
        return _frame(Kind.DEAL, [self._digest, u32(self.client_id), join_fields(envelopes)])

    def _on_delivery(self, data: bytes) -> bytes:
        stage = "delivery"
        fields = _unframe(data, Kind.DELIVERY, 3)
        if fields[0] != self._digest:
            raise ProtocolAbort(stage, "the share delivery is for another round config")
        dealers = _read_ids(fields[1], "dealers", None)
        if self.client_id not in dealers or not set(dealers) <= set(self._advertised):
            raise ProtocolAbort(stage, f"the dealers {list(dealers)[:8]} must include this client "
                                "and only clients that advertised")
        envelopes = [_read_envelope(raw, None)
                     for raw in split_fields(fields[2], what="share envelopes")]
        by_dealer = {e.dealer: e for e in envelopes}
        if len(by_dealer) != len(envelopes) or set(by_dealer) != set(dealers) - {self.client_id}:
            raise ProtocolAbort(stage, "the delivery must carry exactly one envelope from each "
                                "other dealer")
        party = self._require_party()
        reported = []
        for i in sorted(by_dealer):
            try:
                bundle = open_bundle(by_dealer[i], me=self.client_id, box=self._box,
                                     roster=self._roster, session=self._setup, ring=self._ring)
                party.receive(bundle)
            except (AuthenticationFailed, RejectedMessage, InvalidParameter, AlreadyUsed):
                reported.append(i)  # its shares are unusable: it must stay out of the sum
        self._dealers = dealers
        self.reported = tuple(reported)
        if self._values is None:
            raise ProtocolAbort(stage, "the share delivery arrived before this client's update "
                                "was given (provide_update)")
        c0 = party.encrypt_round(self._values, self.config.round, clip=self.config.clip)
        upload = encode_upload(self._ring, identity=self._identity, config_digest=self._setup,
                               round_id=self.config.round, sender=self.client_id, residues=c0)
        self._values = np.empty(0, dtype=np.float64)  # uploaded: not needed (nor sealed) again
        self._stage = ClientStage.UPLOADED
        return _frame(Kind.UPLOAD, [self._digest, u32(self.client_id), upload, _ids(reported)])

    def _on_statement_request(self, data: bytes) -> bytes:
        stage = "statement"
        fields = _unframe(data, Kind.STATEMENT_REQUEST, 3)
        if fields[0] != self._digest:
            raise ProtocolAbort(stage, "the statement request is for another round config")
        uploads = _read_tagged(fields[2], "uploads", None)
        strangers = sorted(set(uploads) - set(self._dealers))
        if strangers:
            raise ProtocolAbort(stage, f"the aggregate names uploader(s) {strangers[:8]} that "
                                "were not dealers of this round")
        statement = self._require_party().sign_statement(fields[1], uploads,
                                                         round_id=self.config.round)
        self._aggregate = fields[1]
        self._uploaders = tuple(sorted(uploads))
        self._stage = ClientStage.SIGNED
        return _frame(Kind.STATEMENT, [self._digest, u32(self.client_id), statement])

    def _on_partial_request(self, data: bytes) -> bytes:
        stage = "partial"
        fields = _unframe(data, Kind.PARTIAL_REQUEST, 4)
        if fields[0] != self._digest:
            raise ProtocolAbort(stage, "the partial request is for another round config")
        attempt = _u32(fields[1], "attempt", None)
        group = _read_ids(fields[2], "decryptors", None)
        if attempt <= self._attempt or attempt >= ATTEMPTS:
            raise ProtocolAbort(stage, f"partial request for attempt {attempt}; this client "
                                f"answered attempt {self._attempt} and the round allows "
                                f"{ATTEMPTS}")
        if self._decryptors and not set(group) < set(self._decryptors):
            raise ProtocolAbort(stage, "a retry must ask a strict subset of the earlier "
                                "decrypting set (those who answered)")
        statements = _read_tagged(fields[3], "statements", None)
        shares = self._require_party().partial_decrypt(self._aggregate, statements, group,
                                                       round_id=self.config.round)
        partial = encode_partial(self._ring, identity=self._identity, config_digest=self._setup,
                                 round_id=self.config.round, sender=self.client_id,
                                 uploaders=self._uploaders, decryptors=group, residues=shares)
        self._attempt = attempt
        self._decryptors = group
        self._partials += 1
        self._stage = ClientStage.DECRYPTED
        return _frame(Kind.PARTIAL, [self._digest, u32(self.client_id), u32(attempt), partial])


def _weighted_values(config: ThresholdRoundConfig, update: npt.ArrayLike,
                     weight: float) -> npt.NDArray[np.float64]:
    """``weight * update`` and the weight, as the round encrypts them; refuses an update of
    another length, non-finite or above ``value_bound``, and a weight outside
    (0, ``weight_bound``]."""
    vec = np.asarray(update, dtype=np.float64)
    if vec.shape != (config.vector_length,):
        raise InvalidParameter(f"update has shape {vec.shape}; the round expects "
                               f"({config.vector_length},)")
    if not np.all(np.isfinite(vec)):
        raise InvalidParameter("update has non-finite values (nan/inf)")
    peak = float(np.max(np.abs(vec))) if vec.size else 0.0
    if peak > config.value_bound:
        raise InvalidParameter(f"update has |value| up to {peak:.4g} > value_bound="
                               f"{config.value_bound}; clip it first")
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise InvalidParameter(f"weight must be a number, found {type(weight).__name__}") \
            from None
    if not (math.isfinite(w) and 0 < w <= config.weight_bound):
        raise InvalidParameter(f"weight must be in (0, weight_bound={config.weight_bound}], "
                               f"found {w}")
    values = np.empty(config.vector_length + 1, dtype=np.float64)
    values[:-1] = vec * w
    values[-1] = w
    return values


def peek_server(data: bytes) -> str | None:
    """The kind of a server -> client message: ``"key request"`` or a :class:`Kind` label."""
    if len(data) < _FRAME:
        return None
    head, kind = bytes(data[: len(MAGIC)]), data[len(MAGIC)]
    if head == CKKS_MAGIC and kind == 2:
        return "key request"
    if head == MAGIC and kind in (Kind.DELIVERY, Kind.STATEMENT_REQUEST, Kind.PARTIAL_REQUEST):
        return Kind(kind).label
    return None
