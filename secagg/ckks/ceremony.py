"""The client side of the CKKS key ceremony (a mixin of :class:`secagg.ckks.ClientSession`).

Every client checks the adverts the server accepted against the pinned roster and its own box
key; the dealer seals the round key only to verified peers with usable box keys and signs the
distribution; every recipient checks the dealer's signature and its own box before it opens the
key and uploads. A failed check raises :class:`CheckFailed` naming it.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from secagg.ckks.checks import Check, CheckFailed
from secagg.ckks.keys import CKKSKey, check_box_key, deal_key, open_key, verify_advert
from secagg.ckks.messages import KeyAdvert, KeyDelivery, KeyDistribution, KeyRequest
from secagg.ckks.phases import Phases
from secagg.errors import AlreadyUsed, AuthenticationFailed, InvalidParameter, RejectedMessage
from secagg.hazmat.agreement import X25519KeyPair
from secagg.identity import Identity, Roster

if TYPE_CHECKING:
    from secagg.ckks.config import CKKSRoundConfig
    from secagg.hazmat.seal_codec import SealSession

__all__ = ["ClientStage", "KeyCeremony", "parse_message"]

_M = TypeVar("_M")


class ClientStage(enum.Enum):
    NEW = "new"
    KEYS = "key ceremony"
    AGGREGATE = "waiting for the aggregate"
    DONE = "released"
    FAILED = "refused"


def parse_message(decode: Callable[[bytes], _M], data: bytes, stage: str, what: str) -> _M:
    """Decode a server message, turning a malformed one into the ``message-format`` check."""
    try:
        return decode(data)
    except RejectedMessage as exc:
        raise CheckFailed(stage, Check.MESSAGE_FORMAT, f"the {what} is malformed: {exc.reason}") \
            from None


class KeyCeremony(ABC):
    """Key-ceremony steps of a CKKS client session; the session provides the state below."""

    config: CKKSRoundConfig
    client_id: int
    _phase: Phases
    _identity: Identity
    _roster: Roster
    _digest: bytes
    _session: SealSession
    _box: X25519KeyPair
    _stage: ClientStage
    _key: CKKSKey | None
    _distribution: bytes | None
    _keyed: frozenset[int]
    is_dealer: bool
    excluded: dict[int, str]

    @abstractmethod
    def _upload(self) -> bytes:
        """The signed, sketched upload (the session provides it)."""

    def _on_key_request(self, data: bytes) -> bytes | None:
        """Every client checks the adverts the server accepted (roster signatures, its own key);
        the dealer then seals the key to each verified peer with a usable box key."""
        with self._phase("check adverts"):
            peers = self._check_key_request(data)
        if not self.is_dealer:
            return None  # only the dealer deals; the others wait for their key delivery
        with self._phase("deal"):
            recipients = [a for a in peers if a.client_id != self.config.dealer]
            self._key, dist = deal_key(self.config, self._session, self._identity.signing_key,
                                       recipients)
            self._distribution = dist.to_bytes()
            self._keyed = frozenset({self.client_id, *dist.recipients})
        return self._distribution

    def _check_key_request(self, data: bytes) -> list[KeyAdvert]:
        """The key request's verified adverts of peers with usable box keys (not this client's)."""
        stage = "key request"
        request = parse_message(KeyRequest.from_bytes, data, stage, "key request")
        if request.config_digest != self._digest:
            raise CheckFailed(stage, Check.MESSAGE_FORMAT, "the key request is for another round config")
        if self.is_dealer and self._distribution is not None:
            raise AlreadyUsed("the dealer already dealt this round's key for another key request")
        ids = [a.client_id for a in request.adverts]
        if len(set(ids)) != len(ids):
            raise CheckFailed(stage, Check.MESSAGE_FORMAT, "the key request lists a client twice")
        for needed, whose in ((self.client_id, "this client's own"), (self.config.dealer, "the dealer's")):
            if needed not in ids:
                raise CheckFailed(stage, Check.MESSAGE_FORMAT, f"the key request leaves out {whose} advert")
        peers = []
        for advert in request.adverts:
            who = advert.client_id
            if advert.config_digest != self._digest or who not in self.config.client_ids:
                raise CheckFailed(stage, Check.MESSAGE_FORMAT,
                                  f"the key request carries an advert for client {who} of another round")
            self._verify_advert(advert)
            if who == self.client_id:
                if advert.box_public != self._box.public_bytes:
                    raise CheckFailed(stage, Check.BOX_BINDING,
                                      "the key request carries another box key for this very client")
                continue
            try:
                self._check_box_key(advert.box_public)
            except InvalidParameter:
                # Signed by its own roster identity: that member sent an unusable key. It is left
                # out (the dealer seals it nothing); it must not stop the round for the others.
                self.excluded[who] = "low-order or malformed X25519 box key"
                continue
            peers.append(advert)
        if len(peers) + 1 < self.config.min_clients:
            raise CheckFailed(stage, Check.MIN_CLIENTS,
                              f"{len(peers) + 1} client(s) with verified, usable keys is below "
                              f"min_clients={self.config.min_clients}")
        return peers

    def _verify_advert(self, advert: KeyAdvert) -> None:
        """A relayed advert must be signed by its sender's roster identity (no substituted key)."""
        try:
            verify_advert(self.config, self._roster, advert)
        except AuthenticationFailed:
            raise CheckFailed(
                "key request", Check.ADVERT_SIGNATURE,
                f"the advert relayed for client {advert.client_id} is not signed by its roster "
                "identity: the server substituted or forged its key; refusing to deal",
            ) from None

    def _check_box_key(self, public: bytes) -> None:
        check_box_key(public)

    def _verify_distribution(self, dist: KeyDistribution) -> None:
        """The distribution must be signed by the configured dealer's roster identity."""
        try:
            self._roster.verify(self.config.dealer, dist.signature, dist.signed_part(),
                                what="key distribution")
        except AuthenticationFailed:
            raise CheckFailed(
                "key delivery", Check.DISTRIBUTION_SIGNATURE,
                f"the key distribution is not signed by the dealer's (client {self.config.dealer}) "
                "roster identity",
            ) from None

    def _check_own_box(self, dist: KeyDistribution) -> None:
        box = dist.box_for(self.client_id)
        if box is None:
            raise CheckFailed("key delivery", Check.LEFT_OUT,
                              f"the dealer (client {self.config.dealer}) sealed no key to client "
                              f"{self.client_id}: its advert did not reach the dealer in time or was "
                              "refused; it sits this round out")
        if box.box_public != self._box.public_bytes:
            raise CheckFailed("key delivery", Check.BOX_BINDING,
                              "the dealer's signed distribution seals this client's key to another "
                              "X25519 key than the one it advertised")

    def _on_key_delivery(self, data: bytes) -> bytes:
        with self._phase("open key"):
            self._take_key(data)
        upload = self._upload()
        self._stage = ClientStage.AGGREGATE
        return upload

    def _take_key(self, data: bytes) -> None:
        """Check the key delivery (the dealer's signature, this client's box) and open the key;
        the dealer checks that it carries its own distribution."""
        stage = "key delivery"
        msg = parse_message(KeyDelivery.from_bytes, data, stage, "key delivery")
        dist = msg.distribution
        if msg.config_digest != self._digest or dist.config_digest != self._digest:
            raise CheckFailed(stage, Check.MESSAGE_FORMAT, "the key delivery is for another round config")
        if self.is_dealer:
            if self._distribution is None or dist.to_bytes() != self._distribution:
                raise CheckFailed(stage, Check.MESSAGE_FORMAT,
                                  "the key delivery does not carry this dealer's own key distribution")
        else:
            if dist.dealer != self.config.dealer:
                raise CheckFailed(stage, Check.DISTRIBUTION_SIGNATURE,
                                  f"the key delivery names client {dist.dealer} as dealer; the "
                                  f"config's dealer is client {self.config.dealer}")
            self._verify_distribution(dist)
            recipients = dist.recipients
            allowed = set(self.config.client_ids) - {self.config.dealer}
            if len(set(recipients)) != len(recipients) or not set(recipients) <= allowed:
                raise CheckFailed(stage, Check.MESSAGE_FORMAT,
                                  "the dealer's distribution lists a recipient twice or outside the round")
            self._check_own_box(dist)
            if len(recipients) + 1 < self.config.min_clients:
                raise CheckFailed(stage, Check.MIN_CLIENTS,
                                  f"the dealer keyed {len(recipients) + 1} client(s); min_clients is "
                                  f"{self.config.min_clients}")
            box = dist.box_for(self.client_id)
            assert box is not None  # _check_own_box
            try:
                self._key = open_key(self.config, self._session, self.client_id, self._box, box)
            except AuthenticationFailed:
                raise CheckFailed(
                    stage, Check.KEY_BOX,
                    f"the key box the dealer (client {self.config.dealer}) signed for client "
                    f"{self.client_id} does not open: the dealer is malicious or faulty",
                ) from None
            self._keyed = frozenset({self.config.dealer, *recipients})

