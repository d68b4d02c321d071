"""Client-level entries in the privacy ledger: recorded, recomputed on read, chained with the
DP-SGD entries, tamper-evident; and ledgers written before them still verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from secagg.dp import DistributedNoise, GaussianSteps
from secagg.dp.client_level import client_level_epsilon
from secagg.dp.ledger import LedgerTampered, PrivacyLedger
from secagg.encoding import FixedPoint
from secagg.errors import InvalidParameter

OLD = Path(__file__).parent / "data" / "ledger-v2-before-client-level.jsonl"
DELTA = 1e-5


def _noise(z: float = 1.0) -> DistributedNoise:
    return DistributedNoise(fixed_point=FixedPoint(clip=0.5, value_bits=16), l2_clip=0.5,
                            dim=1000, num_clients=6, min_clients=4, noise_multiplier=z,
                            mod_bits=30)


def _ledger(path: Path) -> PrivacyLedger:
    return PrivacyLedger.open(path, enterprise="energy", budget_epsilon=8.0, delta=DELTA)


def test_a_ledger_written_before_client_level_entries_still_verifies(tmp_path: Path) -> None:
    """The file was written by the code before this feature (commit 23122f8): same format
    string, same chain, same recomputed total; and it can be continued with both kinds."""
    path = tmp_path / "old.jsonl"
    shutil.copy(OLD, path)
    old = PrivacyLedger.load(path)
    old.verify()
    assert len(old.entries) == 2 and old.client_level_entries == ()
    assert old.spent() == pytest.approx(7.037492798921559, rel=1e-12)
    assert "client_level" not in old.to_dict()
    book = _ledger(path)
    entry = book.record_client_level(_noise(), noise_shares=5, server_round_id="fed/3")
    assert entry.round == 3
    again = PrivacyLedger.load(path)
    again.verify()
    assert again.spent() == pytest.approx(old.spent(), rel=1e-12)  # a separate account
    assert again.client_level_spent() == pytest.approx(
        client_level_epsilon(_noise(), rounds=1, delta=DELTA, num_contributors=5), rel=1e-12)


def test_client_level_entries_chain_with_dp_sgd_entries(tmp_path: Path) -> None:
    book = _ledger(tmp_path / "l.jsonl")
    book.record(GaussianSteps(0.25, 1.1, 8), delta=DELTA, epsilon_rdp=1.0, epsilon_prv=0.9,
                server_round_id="fed/1", mode="masking")
    a = book.record_client_level(_noise(), noise_shares=4, server_round_id="fed/1")
    b = book.record_client_level(_noise(2.0), noise_shares=6, server_round_id="fed/2")
    book.record(GaussianSteps(0.25, 1.1, 8), delta=DELTA, epsilon_rdp=1.0, epsilon_prv=0.9,
                server_round_id="fed/2", mode="masking")
    assert [a.round, b.round] == [2, 3] and [e.round for e in book.entries] == [1, 4]
    # idempotent per server round; another mechanism for it is refused
    assert book.record_client_level(_noise(), noise_shares=4, server_round_id="fed/1") == a
    with pytest.raises(InvalidParameter, match="already recorded"):
        book.record_client_level(_noise(), noise_shares=5, server_round_id="fed/1")
    # fewer shares than the noise was calibrated for is never released, so never recorded
    with pytest.raises(InvalidParameter, match="noise_shares"):
        book.record_client_level(_noise(), noise_shares=3, server_round_id="fed/9")
    read = PrivacyLedger.load(book.path)
    read.verify()
    assert read.status.entries == 4
    assert [e.noise_shares for e in read.client_level_entries] == [4, 6]
    assert read.client_level_entries[0].epsilon == pytest.approx(
        client_level_epsilon(_noise(), rounds=1, delta=DELTA, num_contributors=4), rel=1e-12)
    assert read.client_level_entries[1].epsilon < read.client_level_entries[0].epsilon
    assert read.client_level_spent() > read.client_level_entries[0].epsilon
    doc = read.to_dict()
    assert doc["client_level"]["spent"] == read.client_level_spent()
    assert [r["noise_shares"] for r in doc["client_level"]["rounds"]] == [4, 6]


@pytest.mark.parametrize("field,value", [("noise_shares", 6), ("epsilon", 0.01),
                                         ("noise_multiplier", 9.0)])
def test_an_edited_client_level_entry_is_named(tmp_path: Path, field: str, value: float) -> None:
    book = _ledger(tmp_path / "l.jsonl")
    book.record_client_level(_noise(), noise_shares=4, server_round_id="fed/1")
    book.record_client_level(_noise(), noise_shares=5, server_round_id="fed/2")
    lines = book.path.read_text().splitlines()
    rec = json.loads(lines[2])
    assert rec["kind"] == "client-level"
    rec[field] = value
    lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    book.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LedgerTampered, match="entry 1"):
        PrivacyLedger.load(book.path)
    loose = PrivacyLedger.load(book.path, strict=False)
    assert loose.status.first_bad == 1


def test_derived_noise_fields_must_follow_from_the_parameters(tmp_path: Path) -> None:
    """A client-level line whose share_mu does not follow from its noise parameters is refused
    by the reader even before the chain is checked (the epsilon is recomputed, not read)."""
    from secagg.dp.ledger_format import _parse_client_entry

    book = _ledger(tmp_path / "l.jsonl")
    book.record_client_level(_noise(), noise_shares=4)
    rec = json.loads(book.path.read_text().splitlines()[2])
    _parse_client_entry(dict(rec))
    with pytest.raises(ValueError, match="share_mu"):
        _parse_client_entry({**rec, "share_mu": rec["share_mu"] * 4})
    with pytest.raises(ValueError, match="noise_shares"):
        _parse_client_entry({**rec, "noise_shares": 3})
