"""The enterprise side of enrolment, in process: public entries, the roster, the runtime's checks
before a round (bound to the pinned roster, this identity is the token's roster entry) and the
exit status rule of ``secagg-client``. The real-process versions are in tests/server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secagg.errors import InvalidParameter, ProtocolAbort
from secagg.identity import Identity, Roster
from secagg_clients.cli import _exit_code
from secagg_clients.enrolment import (
    assemble_roster,
    create_identity,
    load_public_entry,
    public_entry_path,
)
from secagg_clients.runtime import RoundRefused, RuntimeClient, check_enrolment, check_round_roster


def _roster(n: int = 3, name: str = "city") -> tuple[list[Identity], Roster]:
    ids = [Identity.generate(f"e{i}") for i in range(n)]
    return ids, Roster.of(name, ids)


def test_public_entries_make_the_roster_in_argument_order(tmp_path: Path) -> None:
    paths = []
    for name in ("b", "a"):
        ident = create_identity(tmp_path / f"{name}.json", name=name)
        pub = public_entry_path(tmp_path / f"{name}.json")
        assert pub.name == f"{name}.json.pub.json"
        assert load_public_entry(pub) == (name, ident.public_key)
        paths.append(pub)
    roster = assemble_roster("city", paths)
    assert [(m.client_id, m.name) for m in roster.members] == [(0, "b"), (1, "a")]
    # an existing public entry is never overwritten by a new identity
    with pytest.raises(InvalidParameter, match="already exists"):
        create_identity(tmp_path / "b.json", name="b")
    assert not (tmp_path / "c.json").exists()
    (tmp_path / "c.json.pub.json").write_text("{}")
    with pytest.raises(InvalidParameter, match="already exists"):
        create_identity(tmp_path / "c.json", name="c")
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize(("content", "why"), [
    ("not json", "not readable JSON"),
    (json.dumps({"name": "x"}), "exactly the string fields"),
    (json.dumps({"name": "x", "public_key": "zz"}), "64 hex digits"),
    (json.dumps({"name": "x", "public_key": "ab" * 31}), "64 hex digits"),
    (json.dumps({"name": "x", "public_key": "ab" * 32, "private_key": "cd"}), "private identity"),
])
def test_bad_public_entries_are_named(tmp_path: Path, content: str, why: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(InvalidParameter, match=why) as err:
        load_public_entry(path)
    assert str(path) in str(err.value)


def test_a_round_bound_to_another_roster_is_refused_naming_both_digests() -> None:
    _, pinned = _roster()
    _, other = _roster()
    check_round_roster(pinned.digest(), pinned)
    with pytest.raises(ProtocolAbort) as err:
        check_round_roster(other.digest(), pinned)
    reason = err.value.reason
    assert other.digest().hex()[:16] in reason and pinned.digest().hex()[:16] in reason
    assert "\n" not in reason
    with pytest.raises(ProtocolAbort, match="passive"):
        check_round_roster(b"", pinned, active=False)


def test_the_identity_must_be_the_tokens_roster_entry() -> None:
    ids, roster = _roster()
    check_enrolment(1, ids[1], roster)
    with pytest.raises(ProtocolAbort, match="gives client 1 to e1.*this identity is e0"):
        check_enrolment(1, ids[0], roster)
    with pytest.raises(ProtocolAbort, match="does not list"):
        check_enrolment(7, ids[0], roster)


def test_runtime_needs_an_identity_and_a_roster() -> None:
    ids, roster = _roster()
    with pytest.raises(TypeError):
        RuntimeClient("http://127.0.0.1:1", "t")  # type: ignore[call-arg]
    with pytest.raises(InvalidParameter, match="identity must be"):
        RuntimeClient("http://127.0.0.1:1", "t", identity="id.json", roster=roster)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameter, match="roster must be"):
        RuntimeClient("http://127.0.0.1:1", "t", identity=ids[0], roster="r.json")  # type: ignore[arg-type]
    RuntimeClient("http://127.0.0.1:1", "t", identity=ids[0], roster=roster).close()


def test_refused_is_a_dropped_round_with_its_reason() -> None:
    exc = RoundRefused(4, "the server announced different survivor sets")
    assert exc.round_index == 4 and "round 4 refused" in str(exc) and exc.reason in str(exc)


def test_exit_status_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(completed=1, refused=[]) == 0
    assert _exit_code(completed=0, refused=[]) == 0  # only dropped
    assert _exit_code(completed=2, refused=["round 1: x"]) == 0  # several rounds, others done
    assert _exit_code(completed=0, refused=["round 0: bad advert"]) == 3
    assert "bad advert" in capsys.readouterr().err
