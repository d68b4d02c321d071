"""Readmitting a culprit: ``secagg-server federation readmit``.

A client named as the culprit of a failed round is left out of every round its federation opens
afterwards (``tests/server/test_malicious_enterprise.py``). The operator takes it back with
``federation readmit``: it is stored (table ``readmissions``), every round opened afterwards
includes the client, the failed round still names it and the rounds that left it out still
record so; named culprit again, it is left out again.

* Through the real server process: an inconsistent dealer (``tests/server/malicious.py``) is
  named by round 0 and left out of round 1; readmitted while the server runs, it is told of
  round 2 and may read it, deals inconsistently again, is named by round 2 and left out of
  round 3.
* On the store and the command line: the errors (unknown federation, unknown client, a client
  not left out, a second readmission, a --data that is no store), durability, a round already
  open keeping its exclusion, and a store made before readmissions existed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from secagg_server.cli import main as server_main
from secagg_server.operator import OperatorError, readmit
from secagg_server.schema import RoundStatus
from secagg_server.store import NotLeftOut, Store
from tests.server.conftest import tolerance
from tests.server.test_malicious_enterprise import EVIL, HONEST, Run

# ---- through the real server -------------------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path)
    try:
        yield r
    finally:
        r.close()


def _fail_then_exclude(run: Run) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Honest processes for two rounds, the inconsistent dealer for one: the first round fails
    naming it, the second leaves it out. (status of the first, info and status of the second)"""
    run.honest(2)
    run.evil("inconsistent-dealer", 1)
    first = run.open_round(stage_timeout=20.0)
    status1 = run.wait_done(first["round_id"], timeout=120.0)
    second = run.open_round(stage_timeout=20.0)
    status2 = run.wait_done(second["round_id"], timeout=120.0)
    for i in HONEST:
        code, out = run.output(i)
        assert code == 0, out
    run.output(EVIL)
    return status1, second, status2


@pytest.mark.slow
def test_a_readmitted_culprit_takes_part_again_and_is_left_out_when_named_again(
        run: Run) -> None:
    status1, second, status2 = _fail_then_exclude(run)
    assert status1["status"] == "failed" and status1["culprit"] == EVIL, status1
    assert status2["status"] == "done" and status2["excluded_culprits"] == [EVIL], status2
    url, evil = run.fed.server.url, {"Authorization": f"Bearer {run.fed.tokens[EVIL]}"}
    resp = httpx.get(f"{url}/v1/rounds/{second['round_id']}", headers=evil)
    assert resp.status_code == 403 and resp.json()["error"] == "left_out", resp.text

    # the operator readmits it while the server runs
    done = readmit(run.fed.server.data_dir, "city", EVIL, reason="v1.2 deals consistent shares")
    assert done["culprit_of_rounds"] == [status1["index"]] and done["next_round"] == 2, done
    assert done["reason"] == "v1.2 deals consistent shares"

    third = run.open_round(stage_timeout=20.0)
    assert "excluded_culprits" not in third, third
    assert not any("left out" in n for n in third.get("notes", [])), third
    # it is told of the round and may read it (no more 403 left_out)
    resp = httpx.get(f"{url}/v1/rounds/next", params={"after": 1, "wait": 5}, headers=evil)
    assert resp.status_code == 200 and resp.json()["round_id"] == third["round_id"], resp.text
    resp = httpx.get(f"{url}/v1/rounds/{third['round_id']}", headers=evil)
    assert resp.status_code == 200, resp.text
    # the history is kept: the failed round names it, the round that left it out still does
    assert run.fed.status(status1["round_id"])["culprit"] == EVIL
    assert run.fed.status(second["round_id"])["excluded_culprits"] == [EVIL]
    resp = httpx.get(f"{url}/v1/rounds/{second['round_id']}", headers=evil)
    assert resp.status_code == 403 and resp.json()["error"] == "left_out", resp.text

    # it deals inconsistently again: named by this round, left out of the next
    run.honest(2)
    run.evil("inconsistent-dealer", 1)
    status3 = run.wait_done(third["round_id"], timeout=120.0)
    assert status3["status"] == "failed" and status3["culprit"] == EVIL, status3
    fourth = run.open_round(stage_timeout=20.0)
    assert fourth["excluded_culprits"] == [EVIL], fourth
    assert any(f"client {EVIL} is left out: named as the culprit of round {third['index']}" in n
               for n in fourth["notes"]), fourth
    status4 = run.wait_done(fourth["round_id"], timeout=120.0)
    assert status4["status"] == "done" and status4["result"]["survivors"] == list(HONEST)
    want = np.sum(np.stack([run.ups[i] for i in HONEST]).astype(np.float64), axis=0)
    assert np.max(np.abs(run.released_sum(fourth) - want)) <= tolerance(len(HONEST))
    for i in HONEST:
        code, out = run.output(i)
        assert code == 0, out
    # and readmitted once more, it is in the next round again
    again = readmit(run.fed.server.data_dir, "city", EVIL)
    assert again["culprit_of_rounds"] == [third["index"]] and again["reason"] is None, again
    fifth = run.open_round(stage_timeout=20.0)
    assert "excluded_culprits" not in fifth, fifth


