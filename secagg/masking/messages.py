"""The protocol's messages: frozen records, one type per stage and direction.

Every message carries the config digest and the round, and names its party: ``party`` is the
sender for client -> server messages and the recipient for server -> client messages.
Encoding to bytes is :mod:`secagg.masking.wire`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "AdvertiseKeys",
    "ClientMessage",
    "ConsistencyRequest",
    "ConsistencySignature",
    "KeyDirectory",
    "MaskedInput",
    "Message",
    "ServerMessage",
    "ShareDelivery",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskShares",
]


@dataclass(frozen=True, slots=True)
class _Header:
    digest: bytes
    round: int
    party: int


# ---- client -> server -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdvertiseKeys(_Header):
    """Stage 0: fresh public keys, a commitment to the self-mask seed, optional signature."""

    cipher_public: bytes
    mask_public: bytes
    seed_commitment: bytes
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class ShareKeys(_Header):
    """Stage 1: AEAD-sealed Shamir shares, one per neighbour (keyed by recipient), and for every
    holder (the dealer included) a salted hash commitment to the two shares it holds
    (:func:`secagg.masking.keys.share_commitments`): the holder checks its box against it, and
    the server checks each share revealed at the unmask stage against it, so a holder that
    reveals a wrong share is caught exactly and a dealer whose shares each match what it
    committed to but do not rebuild its committed secret is provably at fault. In active mode
    the dealer signs the message (boxes and commitments) with its roster identity."""

    sealed_shares: dict[int, bytes] = field(default_factory=dict)
    commitments: dict[int, bytes] = field(default_factory=dict)
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class MaskedInput(_Header):
    """Stage 2: the masked, bit-packed vector, and the neighbours whose share boxes failed
    authentication (``excluded``): the client left their pairwise masks out and holds no shares
    of theirs, and the server must treat them as dropouts."""

    payload: bytes
    excluded: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ConsistencySignature(_Header):
    """Stage 3 (active mode): a signature over the survivor set the server announced."""

    signature: bytes


@dataclass(frozen=True, slots=True)
class UnmaskShares(_Header):
    """Stage 4: shares of survivors' self-mask seeds and of dropped clients' mask keys, each
    followed by the salt of its commitment (share || salt); and, for each dropped neighbour the
    client masked with, the derived key of that one pairwise mask (``pair_keys``), which the
    server uses when too few of the dropout's holders can rebuild its mask key."""

    seed_shares: dict[int, bytes] = field(default_factory=dict)
    mask_key_shares: dict[int, bytes] = field(default_factory=dict)
    pair_keys: dict[int, bytes] = field(default_factory=dict)


# ---- server -> client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyDirectory(_Header):
    """After stage 0: the encoded :class:`AdvertiseKeys` a client needs (all of them in passive
    mode; its neighbours' and its own in active mode) and, in active mode, the hash of every
    advert of the round (``advert_hashes``), from which each client computes the transcript it
    binds its consistency signature to."""

    adverts: dict[int, bytes] = field(default_factory=dict)
    advert_hashes: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShareDelivery(_Header):
    """After stage 1: who shared (U2), the sealed shares addressed to the recipient, and each
    dealer's commitment to the recipient's shares (keyed by dealer)."""

    shared: tuple[int, ...]
    sealed_shares: dict[int, bytes] = field(default_factory=dict)
    commitments: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConsistencyRequest(_Header):
    """After stage 2 (active mode): the survivor set U3 to sign."""

    survivors: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UnmaskRequest(_Header):
    """After stage 2 (or 3): the survivor set U3, with the survivors' signatures in active mode."""

    survivors: tuple[int, ...]
    signatures: dict[int, bytes] = field(default_factory=dict)


ClientMessage = AdvertiseKeys | ShareKeys | MaskedInput | ConsistencySignature | UnmaskShares
ServerMessage = KeyDirectory | ShareDelivery | ConsistencyRequest | UnmaskRequest
Message = ClientMessage | ServerMessage
