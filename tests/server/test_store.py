"""The round store's own guarantees: the strings on disk stay what they were (the enums are their
names), a write is all or nothing, and reads never wait for the writer."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
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


# ---- an operator's command beside the running server -------------------------------------------


def _readmit_cli(data: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from secagg_server.cli import main

    code = main(["federation", "readmit", "--data", str(data), "--federation", "t",
                 "--client", "1"])
    out, err = capsys.readouterr()
    return code, out, err


def _named_culprit(tmp_path: Path) -> Path:
    store, rid, _ = _store_with_a_round(tmp_path)
    store.finish_round(rid, status=RoundStatus.FAILED, reason="x", result_meta={"culprit": 1})
    store.close()
    return tmp_path / "data"


def test_a_store_held_by_the_server_is_busy_not_damaged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another connection (the running server's write, a checkpoint) holds the write lock past
    the command's busy timeout: one line saying the store is busy, not 'restore a backup'."""
    import secagg_server.store as store_module

    data = _named_culprit(tmp_path)
    monkeypatch.setattr(store_module, "OPERATOR_BUSY_TIMEOUT", 0.2)  # the test need not wait 30 s
    holder = sqlite3.connect(data / DB_NAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        code, out, err = _readmit_cli(data, capsys)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 2 and not out and err.count("\n") == 1, err
    assert "is busy" in err and "try again" in err and "backup" not in err, err
    # a store that really is not SQLite is still reported as damaged
    (data / DB_NAME).write_bytes(b"not a database at all" * 100)
    code, _, err = _readmit_cli(data, capsys)
    assert code == 2 and "not a readable SQLite database" in err and "busy" not in err, err


def test_the_operators_command_waits_for_the_servers_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The operator's connections wait up to OPERATOR_BUSY_TIMEOUT (30 s, not sqlite3's 5 s):
    a write lock held for 6 s delays the readmission, which then succeeds."""
    import threading
    import time

    from secagg_server.store import OPERATOR_BUSY_TIMEOUT

    assert OPERATOR_BUSY_TIMEOUT >= 30
    data = _named_culprit(tmp_path)
    store = Store(data, busy_timeout=OPERATOR_BUSY_TIMEOUT)
    try:
        for conn in (store._db, store._rdb):
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == OPERATOR_BUSY_TIMEOUT * 1000
    finally:
        store.close()
    holder = sqlite3.connect(data / DB_NAME, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(6.0, lambda: holder.execute("ROLLBACK"))
    release.start()
    t0 = time.monotonic()
    try:
        code, out, err = _readmit_cli(data, capsys)
    finally:
        release.join()
        holder.close()
    assert code == 0 and "client 1 readmitted" in out, err
    assert time.monotonic() - t0 >= 5.5


def test_a_round_folder_removed_while_the_store_opens_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server removes blobs/r<id>/ as a round ends, while an operator's command opens the
    store and tightens the tree: an entry gone between the listing and its stat, chmod or own
    listing is skipped, not a FileNotFoundError."""
    import os
    import shutil

    import secagg_server.datadir as datadir

    store, _, _ = _store_with_a_round(tmp_path)
    store.close()
    blobs = tmp_path / "data" / "blobs"
    for name in ("r6", "r7", "r8", "r9"):  # loose modes, so each entry is stat'ed and chmod'ed
        (blobs / name).mkdir(mode=0o755)
        (blobs / name / "0.bin").write_bytes(b"x")
        os.chmod(blobs / name / "0.bin", 0o644)
        os.chmod(blobs / name, 0o755)
    real_scandir, real_chmod = os.scandir, os.chmod
    gone: list[str] = []

    class Listing:
        """A listing read in full before anything is removed (as os.scandir's may be)."""

        def __init__(self, path: object) -> None:
            with real_scandir(path) as it:  # type: ignore[call-overload]
                self.entries = list(it)

        def __enter__(self) -> list[os.DirEntry[str]]:
            return self.entries

        def __iter__(self) -> Iterator[os.DirEntry[str]]:
            return iter(self.entries)

        def __exit__(self, *exc: object) -> None:
            pass

    def scandir(path: object) -> Listing:
        if Path(str(path)).name == "r8":  # listed by its parent, removed before its own listing
            gone.append("r8")
            shutil.rmtree(str(path))
        listing = Listing(path)
        if Path(str(path)) == blobs:  # r7 removed right after the listing, before its stat
            gone.append("r7")
            shutil.rmtree(blobs / "r7")
        return listing

    def chmod(path: object, mode: int, **kw: object) -> None:
        if Path(str(path)).name == "r9":  # removed between the stat and the chmod
            gone.append("r9")
            shutil.rmtree(str(path))
        real_chmod(path, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(datadir.os, "scandir", scandir)
    monkeypatch.setattr(datadir.os, "chmod", chmod)
    Store(tmp_path / "data").close()
    monkeypatch.undo()
    assert sorted(gone) == ["r7", "r8", "r9"]
    assert sorted(p.name for p in blobs.iterdir()) == ["r6"]
    # what is still there is tightened
    assert (blobs / "r6").stat().st_mode & 0o777 == 0o700
    assert (blobs / "r6" / "0.bin").stat().st_mode & 0o777 == 0o600
