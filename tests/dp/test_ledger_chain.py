"""The hash-chained privacy ledger: every kind of tampering is named, signatures bind the head,
totals are recomputed from the mechanisms (never read from the file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.dp import GaussianSteps, epsilon_of_history
from secagg.dp.ledger import LedgerTampered, PrivacyLedger, _canonical, _hash, _head_message
from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.identity import Identity, Roster

DELTA = 1e-5
STEPS = [GaussianSteps(0.1, 1.2, 40), GaussianSteps(0.1, 1.5, 40), GaussianSteps(0.2, 2.0, 30)]


def _write(path: Path, steps: list[GaussianSteps] = STEPS, *, budget: float = 50.0,
           identity: Identity | None = None) -> PrivacyLedger:
    ledger = PrivacyLedger.open(path, enterprise="energy_utility", budget_epsilon=budget,
                                delta=DELTA, identity=identity)
    for i, s in enumerate(steps):
        ledger.record(s, delta=DELTA, epsilon_rdp=1.0, epsilon_prv=1.0, server_round_id=f"f/{i}",
                      mode="masking", clip_norm=1.0, layout_digest=b"\x07" * 32)
    return ledger


def _lines(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(x) for x in path.read_text().splitlines()]


def _save(path: Path, records: list[dict]) -> None:  # type: ignore[type-arg]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _rechain(records: list[dict], key: Identity | None = None) -> list[dict]:  # type: ignore[type-arg]
    """What a forger without the enterprise's key can do: recompute every prev and head hash
    (and sign with a key of its own, or not at all)."""
    last, count, out = _hash(records[0]), 0, [records[0]]
    for r in records[1:]:
        r = dict(r)
        if r["kind"] == "entry":
            count += 1
            r["round"], r["prev"] = count, last
            last = _hash(r)
        else:
            r.update(count=count, hash=last, public_key=None, signature=None)
            if key is not None:
                r["public_key"] = key.public_key.hex()
                r["signature"] = key.signing_key.sign(_head_message(count, last)).hex()
        out.append(r)
    return out


def test_intact_ledger_records_every_field_and_reloads(tmp_path: Path) -> None:
    ledger = _write(tmp_path / "l")
    back = PrivacyLedger.load(tmp_path / "l")
    assert back.status.intact and back.status.entries == 3 and back.status.signer is None
    e = back.entries[1]
    assert (e.round, e.server_round_id, e.mode and e.mode.value, e.clip_norm) == (2, "f/1",
                                                                                 "masking", 1.0)
    assert e.accountant_version.startswith("opacus ") and e.layout_digest == "07" * 32
    assert e.timestamp.endswith("Z") and e.prev == back.entries[0].hash
    assert back.spent() == pytest.approx(epsilon_of_history(STEPS, delta=DELTA))
    assert back.entries[-1].total_epsilon == pytest.approx(ledger.spent())
    # idempotent per server round: the same mechanism again appends nothing
    size = (tmp_path / "l").stat().st_size
    again = back.record(STEPS[2], delta=DELTA, epsilon_rdp=1.0, epsilon_prv=1.0,
                        server_round_id="f/2", mode="masking", clip_norm=1.0,
                        layout_digest=b"\x07" * 32)
    assert again.round == 3 and (tmp_path / "l").stat().st_size == size
    with pytest.raises(InvalidParameter, match="already charged"):
        back.record(GaussianSteps(0.1, 3.0, 5), delta=DELTA, epsilon_rdp=1.0, epsilon_prv=1.0,
                    server_round_id="f/2")
    assert len(PrivacyLedger.load(tmp_path / "l").entries) == 3


@pytest.mark.parametrize(("tamper", "entry", "words"), [
    ("edit", 2, "does not match the head"),
    ("edit_total", 2, "does not match the head"),
    ("reorder", 2, "holds round 3"),
    ("drop_middle", 2, "holds round 3"),
    ("truncate", 3, "no head after it"),
    ("torn", 3, "incomplete"),
    ("rechain_one", 3, "prev hash"),
])
def test_tampering_is_caught_naming_the_first_bad_entry(tmp_path: Path, tamper: str, entry: int,
                                                        words: str) -> None:
    path = tmp_path / "l"
    _write(path)
    recs = _lines(path)  # header, head0, (entry, head) x 3
    if tamper == "edit":
        recs[4]["noise_multiplier"] = 9.0
    elif tamper == "edit_total":
        recs[4]["total_epsilon"] = 0.1
    elif tamper == "reorder":
        recs[4:6], recs[6:8] = recs[6:8], recs[4:6]
    elif tamper == "drop_middle":
        del recs[4:6]
    elif tamper == "truncate":
        del recs[-1]
    elif tamper == "rechain_one":  # entry 2 edited and its own head fixed; entry 3 still points back
        recs[4]["steps"] = 1
        recs[5]["hash"] = _hash(recs[4])
    _save(path, recs)
    if tamper == "torn":
        path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(LedgerTampered, match=words) as caught:
        PrivacyLedger.load(path)
    assert caught.value.entry == entry
    # an auditor still sees what is there, with the break named
    seen = PrivacyLedger.load(path, strict=False)
    assert not seen.status.intact and seen.status.first_bad == entry
    # and the client refuses to spend from it
    with pytest.raises(LedgerTampered):
        PrivacyLedger.open(path, enterprise="energy_utility", budget_epsilon=50.0, delta=DELTA)


def test_edited_header_and_cut_back_ledgers(tmp_path: Path) -> None:
    path = tmp_path / "l"
    _write(path)
    recs = _lines(path)
    recs[0]["budget_epsilon"] = 500.0
    _save(path, recs)
    with pytest.raises(LedgerTampered, match="header") as caught:
        PrivacyLedger.load(path)
    assert caught.value.entry is None
    # cutting back to an earlier head leaves a valid shorter ledger: only an anchor catches it
    _write(tmp_path / "m")
    head = PrivacyLedger.load(tmp_path / "m").to_dict()["chain"]["head"]
    _save(tmp_path / "m", _lines(tmp_path / "m")[:-2])
    cut = PrivacyLedger.load(tmp_path / "m")
    assert cut.status.intact and len(cut.entries) == 2
    cut.verify(anchor=cut.entries[0].hash)  # an earlier anchor is still there
    with pytest.raises(LedgerTampered, match="cut back past it"):
        cut.verify(anchor=head)


def test_signed_ledger_verifies_against_the_roster_and_forgeries_fail(tmp_path: Path) -> None:
    me, other = Identity.generate("energy_utility"), Identity.generate("city_operations")
    roster = Roster.of("fed", [me, other])
    path = tmp_path / "l"
    _write(path, identity=me)
    ledger = PrivacyLedger.load(path)
    ledger.verify(public_key=me.public_key)
    ledger.verify(roster=roster)
    with pytest.raises(AuthenticationFailed):
        ledger.verify(public_key=other.public_key)
    # reopening to spend needs the same identity (the next heads are signed too)
    with pytest.raises(InvalidParameter, match="signed by identity"):
        PrivacyLedger.open(path, enterprise="energy_utility", budget_epsilon=50.0, delta=DELTA)
    # positive control: an edit with every hash recomputed is a valid chain, but not signed by me
    signed, recs = _lines(path), _lines(path)
    recs[4]["noise_multiplier"] = 9.0
    for key, err in ((None, "unsigned"), (other, "another identity")):
        _save(path, _rechain(recs, key))
        forged = PrivacyLedger.load(path)
        assert forged.status.intact  # the chain alone cannot tell
        with pytest.raises(AuthenticationFailed, match=err):
            forged.verify(roster=roster)
    # keeping my old signatures on the recomputed heads breaks at the edited entry
    rechained = _rechain(recs)
    for mine, new in zip(signed, rechained, strict=True):
        if new.get("kind") == "head":
            new["public_key"], new["signature"] = mine["public_key"], mine["signature"]
    _save(path, rechained)
    with pytest.raises(LedgerTampered, match="signature") as caught:
        PrivacyLedger.load(path)
    assert caught.value.entry == 2


def test_old_format_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    old = {"format": "secagg-privacy-ledger/1", "enterprise": "e", "budget_epsilon": 8.0,
           "delta": 1e-5, "accountant": "rdp", "rounds": []}
    (tmp_path / "old.json").write_text(json.dumps(old, indent=2) + "\n")
    with pytest.raises(InvalidParameter, match=r"secagg-privacy-ledger/1.*refuses"):
        PrivacyLedger.load(tmp_path / "old.json")
    with pytest.raises(InvalidParameter, match="still count"):
        PrivacyLedger.open(tmp_path / "old.json", enterprise="e", budget_epsilon=8.0, delta=1e-5)


mechanisms = st.lists(st.tuples(st.sampled_from([0.01, 0.05, 0.2, 1.0]),
                                st.floats(0.6, 6.0), st.integers(0, 60)), min_size=1, max_size=3)
garbage = st.floats(0.0, 1e3, allow_nan=False)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mechanisms, st.lists(garbage, min_size=4, max_size=4))
def test_totals_are_recomputed_whatever_the_file_says(tmp_path_factory: pytest.TempPathFactory,
                                                      mech: list[tuple[float, float, int]],
                                                      written: list[float]) -> None:
    path = tmp_path_factory.mktemp("prop") / "l"
    steps = [GaussianSteps(q, s, t) for q, s, t in mech]
    _write(path, steps, budget=1e6)
    truth = epsilon_of_history(steps, delta=DELTA)
    recs = _lines(path)
    entries = [r for r in recs if r.get("kind") == "entry"]
    for r, w in zip(entries, written, strict=False):
        r["total_epsilon"], r["epsilon_rdp"], r["epsilon_prv"] = w, w, w
    for records, intact in ((recs, False), (_rechain(recs), True)):
        _save(path, records)
        seen = PrivacyLedger.load(path, strict=False)
        assert seen.status.intact is intact
        assert seen.spent() == pytest.approx(truth, rel=1e-9, abs=1e-12)
        assert seen.to_dict()["spent"] == pytest.approx(truth, rel=1e-9, abs=1e-12)
        for n, e in enumerate(seen.entries, start=1):
            assert e.total_epsilon == pytest.approx(epsilon_of_history(steps[:n], delta=DELTA))


def test_canonical_encoding_is_what_is_hashed() -> None:
    assert _canonical({"b": 1, "a": [1.5, None]}) == b'{"a":[1.5,null],"b":1}'
    assert _hash({"a": 1}) != _hash({"a": 2})
