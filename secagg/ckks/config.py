"""The frozen round configuration both sides of a CKKS round hold; its digest rides in every message.

It fixes the parameters, who takes part, who deals the key, the federation's pinned roster (by its
digest) and the bounds that make overflow impossible by construction: ``len(client_ids) *
weight_bound * value_bound`` must fit the preset's ``max_abs_sum``, so no honest sum can wrap
around the modulus. Every client session refuses a config whose ``roster_digest`` is not the
digest of the roster it pinned (:meth:`secagg.identity.Roster.digest`), so a server cannot run a
round over members the enterprises did not agree on.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from secagg.ckks.presets import CKKSParams
from secagg.errors import InvalidParameter

__all__ = ["PROTOCOL", "VERSION", "CKKSRoundConfig"]

PROTOCOL = "secagg-ckks"
VERSION = 2  # 2: roster-bound configs, identity-signed ceremony, upload sketches
_MIN_SESSION_BYTES = 16
_MAX_CLIENT_ID = 2**32 - 1
PACKED_PRESET = "packed"  # the published name of CKKSParams.for_round parameters
DEFAULT_TARGET_ERROR = 1e-6
ROSTER_DIGEST_BYTES = 32


@dataclass(frozen=True, slots=True)
class CKKSRoundConfig:
    """One CKKS aggregation round.

    ``min_clients`` (>= 2) is the fewest contributors an aggregate may have before a client
    agrees to decrypt it: an "aggregate" of one update is that update. ``dealer`` is the client
    that generates the round's secret key; it must be one of ``client_ids``. ``session`` is a
    fresh random identifier (>= 16 bytes) agreed for this federation. ``roster_digest`` is the
    32-byte :meth:`secagg.identity.Roster.digest` of the federation's pinned roster; the ids in
    ``client_ids`` are roster ids.
    """

    params: CKKSParams
    update_size: int
    client_ids: tuple[int, ...]
    dealer: int
    min_clients: int
    round: int
    session: bytes
    roster_digest: bytes
    value_bound: float = 1.0
    weight_bound: float = 1.0
    layout_digest: bytes = b""  # the model layout (ParamSpec digest) the round is for, if named

    def __post_init__(self) -> None:
        if self.layout_digest and len(self.layout_digest) != 32:
            raise InvalidParameter("CKKSRoundConfig.layout_digest must be a 32-byte ParamSpec "
                                   "digest or empty")
        if not isinstance(self.params, CKKSParams):
            raise InvalidParameter("CKKSRoundConfig.params must be a CKKSParams; pass Preset.COMPACT.params")
        if self.update_size < 1:
            raise InvalidParameter(f"CKKSRoundConfig.update_size must be >= 1, found {self.update_size}")
        ids = self.client_ids
        if len(set(ids)) != len(ids) or any(not 0 <= i <= _MAX_CLIENT_ID for i in ids):
            raise InvalidParameter(
                f"CKKSRoundConfig.client_ids must be distinct integers in [0, 2^32), found {list(ids)[:8]}"
            )
        if not isinstance(ids, tuple) or tuple(sorted(ids)) != ids:
            raise InvalidParameter(
                "CKKSRoundConfig.client_ids must be a tuple in increasing order (the digest "
                f"depends on it), found {list(ids)[:8]}; pass tuple(sorted(ids))")
        if self.dealer not in ids:
            raise InvalidParameter(
                f"CKKSRoundConfig.dealer must be one of client_ids, found {self.dealer}; the key "
                "is made by a client, never by the server"
            )
        if not 2 <= self.min_clients <= len(ids):
            raise InvalidParameter(
                f"CKKSRoundConfig.min_clients must be in [2, {len(ids)}], found "
                f"{self.min_clients}; an aggregate of one update reveals that update"
            )
        if not 0 <= self.round < 2**63:
            raise InvalidParameter(f"CKKSRoundConfig.round must be in [0, 2^63), found {self.round}")
        if len(self.session) < _MIN_SESSION_BYTES:
            raise InvalidParameter(
                f"CKKSRoundConfig.session must be >= {_MIN_SESSION_BYTES} random bytes, found "
                f"{len(self.session)}; use secrets.token_bytes(32)"
            )
        if not isinstance(self.roster_digest, bytes) or len(self.roster_digest) != ROSTER_DIGEST_BYTES:
            found = len(self.roster_digest) if isinstance(self.roster_digest, bytes) else \
                type(self.roster_digest).__name__
            raise InvalidParameter(
                f"CKKSRoundConfig.roster_digest must be the {ROSTER_DIGEST_BYTES}-byte digest of "
                f"the federation's pinned roster (Roster.digest()), found {found}"
            )
        for name in ("value_bound", "weight_bound"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidParameter(f"CKKSRoundConfig.{name} must be finite and > 0, found {value}")
        worst = len(ids) * self.weight_bound * max(self.value_bound, 1.0)
        if worst > self.params.max_abs_sum:
            raise InvalidParameter(
                f"CKKSRoundConfig: {len(ids)} clients x weight_bound {self.weight_bound} x "
                f"value_bound {self.value_bound} = {worst:.4g} exceeds the preset's max |sum| "
                f"2^{self.params.headroom_bits}; clip harder, normalise weights, or use "
                "Preset.PRECISE"
            )
        self.params.check_round(len(ids))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> CKKSRoundConfig:
        """Rebuild a config from its published JSON form (what the server stores and sends).

        Keys: ``preset`` (a :class:`Preset` name, or ``"packed"`` for :meth:`CKKSParams.for_round`
        of this round with ``target_error``, default 1e-6), ``vector_length``, ``client_ids``
        (or ``num_clients`` for ids 0..n-1), ``dealer``, ``min_clients``, ``round``, ``session``
        (hex), ``roster_digest`` (hex), ``value_bound``, ``weight_bound``; ``digest`` (hex), when
        present, must match, so both sides provably hold the same round. :meth:`to_dict` writes this form.
        """
        from secagg.ckks.presets import CKKSParams, Preset

        try:
            ids = config.get("client_ids")
            client_ids = tuple(int(i) for i in ids) if ids is not None else \
                tuple(range(int(config["num_clients"])))
            if str(config["preset"]).lower() == PACKED_PRESET:
                params = CKKSParams.for_round(
                    clients=len(client_ids), value_bound=float(config["value_bound"]),
                    weight_bound=float(config["weight_bound"]),
                    target_error=float(config.get("target_error", DEFAULT_TARGET_ERROR)))
            else:
                params = Preset.from_name(str(config["preset"])).params
            cfg = cls(
                params=params,
                update_size=int(config["vector_length"]),
                client_ids=client_ids,
                dealer=int(config["dealer"]),
                min_clients=int(config["min_clients"]),
                round=int(config["round"]),
                session=bytes.fromhex(str(config["session"])),
                roster_digest=bytes.fromhex(str(config["roster_digest"])),
                value_bound=float(config["value_bound"]),
                weight_bound=float(config["weight_bound"]),
                layout_digest=bytes.fromhex(str(config.get("layout_digest", ""))),
            )
        except KeyError as exc:
            raise InvalidParameter(f"ckks round config lacks {exc}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidParameter):
                raise
            raise InvalidParameter(f"ckks round config has a field of the wrong type ({exc})") from None
        if "digest" in config and cfg.digest().hex() != config["digest"]:
            raise InvalidParameter("the ckks round config does not match its digest: the two sides "
                                   "disagree on the round (different secagg versions?)")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The published JSON form (:meth:`from_dict` reads it back), with the ``digest``."""
        from secagg.ckks.presets import CKKSParams, Preset

        preset = next((p.name.lower() for p in Preset if p.params == self.params), None)
        extra: dict[str, Any] = {}
        if preset is None and self.params.packed and self.params.target_error:
            preset, extra = PACKED_PRESET, {"target_error": self.params.target_error}
            if CKKSParams.for_round(clients=len(self.client_ids), value_bound=self.value_bound,
                                    weight_bound=self.weight_bound,
                                    target_error=self.params.target_error) != self.params:
                preset = None
        if preset is None:
            raise InvalidParameter(
                f"CKKSRoundConfig.to_dict: parameters {self.params.name!r} are neither a named preset "
                "nor CKKSParams.for_round of this round; only those have a published form"
            )
        return {
            "protocol": PROTOCOL,
            "preset": preset,
            **extra,
            "vector_length": self.update_size,
            "client_ids": list(self.client_ids),
            "dealer": self.dealer,
            "min_clients": self.min_clients,
            "round": self.round,
            "session": self.session.hex(),
            "roster_digest": self.roster_digest.hex(),
            "value_bound": self.value_bound,
            "weight_bound": self.weight_bound,
            "layout_digest": self.layout_digest.hex(),
            "digest": self.digest().hex(),
        }

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding of every field: equal configs, equal digests."""
        p = self.params
        parts = [
            PROTOCOL.encode(),
            struct.pack(">H", VERSION),
            p.name.encode(),
            struct.pack(">I", p.poly_modulus_degree),
            bytes(p.coeff_modulus_bits),
            struct.pack(">III", p.scale_bits, p.level_primes, p.release_quantum_bits),
            struct.pack(">QI", self.update_size, len(self.client_ids)),
            b"".join(struct.pack(">I", i) for i in self.client_ids),
            struct.pack(">IIQ", self.dealer, self.min_clients, self.round),
            hashlib.sha256(self.session).digest(),
            self.roster_digest,
            struct.pack(">dd", self.value_bound, self.weight_bound),
            self.layout_digest,
        ]
        if p.packed:  # appended only for packed parameters: the older digests stay as they were
            parts.append(p.encoding.encode() + struct.pack(">d", p.target_error))
        return hashlib.sha256(b"".join(struct.pack(">I", len(x)) + x for x in parts)).digest()
