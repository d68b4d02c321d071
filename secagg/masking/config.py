"""The one frozen configuration both sides of a masking round share.

Its SHA-256 digest rides in every message, so a client and a server that disagree on any
parameter (threshold, graph, quantisation, modulus, round, session) reject each other's messages
instead of producing a wrong sum.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from secagg.encoding.quantize import FixedPoint, check_headroom
from secagg.errors import InvalidParameter
from secagg.masking.params import choose_parameters, security_failure

if TYPE_CHECKING:
    from secagg.encoding.paramspec import ParamSpec
    from secagg.identity import Roster

_T = TypeVar("_T")

__all__ = ["PROTOCOL_NAME", "PROTOCOL_VERSION", "MaskingConfig", "Stage"]

PROTOCOL_NAME = "secagg-masking"
PROTOCOL_VERSION = 3  # 2: roster-bound active rounds, AES-128 mask keys; 3: share commitments


class Stage(enum.Enum):
    """Protocol stages, in order. A client may drop at any of them."""

    ADVERTISE = "advertise"
    SHARE = "share"
    MASKED_INPUT = "masked-input"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class MaskingConfig:
    """Everything that must be identical on every party of one round.

    ``neighbours`` is the graph degree k (``num_clients - 1`` is the full graph of SecAgg,
    smaller even values the Harary graphs of SecAgg+); ``threshold`` is t of the m = k + 1
    holders of each client's secrets. Build one with :meth:`create`, which chooses k and t from
    the expected dropout and corruption rates; pass them explicitly only to override, and they
    are validated the same way.
    """

    num_clients: int
    vector_length: int
    neighbours: int
    threshold: int
    fixed_point: FixedPoint
    mod_bits: int
    max_weight: int = 1
    noise_headroom: int = 0
    active: bool = False
    round: int = 0
    session: bytes = field(default=b"\x00" * 16)
    roster_digest: bytes = b""
    layout_digest: bytes = b""  # the model layout (ParamSpec digest) the round is for, if named
    version: int = PROTOCOL_VERSION
    #: distributed DP (client-level, Skellam noise added by each client inside the sum; see
    #: :func:`secagg.dp.distributed.round_noise`): 0 is off. ``dp_min_shares`` is the number of
    #: noise shares the noise is calibrated for, at most the threshold (no sum of fewer than t
    #: inputs is ever unmasked); ``noise_headroom`` must hold the n centred shares.
    dp_noise_multiplier: float = 0.0
    dp_l2_clip: float = 0.0
    dp_min_shares: int = 0

    def __post_init__(self) -> None:
        n, k, t = self.num_clients, self.neighbours, self.threshold
        if n < 2:
            raise InvalidParameter(f"num_clients must be >= 2, found {n}")
        if self.vector_length < 1:
            raise InvalidParameter(f"vector_length must be >= 1, found {self.vector_length}")
        if not (k == n - 1 or (2 <= k < n - 1 and k % 2 == 0)):
            raise InvalidParameter(
                f"neighbours must be num_clients - 1 (full graph) or an even number in "
                f"[2, {n - 2}], found {k} with num_clients={n}"
            )
        m = k + 1
        if not m // 2 < t <= m:
            raise InvalidParameter(
                f"threshold must be > (neighbours + 1) / 2 and <= neighbours + 1, i.e. in "
                f"[{m // 2 + 1}, {m}]; found {t} with neighbours={k}. Raise threshold or let "
                "MaskingConfig.create choose it"
            )
        if self.version != PROTOCOL_VERSION:
            raise InvalidParameter(f"protocol version {self.version} is not supported "
                                   f"(this is version {PROTOCOL_VERSION})")
        if self.roster_digest and len(self.roster_digest) != 32:
            raise InvalidParameter(f"roster_digest must be 32 bytes (Roster.digest()) or empty, "
                                   f"found {len(self.roster_digest)}")
        if self.layout_digest and len(self.layout_digest) != 32:
            raise InvalidParameter("layout_digest must be a 32-byte ParamSpec digest or empty")
        if self.active and not self.roster_digest:
            raise InvalidParameter("active (malicious-server) mode verifies every peer against a "
                                   "pinned roster: pass roster= to MaskingConfig.create")
        if len(self.session) != 16:
            raise InvalidParameter(f"session must be 16 bytes, found {len(self.session)}")
        if self.round < 0:
            raise InvalidParameter(f"round must be >= 0, found {self.round}")
        if self.noise_headroom < 0:
            raise InvalidParameter(f"noise_headroom must be >= 0, found {self.noise_headroom}")
        check_headroom(num_clients=n, fixed_point=self.fixed_point, max_weight=self.max_weight,
                       mod_bits=self.mod_bits, extra=self.noise_headroom)
        self._check_distributed_dp()

    def _check_distributed_dp(self) -> None:
        z, clip, shares = self.dp_noise_multiplier, self.dp_l2_clip, self.dp_min_shares
        if not z:
            if clip or shares:
                raise InvalidParameter("dp_l2_clip and dp_min_shares are set but "
                                       "dp_noise_multiplier is 0 (distributed DP off)")
            return
        if isinstance(z, bool) or not isinstance(z, int | float) or not math.isfinite(z) or z <= 0:
            raise InvalidParameter(f"dp_noise_multiplier must be a finite number > 0, found {z!r}")
        if isinstance(clip, bool) or not isinstance(clip, int | float) or not math.isfinite(clip) \
                or clip <= 0:
            raise InvalidParameter(f"dp_l2_clip must be a finite number > 0, found {clip!r}")
        if isinstance(shares, bool) or not isinstance(shares, int) or \
                not 1 <= shares <= self.threshold:
            raise InvalidParameter(
                f"dp_min_shares (distributed_dp.min_noise_shares) must be an integer in [1, "
                f"threshold={self.threshold}], found "
                f"{shares!r}: the noise must be calibrated for no more shares than the fewest "
                "inputs a sum is unmasked with (the masking threshold)")
        if self.max_weight != 1:
            raise InvalidParameter(f"distributed DP rounds have max_weight 1 (the weight "
                                   f"coordinate carries no noise), found {self.max_weight}")
        from secagg.dp.distributed import share_bound, share_mu

        mu = share_mu(fixed_point=self.fixed_point, l2_clip=float(clip), dim=self.vector_length,
                      min_clients=shares, noise_multiplier=float(z), max_weight=self.max_weight)
        need = 2 * share_bound(mu) * self.num_clients
        if self.noise_headroom < need:
            raise InvalidParameter(
                f"noise_headroom {self.noise_headroom} cannot hold {self.num_clients} centred "
                f"Skellam shares (needs >= {need}); let MaskingConfig.create size it")

    @classmethod
    def create(
        cls,
        *,
        num_clients: int,
        vector_length: int,
        clip: float = 1.0,
        value_bits: int = 16,
        mod_bits: int | None = None,
        max_weight: int = 1,
        noise_headroom: int = 0,
        dropout_rate: float = 0.1,
        corrupt_rate: float | None = None,
        failure_probability: float = 2.0**-20,
        security_bits: int | None = None,
        active: bool | None = None,
        roster: Roster | None = None,
        full_graph: bool = False,
        sparse_graph: bool = False,
        neighbours: int | None = None,
        threshold: int | None = None,
        round: int = 0,
        session: bytes | None = None,
        layout: ParamSpec | None = None,
        dp_noise_multiplier: float | None = None,
        dp_l2_clip: float | None = None,
    ) -> MaskingConfig:
        """A validated config; k and t are chosen by :func:`choose_parameters` unless given.

        ``corrupt_rate`` and ``security_bits`` default to the roster's policy (0.05 and 40
        without a roster). ``mod_bits`` defaults to the fewest bits that make overflow impossible for
        ``num_clients`` clients of weight <= ``max_weight`` (plus ``noise_headroom``).

        With a ``roster`` the round is in active (malicious-server) mode: adverts and the
        consistency round are signed with the members' identity keys, the neighbour graph is
        drawn from the roster (no party can steer it) and every survivor check is made per
        neighbourhood. Without one (``active=False``) the round is the honest-but-curious
        protocol: a server that deviates can read an update. Use it only for experiments.

        ``dp_noise_multiplier`` turns on client-level distributed DP (Skellam shares added by
        each client after quantisation; :mod:`secagg.dp.distributed`), calibrated for the
        chosen threshold t of noise shares, with ``dp_l2_clip`` (default ``clip``) the L2 bound
        of each update; ``noise_headroom`` grows by the n centred shares and ``max_weight`` must
        be 1.
        """
        if layout is not None and layout.size != vector_length:
            raise InvalidParameter(f"vector_length {vector_length} does not match the model layout "
                                   f"({layout.size} parameters)")
        if active is None:
            active = roster is not None
        # The roster pins the policy; without one, the library's defaults.
        if corrupt_rate is None:
            corrupt_rate = roster.corrupt_rate if roster is not None else 0.05
        if security_bits is None:
            security_bits = roster.security_bits if roster is not None else 40
        if active and roster is None:
            raise InvalidParameter("active=True needs the federation's pinned roster (roster=)")
        if roster is not None and len(roster) != num_clients:
            raise InvalidParameter(f"the roster has {len(roster)} members but num_clients is "
                                   f"{num_clients}; a round runs over the whole roster")
        fixed_point = FixedPoint(clip=clip, value_bits=value_bits)
        if neighbours is None or threshold is None:
            chosen = choose_parameters(
                num_clients=num_clients, dropout_rate=dropout_rate, corrupt_rate=corrupt_rate,
                failure_probability=failure_probability, security_bits=security_bits,
                active=active, full_graph=full_graph, sparse_graph=sparse_graph,
            )
            neighbours = chosen.neighbours if neighbours is None else neighbours
            threshold = chosen.threshold if threshold is None else threshold
        dp: dict[str, object] = {}
        if dp_noise_multiplier is not None:
            from secagg.dp.distributed import share_bound, share_mu

            l2 = clip if dp_l2_clip is None else dp_l2_clip
            if not 1 <= threshold <= num_clients:
                raise InvalidParameter(f"threshold must be in [1, {num_clients}], found "
                                       f"{threshold}")
            if not (isinstance(l2, int | float) and math.isfinite(l2) and l2 > 0):
                raise InvalidParameter(f"dp_l2_clip must be a finite number > 0, found {l2!r}")
            if not (isinstance(dp_noise_multiplier, int | float)
                    and math.isfinite(dp_noise_multiplier) and dp_noise_multiplier > 0):
                raise InvalidParameter("dp_noise_multiplier must be a finite number > 0, found "
                                       f"{dp_noise_multiplier!r}")
            mu = share_mu(fixed_point=fixed_point, l2_clip=float(l2), dim=vector_length,
                          min_clients=threshold, noise_multiplier=float(dp_noise_multiplier),
                          max_weight=max_weight)
            noise_headroom += 2 * share_bound(mu) * num_clients
            dp = {"dp_noise_multiplier": float(dp_noise_multiplier), "dp_l2_clip": float(l2),
                  "dp_min_shares": threshold}
        elif dp_l2_clip is not None:
            raise InvalidParameter("dp_l2_clip needs dp_noise_multiplier (distributed DP)")
        if mod_bits is None:
            worst = num_clients * max_weight * fixed_point.levels + noise_headroom
            mod_bits = worst.bit_length()
        return cls(
            num_clients=num_clients, vector_length=vector_length, neighbours=neighbours,
            threshold=threshold, fixed_point=fixed_point, mod_bits=mod_bits,
            max_weight=max_weight, noise_headroom=noise_headroom, active=active, round=round,
            session=os.urandom(16) if session is None else session,
            roster_digest=b"" if roster is None else roster.digest(),
            layout_digest=b"" if layout is None else layout.digest(),
            **dp,  # type: ignore[arg-type]
        )

    @property
    def full_graph(self) -> bool:
        return self.neighbours == self.num_clients - 1

    def check_roster(self, roster: Roster | None) -> None:
        """Refuse a config that is not bound to the roster this party pinned."""
        if self.active and roster is None:
            raise InvalidParameter("this round is in active mode: pass the federation's pinned "
                                   "roster")
        if roster is not None and not hmac.compare_digest(roster.digest(), self.roster_digest):
            raise InvalidParameter(
                "the round's config is bound to a different roster than the one pinned here "
                f"(config roster {self.roster_digest.hex()[:16]}..., pinned "
                f"{roster.digest().hex()[:16]}...); check that every enterprise and the server "
                "use the same roster file")
        if roster is not None and len(roster) != self.num_clients:
            raise InvalidParameter(f"the roster has {len(roster)} members, the round "
                                   f"{self.num_clients}")
        if roster is not None and self.active:
            risk = security_failure(num_clients=self.num_clients, neighbours=self.neighbours,
                                    threshold=self.threshold, corrupt_rate=roster.corrupt_rate,
                                    active=True)
            if risk > 2.0**-roster.security_bits:
                raise InvalidParameter(
                    f"the round's graph (neighbours={self.neighbours}, threshold="
                    f"{self.threshold}) is weaker than the roster's policy: with corrupt_rate "
                    f"{roster.corrupt_rate} the coalition succeeds with probability {risk:.2g} "
                    f"> 2^-{roster.security_bits}; refusing (open the round without explicit "
                    "neighbours/threshold to let the parameter finder choose)")

    @property
    def wire_length(self) -> int:
        """Values per masked vector: the update plus one coordinate for the weight."""
        return self.vector_length + 1

    def to_dict(self) -> dict[str, object]:
        return {
            "protocol": PROTOCOL_NAME, "version": self.version,
            "num_clients": self.num_clients, "vector_length": self.vector_length,
            "neighbours": self.neighbours, "threshold": self.threshold,
            "clip": self.fixed_point.clip, "value_bits": self.fixed_point.value_bits,
            "mod_bits": self.mod_bits, "max_weight": self.max_weight,
            "noise_headroom": self.noise_headroom, "active": self.active,
            "round": self.round, "session": self.session.hex(),
            "roster_digest": self.roster_digest.hex(),
            "layout_digest": self.layout_digest.hex(),
            # only when on, so a round without it keeps the digest it always had
            **({"distributed_dp": {
                "mechanism": "skellam", "noise_multiplier": self.dp_noise_multiplier,
                "l2_clip": self.dp_l2_clip, "min_noise_shares": self.dp_min_shares}}
               if self.dp_noise_multiplier else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> MaskingConfig:
        """Inverse of :meth:`to_dict`; every field is required and type-checked by name."""
        protocol = _field(data, "protocol", str)
        if protocol != PROTOCOL_NAME:
            raise InvalidParameter(f"config is for protocol {protocol!r}, expected {PROTOCOL_NAME!r}")
        session_bytes = _hex_field(data, "session")
        dp: dict[str, object] = {}
        if "distributed_dp" in data:
            raw = data["distributed_dp"]
            if not isinstance(raw, dict):
                raise InvalidParameter("config field 'distributed_dp' must be an object")
            if _field(raw, "mechanism", str) != "skellam":
                raise InvalidParameter(f"distributed_dp mechanism {raw['mechanism']!r} is not "
                                       "supported (this version adds Skellam noise)")
            dp = {"dp_noise_multiplier": _field(raw, "noise_multiplier", float),
                  "dp_l2_clip": _field(raw, "l2_clip", float),
                  "dp_min_shares": _field(raw, "min_noise_shares", int)}
        return cls(
            num_clients=_field(data, "num_clients", int),
            vector_length=_field(data, "vector_length", int),
            neighbours=_field(data, "neighbours", int),
            threshold=_field(data, "threshold", int),
            fixed_point=FixedPoint(clip=_field(data, "clip", float),
                                   value_bits=_field(data, "value_bits", int)),
            mod_bits=_field(data, "mod_bits", int),
            max_weight=_field(data, "max_weight", int),
            noise_headroom=_field(data, "noise_headroom", int),
            active=_field(data, "active", bool),
            round=_field(data, "round", int),
            session=session_bytes,
            roster_digest=_hex_field(data, "roster_digest"),
            layout_digest=_hex_field(data, "layout_digest") if "layout_digest" in data else b"",
            version=_field(data, "version", int),
            **dp,  # type: ignore[arg-type]
        )

    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON encoding: the identity of this round's parameters."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).digest()


def _hex_field(data: Mapping[str, object], name: str) -> bytes:
    try:
        return bytes.fromhex(_field(data, name, str))
    except ValueError:
        raise InvalidParameter(f"config field '{name}' must be hex digits") from None


def _field(data: Mapping[str, object], name: str, kind: type[_T]) -> _T:
    """``data[name]`` if it has JSON type ``kind`` (an int is accepted for a float)."""
    if name not in data:
        raise InvalidParameter(f"config is missing field '{name}'")
    value = data[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidParameter(f"config field '{name}' must be {kind.__name__}, "
                               f"found {type(value).__name__}")
    return value
