"""Enterprise identities and the pinned roster (secagg.identity)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.identity import Identity, Roster, RosterMember, fingerprint


def test_identity_file_is_owner_only_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "energy.identity"
    ident = Identity.create(path, name="energy_utility")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Identity.load(path)
    assert again.public_key == ident.public_key and again.name == "energy_utility"
    assert "private" not in repr(again).replace("private=redacted", "")
    assert ident.signing_key.sign(b"x") == again.signing_key.sign(b"x")  # Ed25519 is deterministic


def test_identity_is_created_once(tmp_path: Path) -> None:
    path = tmp_path / "a.identity"
    Identity.create(path, name="a")
    with pytest.raises(InvalidParameter, match="already exists"):
        Identity.create(path, name="a")


def test_readable_identity_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "a.identity"
    Identity.create(path, name="a")
    os.chmod(path, 0o644)
    with pytest.raises(InvalidParameter, match="chmod 600"):
        Identity.load(path)


def test_corrupt_or_foreign_identity_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "x.identity"
    path.write_text("{}")
    os.chmod(path, 0o600)
    with pytest.raises(InvalidParameter, match="not a secagg identity file"):
        Identity.load(path)
    good = Identity.create(tmp_path / "g.identity", name="g")
    data = json.loads((tmp_path / "g.identity").read_text())
    data["public_key"] = Identity.generate("h").public_key.hex()
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidParameter, match="does not match"):
        Identity.load(path)
    with pytest.raises(InvalidParameter, match="does not exist"):
        Identity.load(tmp_path / "missing")
    assert good.fingerprint.count(":") == 7


def test_roster_round_trips_and_its_digest_pins_every_entry(tmp_path: Path) -> None:
    ids = [Identity.generate(n) for n in ("energy", "security", "city")]
    roster = Roster.of("smart-city", ids)
    roster.save(tmp_path / "roster.json")
    loaded = Roster.load(tmp_path / "roster.json")
    assert loaded == roster and loaded.digest() == roster.digest()
    swapped = Roster("smart-city", (ids[0].member(0), ids[1].member(1),
                                    Identity.generate("city").member(2)))
    assert swapped.digest() != roster.digest()
    assert Roster("other", roster.members).digest() != roster.digest()


def test_roster_verify_names_the_client() -> None:
    ids = [Identity.generate(n) for n in ("a", "b")]
    roster = Roster.of("f", ids)
    sig = ids[0].signing_key.sign(b"msg")
    roster.verify(0, sig, b"msg", what="advert")
    with pytest.raises(AuthenticationFailed, match="client 1"):
        roster.verify(1, sig, b"msg", what="advert")  # signed by client 0, claimed by 1
    with pytest.raises(AuthenticationFailed, match="not in the pinned roster"):
        roster.verify(7, sig, b"msg", what="advert")


@pytest.mark.parametrize("change, message", [
    ({"format": "other"}, "not a secagg roster"),
    ({"version": 9}, "version"),
    ({"members": "x"}, "must be a list"),
    ({"members": [{"id": 0, "name": "a"}]}, "exactly the fields"),
    ({"members": [{"id": 0, "name": "a", "public_key": "zz"}]}, "64 hex"),
    ({"members": [{"id": -1, "name": "a", "public_key": "00" * 32},
                  {"id": 1, "name": "b", "public_key": "01" * 32}]}, "client_id"),
    ({"members": [{"id": 0, "name": "a", "public_key": "00" * 32},
                  {"id": 0, "name": "b", "public_key": "01" * 32}]}, "unique"),
    ({"members": [{"id": 0, "name": "a", "public_key": "00" * 32},
                  {"id": 1, "name": "b", "public_key": "00" * 32}]}, "share an identity key"),
])
def test_bad_roster_files_are_named(tmp_path: Path, change: dict[str, object], message: str) -> None:
    data = Roster.of("f", [Identity.generate("a"), Identity.generate("b")]).to_dict()
    data.update(change)
    (tmp_path / "r.json").write_text(json.dumps(data))
    with pytest.raises(InvalidParameter, match=message):
        Roster.load(tmp_path / "r.json")


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_fingerprints_differ_for_different_keys(a: bytes, b: bytes) -> None:
    assert (fingerprint(a) == fingerprint(b)) == (a == b)


def test_member_validation() -> None:
    with pytest.raises(InvalidParameter, match="32"):
        RosterMember(client_id=0, name="a", public_key=b"short")
    with pytest.raises(InvalidParameter, match="name"):
        RosterMember(client_id=0, name="bad name!", public_key=bytes(32))
