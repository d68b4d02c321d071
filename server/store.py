"""The durable round store: SQLite (WAL, synchronous=FULL) plus fsynced blob files.

Why this shape:

* Every accepted client message and every stage close is an *event* with a per-round sequence
  number, committed before the server acknowledges it. The masking state machine is
  deterministic, so replaying a round's events in order into a fresh session rebuilds it exactly:
  that is the whole crash-recovery story (no session pickling, no partial snapshots).
* Multi-megabyte bodies (masked vectors) go to their own files, written and fsynced before the
  SQLite row that names them commits. Putting them in the WAL would write every byte twice
  (WAL, then checkpoint) and made a 10 x 1M-parameter round measurably slower. The files are
  written by :meth:`Store.write_blob`, which callers may run for several bodies at once.
* Rows are appended in batches (:meth:`Store.append_rows`): one transaction, one WAL fsync for
  however many events were ready (the coordinator's group commit), instead of one per message.
* Every write is one transaction on one connection under one lock (:meth:`Store._write`);
  every read (token checks on every request, round rows, replay, the summary) uses a second,
  read-only connection, so it never waits behind a writer's fsync (WAL readers see the last
  committed state).
* The tables, the records read from them (roles, statuses and event kinds as enums whose
  values are the stored strings) and opening the database are :mod:`secagg_server.schema`'s.
* When a round ends, every stored message body is removed (:meth:`Store.finish_round` with
  ``erase``, or :meth:`Store.erase_bodies`): files deleted, rows nulled with ``secure_delete``
  on, the WAL checkpointed and truncated; this happens before the aggregate is released. What
  remains is metadata (who sent what kind of message, how big, when) and the released
  aggregate: nothing from which one client's update could be read.
* Tokens are random (256 bits), so a plain SHA-256 is a sound verifier; the hash is looked up by
  index and then compared with :func:`hmac.compare_digest` anyway.
* The store is its owner's alone: the data directory and every folder in it are 0700, the SQLite
  files (the database, its ``-wal`` and ``-shm``) and every stored file 0600. They are created
  with those modes (SQLite gives the WAL and shared-memory files the database file's mode), and
  existing ones are tightened on open. A data directory that someone else owns, or that its
  group or the world may write to, is refused (:class:`DataDirError`): whoever can write there
  can swap the round store (:mod:`secagg_server.datadir`).
"""

from __future__ import annotations

import hmac
import json
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .datadir import (
    DataDirError,
    prepare_data_dir,
    private_dir,
    private_file,
    tighten_tree,
    write_durably,
)
from .schema import (
    DB_NAME,
    ROUND_COLUMNS,
    Event,
    EventKind,
    Principal,
    Readmission,
    Role,
    RoundRow,
    RoundStatus,
    event_row,
    hash_token,
    open_database,
    round_row,
)

__all__ = ["DB_NAME", "INLINE_LIMIT", "OPERATOR_BUSY_TIMEOUT", "DataDirError", "Event",
           "EventKind", "NotLeftOut", "Principal", "Readmission", "Role", "RoundRow",
           "RoundStatus", "StaleRound", "Store", "event_row", "hash_token"]

INLINE_LIMIT = 64 * 1024  # bodies above this go to their own fsynced file
#: seconds an operator's command (``federation readmit``, ``create``, ``inspect``) waits for the
#: running server's write lock before it says the store is busy
OPERATOR_BUSY_TIMEOUT = 30.0
TOKEN_PREFIX = "sat_"  # noqa: S105 (a prefix, not a secret)


class NotLeftOut(ValueError):
    """A readmission of a client that no failed round left out (or one already readmitted)."""

    def __init__(self, client_id: int, named_in: list[int]) -> None:
        self.client_id, self.named_in = client_id, named_in
        if named_in:
            why = (f"client {client_id} is not left out: it was readmitted after round(s) "
                   f"{named_in} named it, and no round has named it since")
        else:
            why = f"client {client_id} is not left out: no failed round named it as the culprit"
        super().__init__(why)