# ---- the store and the command line ------------------------------------------------------------


def _store_with_culprit(data: Path, culprit: int = 2) -> Store:
    """Federation 'city' of 4 (id 1): round 0 failed naming ``culprit``, round 1 left it out."""
    store = Store(data)
    store.create_federation("city", 4)
    r0 = store.create_round(1, 0, "masking", {"num_clients": 4}, 5.0)
    store.finish_round(r0.id, status=RoundStatus.FAILED, reason="bad shares",
                       result_meta={"culprit": culprit})
    r1 = store.create_round(1, 1, "masking", {"num_clients": 4}, 5.0, (culprit,))
    store.finish_round(r1.id, status=RoundStatus.DONE, result_meta={})
    return store


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = server_main(["federation", "readmit", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_readmission_is_stored_durably_and_keeps_the_history(tmp_path: Path) -> None:
    store = _store_with_culprit(tmp_path / "data")
    try:
        assert store.culprits(1) == {2: 0}
        done = store.readmit(1, 2, "fixed")
        assert done.rounds == (0,) and done.next_round == 2 and done.reason == "fixed"
        assert store.culprits(1) == {}
        # a round already open when it was readmitted keeps leaving it out
        assert store.rounds()[1].excluded == (2,)
        with pytest.raises(NotLeftOut, match="readmitted after round"):
            store.readmit(1, 2)
        with pytest.raises(NotLeftOut, match="no failed round named it"):
            store.readmit(1, 1)
    finally:
        store.close()
    store = Store(tmp_path / "data")  # reopened: the readmission is on disk
    try:
        assert store.culprits(1) == {}
        (r,) = store.readmissions(1)
        assert (r.client_id, r.rounds, r.reason, r.next_round) == (2, (0,), "fixed", 2)
        rounds = store.rounds()
        assert rounds[0].result_meta == {"culprit": 2} and rounds[1].excluded == (2,)
        # named again by a later round: left out again, from that round's index
        r2 = store.create_round(1, 2, "masking", {"num_clients": 4}, 5.0)
        store.finish_round(r2.id, status=RoundStatus.FAILED, reason="x",
                           result_meta={"culprit": 2})
        assert store.culprits(1) == {2: 2}
        assert store.readmit(1, 2).rounds == (2,)
        assert store.culprits(1) == {}
        # another federation's culprits and readmissions are its own
        store.create_federation("port", 3)
        r3 = store.create_round(2, 0, "masking", {"num_clients": 3}, 5.0)
        store.finish_round(r3.id, status=RoundStatus.FAILED, reason="x",
                           result_meta={"culprit": 2})
        assert store.culprits(2) == {2: 0} and store.culprits(1) == {}
    finally:
        store.close()


def test_the_command_readmits_and_prints_what_it_did(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store_with_culprit(tmp_path / "data").close()
    code, out, err = _cli(capsys, "--data", str(tmp_path / "data"), "--federation", "city",
                          "--client", "2", "--reason", "v1.2")
    assert code == 0 and not err, err
    assert "client 2 readmitted to federation 'city'" in out and "index 2" in out, out
    store = Store(tmp_path / "data")
    try:
        assert store.culprits(1) == {} and store.readmissions(1)[0].reason == "v1.2"
    finally:
        store.close()


@pytest.mark.parametrize(("args", "needles"), [
    (("--federation", "nowhere", "--client", "2"),
     ("--federation 'nowhere': no such federation", "found: 'city'")),
    (("--federation", "city", "--client", "4"),
     ("--client 4: federation 'city' has no such client", "0..3")),
    (("--federation", "city", "--client", "1"),
     ("--client 1", "client 1 is not left out", "no failed round named it",
      "clients left out of federation 'city': [2]")),
])
def test_refusals_are_one_line_naming_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
        needles: tuple[str, ...]) -> None:
    _store_with_culprit(tmp_path / "data").close()
    code, out, err = _cli(capsys, "--data", str(tmp_path / "data"), *args)
    assert code == 2 and not out and err.count("\n") == 1, err
    assert err.startswith("secagg-server: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    store = Store(tmp_path / "data")
    try:
        assert store.culprits(1) == {2: 0} and store.readmissions(1) == []  # nothing recorded
    finally:
        store.close()


def test_a_second_readmission_and_a_missing_store_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store_with_culprit(tmp_path / "data").close()
    common = ("--federation", "city", "--client", "2")
    assert _cli(capsys, "--data", str(tmp_path / "data"), *common)[0] == 0
    code, _, err = _cli(capsys, "--data", str(tmp_path / "data"), *common)
    assert code == 2 and "readmitted after round(s) [0] named it" in err, err
    assert "clients left out of federation 'city': none" in err, err
    code, _, err = _cli(capsys, "--data", str(tmp_path / "nothing"), *common)
    assert code == 2 and "is not a server data directory" in err, err
    assert not (tmp_path / "nothing").exists()  # no store is created to readmit into
    with pytest.raises(SystemExit) as exit_:
        _cli(capsys, "--data", str(tmp_path / "data"), "--federation", "city", "--client", "-1")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --client" in err and "found -1" in err, err


def test_the_python_helper_raises_the_commands_refusal(tmp_path: Path) -> None:
    _store_with_culprit(tmp_path / "data").close()
    with pytest.raises(OperatorError, match="client 3 is not left out"):
        readmit(tmp_path / "data", "city", 3)
    assert readmit(tmp_path / "data", "city", 2, reason="ok")["culprit_of_rounds"] == [0]


#: a store as versions before readmissions made it (rounds with ``excluded``, no readmissions)
OLD_STORE = """
CREATE TABLE federations (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    num_clients INTEGER NOT NULL, created REAL NOT NULL, roster TEXT);
CREATE TABLE rounds (
    id INTEGER PRIMARY KEY, federation_id INTEGER NOT NULL REFERENCES federations(id),
    idx INTEGER NOT NULL, mode TEXT NOT NULL, config TEXT NOT NULL, stage_timeout REAL NOT NULL,
    status TEXT NOT NULL, reason TEXT, created REAL NOT NULL, finished REAL, result_meta TEXT,
    excluded TEXT, UNIQUE (federation_id, idx));
"""


def test_a_store_made_before_readmissions_opens_and_readmits(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path = tmp_path / "data" / "secagg-server.sqlite3"
    db_path.parent.mkdir(mode=0o700)
    old = sqlite3.connect(db_path)
    old.executescript(OLD_STORE)
    old.execute("INSERT INTO federations VALUES (1, 'city', 4, 0, NULL)")
    old.execute("INSERT INTO rounds (federation_id, idx, mode, config, stage_timeout, status, "
                "reason, created, result_meta, excluded) VALUES (1, 0, 'masking', ?, 5, "
                "'failed', 'x', 0, ?, '[]')", (json.dumps({"num_clients": 4}),
                                              json.dumps({"culprit": 3})))
    old.commit()
    old.close()
    code, out, err = _cli(capsys, "--data", str(tmp_path / "data"), "--federation", "city",
                          "--client", "3")
    assert code == 0 and "round(s) [0]" in out, err
    store = Store(tmp_path / "data")
    try:
        assert store.culprits(1) == {} and store.rounds()[0].result_meta == {"culprit": 3}
    finally:
        store.close()


# ---- a readmission racing the opening of a round -----------------------------------------------


def _open_with_hook(data: Path, hook: Any, *, attempts: int | None = None) -> tuple[Any, ...]:
    """Open a plain round of 'city' (client 2 left out) on a coordinator whose store runs
    ``hook(store)`` on each call of ``create_round``, after the coordinator read the culprits
    and the next index, before its insert; (the first round's row and participants, or the
    Rejected it raised; the next round's row)."""
    import asyncio

    from secagg_server.coordinator import Coordinator
    from secagg_server.modes import Rejected, default_modes

    store = _store_with_culprit(data)
    real = store.create_round

    def create_round(*args: Any, **kwargs: Any) -> Any:
        hook(store)
        return real(*args, **kwargs)

    async def main() -> tuple[Any, ...]:
        coord = Coordinator(store, default_modes(allow_plain=True))
        if attempts is not None:
            coord.open_attempts = attempts
        await coord.start()
        try:
            store.create_round = create_round  # type: ignore[method-assign]
            try:
                live = await coord.open_round(1, 4, "plain", {"vector_length": 4}, 5.0)
                first: Any = (live.row, sorted(live.participants), live.notes)
            except Rejected as exc:
                first = exc
            store.create_round = real  # type: ignore[method-assign]
            nxt = await coord.open_round(1, 4, "plain", {"vector_length": 4}, 5.0)
            return first, nxt.row
        finally:
            await coord.stop()

    try:
        return asyncio.run(main())
    finally:
        store.close()


def test_a_readmission_committed_while_a_round_opens_is_in_that_round(tmp_path: Path) -> None:
    """The readmission commits after the coordinator read the culprits and before it stored the
    round: the round is built again, and the index the readmission announced includes it."""
    done: list[Any] = []

    def readmit_once(store: Store) -> None:
        if not done:  # a separate connection, as the operator's command is
            other = Store(tmp_path / "data")
            try:
                done.append(other.readmit(1, 2, "fixed"))
            finally:
                other.close()

    (row, participants, notes), nxt = _open_with_hook(tmp_path / "data", readmit_once)
    assert done and done[0].next_round == 2
    assert row.index == done[0].next_round and row.excluded == () and participants == [0, 1, 2, 3]
    assert not any("left out" in n for n in notes), notes
    stored = Store(tmp_path / "data")
    try:
        assert stored.round(row.id) == row  # what is stored is what was opened
    finally:
        stored.close()
    assert nxt.index == 3 and nxt.excluded == ()


def test_a_culprit_named_while_a_round_opens_is_left_out_of_it(tmp_path: Path) -> None:
    """The other direction: a failed round naming client 1 commits in the same gap."""
    def name_once(store: Store) -> None:
        if store.culprits(1) == {2: 0}:
            other = Store(tmp_path / "data")
            try:
                r = other.create_round(1, 2, "plain", {"num_clients": 4}, 5.0, (2,))
                other.finish_round(r.id, status=RoundStatus.FAILED, reason="x",
                                   result_meta={"culprit": 1})
            finally:
                other.close()

    (row, participants, _), _ = _open_with_hook(tmp_path / "data", name_once)
    assert row.index == 3 and row.excluded == (1, 2) and participants == [0, 3]


def test_the_store_refuses_a_stale_round_and_the_retries_are_bounded(tmp_path: Path) -> None:
    from secagg_server.modes import Rejected
    from secagg_server.store import StaleRound

    store = _store_with_culprit(tmp_path / "data")
    try:
        with pytest.raises(StaleRound, match="clients left out are now \\[2\\], not \\[\\]"):
            store.create_round(1, 2, "plain", {"num_clients": 4}, 5.0, (), left_out=())
        with pytest.raises(StaleRound, match="next round index is now 2, not 1"):
            store.create_round(1, 1, "plain", {"num_clients": 4}, 5.0, (2,), left_out={2})
        assert len(store.rounds()) == 2  # nothing stored
    finally:
        store.close()
    calls: list[int] = []

    def always_changes(store: Store) -> None:  # a new failed round each time: never settles
        calls.append(1)
        other = Store(tmp_path / "again")
        try:
            i = other.next_round_index(1)
            r = other.create_round(1, i, "plain", {"num_clients": 4}, 5.0)
            other.finish_round(r.id, status=RoundStatus.FAILED, reason="x", result_meta={})
        finally:
            other.close()

    first, nxt = _open_with_hook(tmp_path / "again", always_changes, attempts=3)
    assert isinstance(first, Rejected) and first.status == 503, first
    assert first.code == "federation_changed" and len(calls) == 3
    assert nxt.excluded == (2,)
