"""Everything a client relies on from a peer is verified against the pinned roster; bad box keys
are refused; a malicious dealer's garbage box is a clear error for its victim only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg.ckks import Check, CheckFailed, ClientSession, MessageRefused, ServerSession
from secagg.ckks.keys import check_box_key, deal_key
from secagg.ckks.messages import KeyAdvert, KeyDelivery, KeyDistribution, KeyRequest
from secagg.ckks.simulate import Federation, federation_for
from secagg.errors import InvalidParameter, RejectedMessage
from secagg.hazmat.agreement import X25519KeyPair
from secagg.identity import Identity
from tests.ckks.conftest import Parts, keyed_round, make_config, updates_for

#: X25519 encodings of low-order points (RFC 7748 section 7 / libsodium's blocklist), for tests only
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


def _session(config, i: int, fed: Federation) -> ClientSession:  # type: ignore[no-untyped-def]
    return ClientSession(config, i, np.zeros(config.update_size), identity=fed.identities[i],
                         roster=fed.roster)


def _refused_by_client(session: ClientSession, data: bytes, check: Check, match: str) -> None:
    with pytest.raises(CheckFailed, match=match) as info:
        session.handle_bytes(data)
    assert info.value.check == check


# ---- roster binding ----------------------------------------------------------------------------


def test_sessions_refuse_a_config_bound_to_another_roster() -> None:
    config = make_config(n=3)
    other = Federation.generate(config.client_ids, name="another-federation")
    with pytest.raises(CheckFailed, match="pinned roster of federation 'another-federation'") as info:
        ClientSession(config, 1, np.zeros(config.update_size), identity=other.identities[1],
                      roster=other.roster)
    assert info.value.check == Check.ROSTER_DIGEST
    with pytest.raises(InvalidParameter, match="bound to another roster"):
        ServerSession(config, roster=other.roster)


def test_sessions_refuse_a_config_naming_clients_outside_the_roster() -> None:
    fed = Federation.generate((1, 2, 3))
    config = dataclasses.replace(make_config(n=3, federation=fed), client_ids=(1, 2, 3, 9))
    with pytest.raises(CheckFailed, match=r"client\(s\) \[9\], not in the pinned roster"):
        _session(config, 1, fed)
    with pytest.raises(InvalidParameter, match=r"client\(s\) \[9\], not in the roster"):
        ServerSession(config, roster=fed.roster)


def test_client_identity_must_be_its_roster_entry() -> None:
    config = make_config(n=3)
    fed = federation_for(config)
    with pytest.raises(InvalidParameter, match="is not client 2's entry in the pinned roster"):
        ClientSession(config, 2, np.zeros(config.update_size), identity=fed.identities[3], roster=fed.roster)


# ---- adverts -----------------------------------------------------------------------------------


def test_server_refuses_an_advert_signed_by_a_non_roster_key() -> None:
    config = make_config(n=3)
    fed = federation_for(config)
    server = ServerSession(config, roster=fed.roster)
    stranger = Identity.generate("stranger")
    unsigned = KeyAdvert(config.digest(), 2, X25519KeyPair.generate().public_bytes, b"")
    forged = dataclasses.replace(unsigned, signature=stranger.signing_key.sign(unsigned.signed_part()))
    with pytest.raises(MessageRefused, match="not signed by the sender's roster identity") as info:
        server.receive(forged.to_bytes())
    assert info.value.check == Check.ADVERT_SIGNATURE and 2 in server.expected


def test_dealer_refuses_a_relayed_advert_not_signed_by_its_roster_identity() -> None:
    """The server swaps client 3's box key (keeping its signature) or re-signs with its own key."""
    config = make_config(n=3)
    fed = federation_for(config)
    sessions = {i: _session(config, i, fed) for i in config.client_ids}
    adverts = [KeyAdvert.from_bytes(s.start()) for s in sessions.values()]
    attacker = X25519KeyPair.generate().public_bytes
    swapped = [dataclasses.replace(a, box_public=attacker) if a.client_id == 3 else a for a in adverts]
    request = KeyRequest(config.digest(), tuple(swapped)).to_bytes()
    _refused_by_client(sessions[1], request, Check.ADVERT_SIGNATURE,
                       "advert relayed for client 3 is not signed by its roster identity")

    sessions = {i: _session(config, i, fed) for i in config.client_ids}
    adverts = [KeyAdvert.from_bytes(s.start()) for s in sessions.values()]
    server_key = Identity.generate("server")
    unsigned = dataclasses.replace(adverts[2], box_public=attacker, signature=b"")
    resigned = dataclasses.replace(unsigned, signature=server_key.signing_key.sign(unsigned.signed_part()))
    request = KeyRequest(config.digest(), (adverts[0], adverts[1], resigned)).to_bytes()
    _refused_by_client(sessions[1], request, Check.ADVERT_SIGNATURE, "client 3")


