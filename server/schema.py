"""What the round store holds: its tables, the typed records read from them, and opening them.

* Roles, round statuses and event kinds are enums (:class:`Role`, :class:`RoundStatus`,
  :class:`EventKind`) whose values are the strings stored in the database; the tables' ``CHECK``
  constraints list the same strings, so a row no enum can read is refused when it is written.
* A round's events are rows with a per-round sequence number (:func:`event_row`); a large body is
  named by its file (``blob_file``) instead of being stored inline.
* Tokens are stored as their SHA-256 (:func:`hash_token`): they are random (256 bits), so a plain
  hash is a sound verifier.
* A culprit the operator takes back (``secagg-server federation readmit``) is a row of
  ``readmissions``: the client, the ids of the failed rounds whose naming of it the readmission
  lifts (``forgiven``, JSON), the index of the federation's next round then (the first that
  includes it again), the operator's reason and the time. The rounds keep their culprit
  and their ``excluded`` list: the history is never rewritten.
* :func:`open_database` opens the writer connection (WAL, ``synchronous=FULL``,
  ``secure_delete``), creates the tables, migrates a store made by an earlier version (a missing
  column is added; a missing table, such as ``readmissions``, is created), and opens the
  read-only connection every read uses.

The queries live in :mod:`secagg_server.store`, which re-exports the names here.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = ["DB_NAME", "Event", "EventKind", "Principal", "Readmission", "Role", "RoundRow",
           "RoundStatus", "event_row", "hash_token", "open_database", "round_row"]

DB_NAME = "secagg-server.sqlite3"


class Role(StrEnum):
    """Who a token belongs to."""

    CLIENT = "client"  # one enterprise of the federation (its enrolment id)
    OPERATOR = "operator"  # opens the federation's rounds and reads their status


class RoundStatus(StrEnum):
    OPEN = "open"
    DONE = "done"  # the aggregate was released
    FAILED = "failed"  # the reason is stored with the round


class EventKind(StrEnum):
    """What a round's event records."""

    MSG = "msg"  # an accepted client message
    ADVANCE = "advance"  # a stage close


def _one_of(values: type[StrEnum]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS federations (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, num_clients INTEGER NOT NULL,
    created REAL NOT NULL, roster TEXT);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash BLOB PRIMARY KEY, federation_id INTEGER NOT NULL REFERENCES federations(id),
    role TEXT NOT NULL CHECK (role IN ({_one_of(Role)})), client_id INTEGER);
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY, federation_id INTEGER NOT NULL REFERENCES federations(id),
    idx INTEGER NOT NULL, mode TEXT NOT NULL, config TEXT NOT NULL, stage_timeout REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({_one_of(RoundStatus)})), reason TEXT,
    created REAL NOT NULL, finished REAL, result_meta TEXT, excluded TEXT,
    UNIQUE (federation_id, idx));
CREATE TABLE IF NOT EXISTS events (
    round_id INTEGER NOT NULL REFERENCES rounds(id), seq INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ({_one_of(EventKind)})), client_id INTEGER, stage TEXT NOT NULL,
    size INTEGER NOT NULL, body BLOB, blob_file TEXT, at REAL NOT NULL,
    PRIMARY KEY (round_id, seq));
CREATE TABLE IF NOT EXISTS readmissions (
    id INTEGER PRIMARY KEY, federation_id INTEGER NOT NULL REFERENCES federations(id),
    client_id INTEGER NOT NULL, forgiven TEXT NOT NULL, next_idx INTEGER NOT NULL, reason TEXT,
    created REAL NOT NULL);
"""

#: the columns a :class:`RoundRow` is read from, in :func:`round_row`'s order
ROUND_COLUMNS = ("id, federation_id, idx, mode, config, stage_timeout, status, reason, result_meta, "
                 "excluded")


@dataclass(frozen=True)
class Principal:
    """Who a bearer token belongs to."""

    federation_id: int
    federation: str
    num_clients: int
    role: Role
    client_id: int | None


@dataclass(frozen=True)
class RoundRow:
    id: int
    federation_id: int
    index: int
    mode: str
    config: dict[str, Any]
    stage_timeout: float
    status: RoundStatus
    reason: str | None
    result_meta: dict[str, Any] | None
    #: clients left out of this round when it opened (culprits of earlier rounds)
    excluded: tuple[int, ...] = ()


@dataclass(frozen=True)
class Readmission:
    """A culprit taken back into its federation's later rounds by the operator."""

    id: int
    federation_id: int
    client_id: int
    #: indices of the failed rounds that named it and whose exclusion this lifts
    rounds: tuple[int, ...]
    reason: str | None
    created: float
    #: the index the federation's next round gets (the first that includes it again)
    next_round: int


@dataclass(frozen=True)
class Event:
    seq: int
    kind: EventKind
    client_id: int | None
    stage: str
    body: bytes | None


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def open_database(db_path: Path, *, busy_timeout: float = 5.0
                  ) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """``(writer, reader)`` on the store's database, the tables created or migrated. Both may be
    used from any thread; the caller serialises each with its own lock. A statement that finds
    the database locked by another connection (another process's write) waits up to
    ``busy_timeout`` seconds before raising ``sqlite3.OperationalError`` (database is locked)."""
    db = sqlite3.connect(db_path, timeout=busy_timeout, isolation_level=None,
                         check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "secure_delete=ON",
                   "foreign_keys=ON"):
        db.execute(f"PRAGMA {pragma}")
    db.executescript(_SCHEMA)
    columns = {r[1] for r in db.execute("PRAGMA table_info(federations)").fetchall()}
    if "roster" not in columns:  # a store made before rosters: its federations have none
        db.execute("ALTER TABLE federations ADD COLUMN roster TEXT")
    columns = {r[1] for r in db.execute("PRAGMA table_info(rounds)").fetchall()}
    if "excluded" not in columns:  # a store made before culprits were left out: none were
        db.execute("ALTER TABLE rounds ADD COLUMN excluded TEXT")
    reader = sqlite3.connect(db_path, timeout=busy_timeout, isolation_level=None,
                             check_same_thread=False)
    reader.execute("PRAGMA query_only=ON")
    return db, reader


def event_row(round_id: int, seq: int, kind: EventKind, stage: str, client_id: int | None,
              body: bytes | None, blob_file: str | None) -> tuple[Any, ...]:
    """The ``events`` row of one event; a body written with
    :meth:`secagg_server.store.Store.write_blob` is named by
    ``blob_file`` and not stored inline."""
    size = 0 if body is None else len(body)
    inline = body if blob_file is None else None
    return (round_id, seq, kind, client_id, stage, size, inline, blob_file, time.time())


def round_row(row: tuple[Any, ...]) -> RoundRow:
    """The :class:`RoundRow` of a ``rounds`` row read as :data:`ROUND_COLUMNS`."""
    return RoundRow(id=int(row[0]), federation_id=int(row[1]), index=int(row[2]), mode=str(row[3]),
                    config=json.loads(row[4]), stage_timeout=float(row[5]),
                    status=RoundStatus(row[6]),
                    reason=row[7], result_meta=None if row[8] is None else json.loads(row[8]),
                    excluded=() if row[9] is None else tuple(int(c) for c in json.loads(row[9])))
