"""A store written by an earlier version opens: its rounds table gains the ``excluded`` column
(rounds opened before culprits were left out excluded nobody) and its rows still read."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from secagg_server.schema import RoundStatus, open_database
from secagg_server.store import Store

#: the rounds table as versions before the culprit exclusion made it
OLD_ROUNDS = """
CREATE TABLE federations (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    num_clients INTEGER NOT NULL, created REAL NOT NULL, roster TEXT);
CREATE TABLE rounds (
    id INTEGER PRIMARY KEY, federation_id INTEGER NOT NULL REFERENCES federations(id),
    idx INTEGER NOT NULL, mode TEXT NOT NULL, config TEXT NOT NULL, stage_timeout REAL NOT NULL,
    status TEXT NOT NULL, reason TEXT, created REAL NOT NULL, finished REAL, result_meta TEXT,
    UNIQUE (federation_id, idx));
"""


def test_an_older_rounds_table_is_migrated_and_read(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "secagg-server.sqlite3"
    db_path.parent.mkdir(mode=0o700)
    old = sqlite3.connect(db_path)
    old.executescript(OLD_ROUNDS)
    old.execute("INSERT INTO federations VALUES (1, 'city', 4, 0, NULL)")
    old.execute("INSERT INTO rounds (federation_id, idx, mode, config, stage_timeout, status, "
                "reason, created, result_meta) VALUES (1, 0, 'masking', ?, 5, 'failed', 'x', 0, "
                "NULL)", (json.dumps({"num_clients": 4}),))
    old.commit()
    old.close()
    writer, reader = open_database(db_path)
    columns = {r[1] for r in writer.execute("PRAGMA table_info(rounds)").fetchall()}
    writer.close()
    reader.close()
    assert "excluded" in columns
    store = Store(tmp_path / "data")
    try:
        (row,) = store.rounds()
        assert row.status is RoundStatus.FAILED and row.excluded == ()
        assert store.culprits(1) == {}  # an old failure named nobody
        store.finish_round(row.id, status=RoundStatus.FAILED, reason="x",
                           result_meta={"culprit": 2})
        assert store.culprits(1) == {2: 0}
        new = store.create_round(1, 1, "masking", {"num_clients": 4}, 5.0, (2,))
        assert store.round(new.id).excluded == (2,)  # type: ignore[union-attr]
    finally:
        store.close()