# ---- key distribution --------------------------------------------------------------------------


def _deal_as(parts: Parts, signer: Identity, adverts: list[KeyAdvert] | None = None) -> KeyDistribution:
    """A distribution over the accepted adverts, signed by ``signer`` (the dealer or not)."""
    peers = adverts or [parts.server._adverts[i] for i in (2, 3)]
    _, dist = deal_key(parts.config, parts.server._seal, signer.signing_key, peers)
    return dist


def test_key_distribution_not_signed_by_the_dealer_is_refused() -> None:
    parts = keyed_round(make_config(n=3))
    not_dealer = parts.federation.identities[2]  # a roster member, but not the dealer
    dist = _deal_as(parts, not_dealer)
    delivery = KeyDelivery(parts.config.digest(), dist).to_bytes()
    _refused_by_client(parts.clients[3], delivery, Check.DISTRIBUTION_SIGNATURE,
                       r"not signed by the dealer's \(client 1\) roster identity")
    # The server refuses it too (a fresh server at the key stage).
    server = ServerSession(parts.config, roster=parts.federation.roster)
    for advert in parts.server._adverts.values():
        server.receive(advert.to_bytes())
    server.advance()
    with pytest.raises(MessageRefused) as info:
        server.receive(dist.to_bytes())
    assert info.value.check == Check.DISTRIBUTION_SIGNATURE


def test_key_distribution_naming_another_dealer_or_another_key_is_refused() -> None:
    parts = keyed_round(make_config(n=3))
    dealer = parts.federation.identities[1]
    # Signed by the real dealer, but the box for client 3 is for another X25519 key.
    other = dataclasses.replace(parts.server._adverts[3], box_public=X25519KeyPair.generate().public_bytes)
    dist = _deal_as(parts, dealer, [parts.server._adverts[2], other])
    delivery = KeyDelivery(parts.config.digest(), dist).to_bytes()
    _refused_by_client(parts.clients[3], delivery, Check.BOX_BINDING, "another X25519 key")
    # A distribution that claims another dealer id.
    renamed = dataclasses.replace(_deal_as(parts, dealer), dealer=2)
    _refused_by_client(parts.clients[2], KeyDelivery(parts.config.digest(), renamed).to_bytes(),
                       Check.DISTRIBUTION_SIGNATURE, "names client 2 as dealer")


def test_a_client_the_dealer_left_out_is_told_so() -> None:
    parts = keyed_round(make_config(n=3))
    dist = _deal_as(parts, parts.federation.identities[1], [parts.server._adverts[2]])
    delivery = KeyDelivery(parts.config.digest(), dist).to_bytes()
    _refused_by_client(parts.clients[3], delivery, Check.LEFT_OUT, "sealed no key to client 3")