class StaleRound(Exception):
    """A round was built from a federation state that changed before it could be stored: its
    next index, or the clients left out of it (a readmission, or a failed round naming a
    culprit, committed in between). Nothing was stored; build the round again."""

    def __init__(self, federation_id: int, index: int, next_index: int,
                 left_out: frozenset[int] | None, now_left_out: frozenset[int] | None) -> None:
        self.federation_id, self.index, self.next_index = federation_id, index, next_index
        self.left_out, self.now_left_out = left_out, now_left_out
        changes = []
        if index != next_index:
            changes.append(f"its next round index is now {next_index}, not {index}")
        if left_out != now_left_out:
            changes.append(f"the clients left out are now {sorted(now_left_out or ())}, not "
                           f"{sorted(left_out or ())}")
        super().__init__(f"federation {federation_id} changed while its round was being built: "
                         + "; ".join(changes))


class Store:
    """All durable state of one server, under ``data_dir``. Thread-safe: a writer connection and a
    read-only connection, each with its own lock.

    ``data_dir`` is created 0700 if missing; an existing one must belong to this user and not be
    writable by its group or the world (else :class:`DataDirError`), and is tightened to 0700,
    its SQLite files and stored files to 0600.

    ``busy_timeout``: how long a statement waits for another process's write lock (the server's
    or an operator command's) before ``sqlite3.OperationalError`` (database is locked); the
    operator's commands wait longer than the server (:data:`OPERATOR_BUSY_TIMEOUT`)."""

    def __init__(self, data_dir: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.root = Path(data_dir)
        self.blobs = self.root / "blobs"
        self.results = self.root / "results"
        prepare_data_dir(self.root)
        for d in (self.blobs, self.results):
            private_dir(d)
        db_path = self.root / DB_NAME
        private_file(db_path, create=True)  # before SQLite: it would create it 0644
        self._lock, self._rlock = threading.Lock(), threading.Lock()
        self._db, self._rdb = open_database(db_path, busy_timeout=busy_timeout)
        # -wal and -shm exist now; SQLite made them with the database's mode, but ones left by an
        # earlier version (or another umask) are tightened too, as is every stored file
        for suffix in ("-wal", "-shm", "-journal"):
            private_file(self.root / (DB_NAME + suffix))
        for d in (self.blobs, self.results):
            tighten_tree(d)

    def close(self) -> None:
        with self._rlock:
            self._rdb.close()
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection: committed (one fsync) when the block
        ends, rolled back if it raises. Every write of the store goes through it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                    self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, *params: Any) -> list[Any]:
        """A read of committed state on the read connection (never waits for a writer)."""
        with self._rlock:
            return self._rdb.execute(sql, params).fetchall()

    # ---- federations and tokens ----------------------------------------------------------------

    def create_federation(self, name: str, num_clients: int,
                          roster: dict[str, Any] | None = None) -> tuple[str, list[str]]:
        """Create a federation; returns (operator token, [client token per client id]).

        ``roster`` is the federation's public roster (``secagg.identity.Roster.to_dict()``, ids
        ``0..num_clients-1``), kept verbatim: masking rounds are bound to it. Only public keys."""
        if roster is not None and len(roster.get("members", ())) != num_clients:
            raise ValueError(f"the roster has {len(roster.get('members', ()))} members, the "
                             f"federation {num_clients} clients")
        operator = TOKEN_PREFIX + secrets.token_urlsafe(32)
        clients = [TOKEN_PREFIX + secrets.token_urlsafe(32) for _ in range(num_clients)]
        with self._write() as db:
            fid = db.execute("INSERT INTO federations (name, num_clients, created, roster) VALUES "
                             "(?, ?, ?, ?)", (name, num_clients, time.time(),
                                              None if roster is None else json.dumps(roster))
                             ).lastrowid
            db.execute("INSERT INTO tokens VALUES (?, ?, ?, NULL)",
                       (hash_token(operator), fid, Role.OPERATOR))
            db.executemany("INSERT INTO tokens VALUES (?, ?, ?, ?)",
                           [(hash_token(t), fid, Role.CLIENT, i) for i, t in enumerate(clients)])
        return operator, clients

    def federations(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT name, num_clients, created FROM federations ORDER BY id")
        return [{"name": n, "clients": k, "created": c} for n, k, c in rows]

    def roster(self, federation_id: int) -> dict[str, Any] | None:
        """The federation's stored public roster (as given to :meth:`create_federation`)."""
        rows = self._read("SELECT roster FROM federations WHERE id = ?", federation_id)
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    def federation_id(self, name: str) -> int | None:
        rows = self._read("SELECT id FROM federations WHERE name = ?", name)
        return int(rows[0][0]) if rows else None

    def authenticate(self, token: str) -> Principal | None:
        """The principal of ``token``, or None. Never logs or stores the token itself."""
        digest = hash_token(token)
        rows = self._read(
            "SELECT t.token_hash, t.federation_id, f.name, f.num_clients, t.role, t.client_id "
            "FROM tokens t JOIN federations f ON f.id = t.federation_id WHERE t.token_hash = ?",
            digest)
        row = rows[0] if rows else None
        if row is None or not hmac.compare_digest(bytes(row[0]), digest):
            return None
        return Principal(federation_id=int(row[1]), federation=str(row[2]),
                         num_clients=int(row[3]), role=Role(row[4]),
                         client_id=None if row[5] is None else int(row[5]))

    # ---- rounds ---------------------------------------------------------------------------------

    def create_round(self, federation_id: int, index: int, mode: str, config: dict[str, Any],
                     stage_timeout: float, excluded: tuple[int, ...] = (), *,
                     left_out: Collection[int] | None = None) -> RoundRow:
        """Store a new open round of the federation at ``index``, leaving out ``excluded``.

        In the same write transaction as the insert, the federation's next index is read again
        and, if ``left_out`` is given (the culprits the caller built the round for, see
        :meth:`culprits`), so is its left-out set: a readmission or a failed round naming a
        culprit committed since the caller read them raises :class:`StaleRound` and stores
        nothing (the caller builds the round again from what is stored now)."""
        with self._write() as db:
            (next_idx,) = db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM rounds WHERE "
                                     "federation_id = ?", (federation_id,)).fetchone()
            now_left_out = None if left_out is None else \
                frozenset(self._culprits(db, federation_id))
            if int(next_idx) != index or (left_out is not None
                                          and now_left_out != frozenset(left_out)):
                raise StaleRound(federation_id, index, int(next_idx),
                                 None if left_out is None else frozenset(left_out), now_left_out)
            rid = db.execute("INSERT INTO rounds (federation_id, idx, mode, config, stage_timeout, "
                             "status, created, excluded) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (federation_id, index, mode, json.dumps(config), stage_timeout,
                              RoundStatus.OPEN, time.time(), json.dumps(list(excluded)))).lastrowid
        assert rid is not None
        return RoundRow(rid, federation_id, index, mode, config, stage_timeout, RoundStatus.OPEN,
                        None, None, excluded)

    def culprits(self, federation_id: int) -> dict[int, int]:
        """Clients left out of the federation's next rounds: those named as the culprit of a
        failed round that no later readmission lifted (:meth:`readmit`). Client id -> the index
        of the first round that named it since it was last readmitted."""
        with self._rlock:
            return self._culprits(self._rdb, federation_id)

    @staticmethod
    def _culprits(db: sqlite3.Connection, federation_id: int) -> dict[int, int]:
        namings = Store._namings(db, federation_id)
        forgiven = Store._forgiven(db, federation_id)
        found: dict[int, int] = {}
        for round_id, idx, culprit in namings:
            if (culprit, round_id) not in forgiven:
                found.setdefault(culprit, idx)
        return found

    @staticmethod
    def _namings(db: sqlite3.Connection, federation_id: int) -> list[tuple[int, int, int]]:
        """(round id, round index, culprit) of every failed round that named one, oldest first."""
        rows = db.execute("SELECT id, idx, result_meta FROM rounds WHERE federation_id = ? AND "
                          "status = ? AND result_meta IS NOT NULL ORDER BY idx",
                          (federation_id, RoundStatus.FAILED)).fetchall()
        out = []
        for round_id, idx, meta in rows:
            culprit = json.loads(meta).get("culprit")
            if isinstance(culprit, int):
                out.append((int(round_id), int(idx), culprit))
        return out

    @staticmethod
    def _forgiven(db: sqlite3.Connection, federation_id: int) -> set[tuple[int, int]]:
        """(client, round id) pairs whose naming a readmission lifted."""
        rows = db.execute("SELECT client_id, forgiven FROM readmissions WHERE federation_id = ?",
                          (federation_id,)).fetchall()
        return {(int(c), int(r)) for c, forgiven in rows for r in json.loads(forgiven)}

    def readmit(self, federation_id: int, client_id: int,
                reason: str | None = None) -> Readmission:
        """Take a left-out culprit back: every round the federation opens from now on includes it.

        The readmission lifts exactly the namings recorded so far (in one write transaction
        with the check), so a round that names it again later leaves it out again. The failed
        rounds keep their culprit and later rounds their ``excluded`` list. Raises
        :class:`NotLeftOut` if no unlifted naming of ``client_id`` exists (never named, or
        already readmitted)."""
        with self._write() as db:
            namings = [(rid, idx) for rid, idx, c in self._namings(db, federation_id)
                       if c == client_id]
            forgiven = self._forgiven(db, federation_id)
            lifted = [(rid, idx) for rid, idx in namings if (client_id, rid) not in forgiven]
            if not lifted:
                raise NotLeftOut(client_id, [idx for _, idx in namings])
            (next_idx,) = db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM rounds WHERE "
                                     "federation_id = ?", (federation_id,)).fetchone()
            created = time.time()
            rid = db.execute("INSERT INTO readmissions (federation_id, client_id, forgiven, "
                             "next_idx, reason, created) VALUES (?, ?, ?, ?, ?, ?)",
                             (federation_id, client_id, json.dumps([r for r, _ in lifted]),
                              int(next_idx), reason, created)).lastrowid
        assert rid is not None
        return Readmission(int(rid), federation_id, client_id, tuple(i for _, i in lifted),
                           reason, created, int(next_idx))

    def readmissions(self, federation_id: int) -> list[Readmission]:
        """Every readmission of the federation, oldest first (the rounds as indices)."""
        index = {int(r): int(i) for r, i in self._read(
            "SELECT id, idx FROM rounds WHERE federation_id = ?", federation_id)}
        rows = self._read("SELECT id, client_id, forgiven, reason, created, next_idx FROM "
                          "readmissions WHERE federation_id = ? ORDER BY id", federation_id)
        return [Readmission(int(i), federation_id, int(c),
                            tuple(sorted(index[int(r)] for r in json.loads(f))), reason,
                            float(created), int(nxt))
                for i, c, f, reason, created, nxt in rows]

    def next_round_index(self, federation_id: int) -> int:
        rows = self._read("SELECT COALESCE(MAX(idx) + 1, 0) FROM rounds WHERE federation_id = ?",
                          federation_id)
        return int(rows[0][0])

    def round(self, round_id: int) -> RoundRow | None:
        rows = self._read(f"SELECT {ROUND_COLUMNS} FROM rounds WHERE id = ?", round_id)  # noqa: S608
        return round_row(rows[0]) if rows else None

    def rounds(self, status: RoundStatus | None = None) -> list[RoundRow]:
        sql = f"SELECT {ROUND_COLUMNS} FROM rounds"  # noqa: S608 (a constant column list)
        rows = self._read(sql + " WHERE status = ? ORDER BY id", status) if status \
            else self._read(sql + " ORDER BY id")
        return [round_row(r) for r in rows]

    def finish_round(self, round_id: int, *, status: RoundStatus, reason: str | None = None,
                     result_meta: dict[str, Any] | None = None, result: bytes | None = None,
                     erase: bool = False) -> None:
        """Record the end of a round; the result file is durable before the status flips.

        ``erase``: also forget its message bodies (:meth:`erase_bodies`), the rows in the same
        transaction as the status (one fsync), the files and the WAL right after."""
        if result is not None:
            self.write_result(round_id, result)
        with self._write() as db:
            db.execute("UPDATE rounds SET status = ?, reason = ?, result_meta = ?, finished = ? "
                       "WHERE id = ?", (status, reason, None if result_meta is None
                                        else json.dumps(result_meta), time.time(), round_id))
            if erase:
                db.execute("UPDATE events SET body = NULL, blob_file = NULL WHERE round_id = ?",
                           (round_id,))
        if erase:
            self._erase_files(round_id)

    def write_result(self, round_id: int, result: bytes) -> None:
        """The released aggregate's file, durable (the round's status flips afterwards)."""
        write_durably(self.results / f"round-{round_id}.bin", result)

    def result(self, round_id: int) -> bytes:
        return (self.results / f"round-{round_id}.bin").read_bytes()

    # ---- events ---------------------------------------------------------------------------------

    def write_blob(self, round_id: int, seq: int, body: bytes) -> str:
        """Write a large body to its own file and fsync it (and its folder); returns the name to
        record in the event's row. Safe to run for several bodies at once, in any order; the name
        is unique, so a write left over from a failed batch never lands on a later event's file."""
        blob_file = f"r{round_id}/{seq}-{secrets.token_hex(4)}.bin"
        write_durably(self.blobs / blob_file, body)
        return blob_file

    def append_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Commit event rows (from :func:`event_row`) in one transaction: one fsync for all.
        Returns only once they are on disk; on an error none of them is recorded."""
        if not rows:
            return
        with self._write() as db:
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def event_body(self, round_id: int, seq: int) -> bytes | None:
        """The stored body of one event (None once erased, or for a stage close)."""
        rows = self._read("SELECT body, blob_file FROM events WHERE round_id = ? AND seq = ?",
                          round_id, seq)
        if not rows:
            return None
        body, blob_file = rows[0]
        if blob_file is not None:
            try:
                return (self.blobs / str(blob_file)).read_bytes()
            except FileNotFoundError:  # erased since the row was read
                return None
        return None if body is None else bytes(body)

    def events(self, round_id: int) -> Iterator[Event]:
        rows = self._read("SELECT seq, kind, client_id, stage, body, blob_file FROM events "
                          "WHERE round_id = ? ORDER BY seq", round_id)
        for seq, kind, client, stage, body, blob_file in rows:
            if blob_file is not None:
                body = (self.blobs / blob_file).read_bytes()
            yield Event(int(seq), EventKind(kind), client, str(stage),
                        None if body is None else bytes(body))

    def erase_bodies(self, round_id: int) -> None:
        """Forget every message body of a finished round (metadata and result stay)."""
        with self._write() as db:
            db.execute("UPDATE events SET body = NULL, blob_file = NULL WHERE round_id = ?",
                       (round_id,))
        self._erase_files(round_id)

    def _erase_files(self, round_id: int) -> None:
        """The blob files of a round whose rows no longer name them, and the WAL (which may still
        hold small bodies: the checkpoint copies the nulled pages back and truncates it)."""
        shutil.rmtree(self.blobs / f"r{round_id}", ignore_errors=True)
        with self._lock:  # not a transaction: a checkpoint runs outside one
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def summary(self) -> dict[str, Any]:
        """What is stored, per round: message counts and sizes by stage, bodies still held,
        result size. Metadata only; used by ``secagg-server inspect`` and audits."""
        rounds = []
        for row in self.rounds():
            stages = [{"stage": str(stage), "messages": int(n), "bytes": int(size or 0)}
                      for stage, n, size in self._read(
                          "SELECT stage, COUNT(*), SUM(size) FROM events WHERE round_id = ? AND "
                          "kind = ? GROUP BY stage ORDER BY MIN(seq)", row.id, EventKind.MSG)]
            senders = {int(c): int(b or 0) for c, b in self._read(
                "SELECT client_id, SUM(size) FROM events WHERE round_id = ? AND kind = ? "
                "GROUP BY client_id", row.id, EventKind.MSG)}
            held = self._read("SELECT COUNT(*) FROM events WHERE round_id = ? AND (body IS NOT "
                              "NULL OR blob_file IS NOT NULL)", row.id)[0][0]
            result = self.results / f"round-{row.id}.bin"
            rounds.append({"round_id": row.id, "index": row.index, "mode": row.mode,
                           "status": row.status, "stages": stages, "bytes_by_client": senders,
                           "bodies_stored": int(held),
                           "result_bytes": result.stat().st_size if result.exists() else 0})
        return {"rounds": rounds}

    def erase_finished(self) -> None:
        """Startup cleanup: a crash between finishing a round and erasing it leaves bodies."""
        for (round_id,) in self._read("SELECT DISTINCT e.round_id FROM events e JOIN rounds r ON "
                                      "r.id = e.round_id WHERE r.status != ? AND (e.body IS NOT "
                                      "NULL OR e.blob_file IS NOT NULL)", RoundStatus.OPEN):
            self.erase_bodies(int(round_id))
        open_ids = {r.id for r in self.rounds(RoundStatus.OPEN)}
        for d in self.blobs.iterdir():
            if not (d.name.startswith("r") and d.name[1:].isdigit() and int(d.name[1:]) in open_ids):
                shutil.rmtree(d, ignore_errors=True)

