"""The round store's own guarantees: the strings on disk stay what they were (the enums are their
names), a write is all or nothing, and reads never wait for the writer."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from secagg_server.store import (
    DB_NAME,
    EventKind,
    Role,
    RoundStatus,
    Store,
    event_row,
)


def _store_with_a_round(tmp_path: Path) -> tuple[Store, int, str]:
    store = Store(tmp_path / "data")
    operator, _ = store.create_federation("t", 2)
    fid = store.federation_id("t")
    assert fid is not None
    row = store.create_round(fid, 0, "plain", {"num_clients": 2}, 10.0)
    store.append_rows([event_row(row.id, 0, EventKind.MSG, "upload", 0, b"x" * 10, None),
                       event_row(row.id, 1, EventKind.ADVANCE, "upload", None, None, None)])
    return store, row.id, operator


def test_the_database_holds_the_same_strings_as_before(tmp_path: Path) -> None:
    store, rid, operator = _store_with_a_round(tmp_path)
    store.finish_round(rid, status=RoundStatus.DONE, result_meta={"kind": "plain"}, result=b"r")
    store.close()
    db = sqlite3.connect(tmp_path / "data" / DB_NAME)
    try:
        assert {r for (r,) in db.execute("SELECT role FROM tokens")} == {"client", "operator"}
        assert db.execute("SELECT status FROM rounds").fetchall() == [("done",)]
        assert db.execute("SELECT kind FROM events ORDER BY seq").fetchall() == [("msg",),
                                                                                ("advance",)]
        schema = " ".join(sql for (sql,) in db.execute("SELECT sql FROM sqlite_master WHERE type = 'table'"))
        for check in ("role IN ('client', 'operator')", "status IN ('open', 'done', 'failed')",
                      "kind IN ('msg', 'advance')"):
            assert check in schema, schema
    finally:
        db.close()
    store = Store(tmp_path / "data")  # read back as enums
    try:
        who = store.authenticate(operator)
        assert who is not None and who.role is Role.OPERATOR
        row = store.round(rid)
        assert row is not None and row.status is RoundStatus.DONE and row.status == "done"
        assert [e.kind for e in store.events(rid)] == [EventKind.MSG, EventKind.ADVANCE]
    finally:
        store.close()


def test_a_failed_write_records_nothing_and_the_next_one_works(tmp_path: Path) -> None:
    store, rid, _ = _store_with_a_round(tmp_path)
    try:
        batch = [event_row(rid, 2, EventKind.MSG, "upload", 1, b"y", None),
                 event_row(rid, 1, EventKind.MSG, "upload", 1, b"z", None)]  # seq 1 is taken
        with pytest.raises(sqlite3.IntegrityError):
            store.append_rows(batch)
        assert [e.seq for e in store.events(rid)] == [0, 1]  # seq 2 rolled back with it
        store.append_rows(batch[:1])  # no transaction was left open
        assert [e.seq for e in store.events(rid)] == [0, 1, 2]
        with pytest.raises(sqlite3.IntegrityError):  # a name taken: no second token row either
            store.create_federation("t", 3)
        assert [f["name"] for f in store.federations()] == ["t"]
    finally:
        store.close()


def test_reads_never_wait_for_the_writer(tmp_path: Path) -> None:
    """Every read is on the read-only connection: with the writer's lock held (a long fsync),
    token checks, round rows, replay, the summary and the startup cleanup still answer."""
    store, rid, operator = _store_with_a_round(tmp_path)

    def reads() -> None:
        assert store.authenticate(operator) is not None
        assert store.round(rid) is not None and len(store.rounds(RoundStatus.OPEN)) == 1
        assert len(list(store.events(rid))) == 2 and store.event_body(rid, 0) == b"x" * 10
        assert store.summary()["rounds"][0]["bodies_stored"] == 1
        assert store.next_round_index(1) == 1 and store.roster(1) is None
        store.erase_finished()  # nothing finished holds bodies: it only reads

    try:
        with store._lock, ThreadPoolExecutor(1) as pool:
            pool.submit(reads).result(timeout=10)
    finally:
        store.close()