def test_a_garbage_box_from_the_dealer_is_a_clear_error_naming_the_dealer() -> None:
    parts = keyed_round(make_config(n=3))
    dist = KeyDistribution.from_bytes(parts.server._distribution.to_bytes())  # type: ignore[union-attr]
    boxes = tuple(dataclasses.replace(b, sealed=bytes(len(b.sealed))) if b.recipient == 3 else b
                  for b in dist.boxes)
    unsigned = dataclasses.replace(dist, boxes=boxes, signature=b"")
    signed = dataclasses.replace(unsigned, signature=parts.federation.identities[1].signing_key.sign(
        unsigned.signed_part()))
    delivery = KeyDelivery(parts.config.digest(), signed).to_bytes()
    _refused_by_client(parts.clients[3], delivery, Check.KEY_BOX,
                       r"the dealer \(client 1\) signed for client 3 does not open: the dealer is malicious")
    assert parts.clients[2].handle_bytes(parts.deliveries[2]) is not None  # the others go on


# ---- box keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", LOW_ORDER)
def test_low_order_keys_are_refused(key: bytes) -> None:
    with pytest.raises(InvalidParameter, match="low-order"):
        check_box_key(key)
    config = make_config(n=3)
    fed = federation_for(config)
    server = ServerSession(config, roster=fed.roster)
    unsigned = KeyAdvert(config.digest(), 3, key, b"")
    signature = fed.identities[3].signing_key.sign(unsigned.signed_part())
    advert = dataclasses.replace(unsigned, signature=signature)
    with pytest.raises(MessageRefused, match="low-order") as info:
        server.receive(advert.to_bytes())  # validly signed by its sender, and still refused
    assert info.value.check == Check.BOX_KEY and 3 in server.expected


def test_malformed_box_keys_are_refused() -> None:
    with pytest.raises(InvalidParameter, match="must be 32 bytes"):
        check_box_key(bytes(31))
    config = make_config(n=3)
    with pytest.raises(RejectedMessage, match="X25519 box key must be 32 bytes"):
        ServerSession(config, roster=federation_for(config).roster).receive(
            KeyAdvert(config.digest(), 2, bytes(31), bytes(64)).to_bytes())


def test_dealer_leaves_out_a_low_order_key_a_server_relays_and_the_round_completes() -> None:
    config = make_config(n=3, min_clients=2)
    fed = federation_for(config)
    updates = updates_for(config, 4)
    sessions = {i: ClientSession(config, i, updates[i], identity=fed.identities[i], roster=fed.roster)
                for i in config.client_ids}
    adverts = [KeyAdvert.from_bytes(s.start()) for s in sessions.values()]
    unsigned = KeyAdvert(config.digest(), 3, bytes(32), b"")
    bad = dataclasses.replace(unsigned, signature=fed.identities[3].signing_key.sign(unsigned.signed_part()))
    request = KeyRequest(config.digest(), (adverts[0], adverts[1], bad)).to_bytes()
    reply = sessions[1].handle_bytes(request)
    assert reply is not None and sessions[1].excluded == {3: "low-order or malformed X25519 box key"}
    assert KeyDistribution.from_bytes(reply).recipients == (2,)


def test_every_client_checks_the_key_request_it_is_shown() -> None:
    config = make_config(n=3, min_clients=2)
    fed = federation_for(config)
    sessions = {i: _session(config, i, fed) for i in config.client_ids}
    adverts = [KeyAdvert.from_bytes(s.start()) for s in sessions.values()]
    unsigned = KeyAdvert(config.digest(), 3, bytes(32), b"")
    low = dataclasses.replace(unsigned, signature=fed.identities[3].signing_key.sign(unsigned.signed_part()))
    request = KeyRequest(config.digest(), (adverts[0], adverts[1], low)).to_bytes()
    assert sessions[2].handle_bytes(request) is None
    assert sessions[2].excluded == {3: "low-order or malformed X25519 box key"}  # noted, not fatal
    swapped = dataclasses.replace(adverts[0], box_public=X25519KeyPair.generate().public_bytes)
    request = KeyRequest(config.digest(), (swapped, adverts[1], adverts[2])).to_bytes()
    _refused_by_client(sessions[3], request, Check.ADVERT_SIGNATURE, "client 1")  # a forged view
