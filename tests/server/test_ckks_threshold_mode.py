"""Threshold CKKS rounds (``ckks-threshold``) over a real server process on loopback: the released
weighted mean of 10 enterprises, 4 of them gone at the decryption stage (the round completes),
5 gone (it ends with a clear reason), refused options, and a server restart mid-round.

The federations are enrolled as in a deployment (``tests/server/conftest.py``). Runtime clients
run in threads of this process (``Clients`` from ``test_ckks_mode``); where a test needs an
enterprise to vanish at a chosen stage it drives the runtime's own threshold participant by hand
(:class:`ManualThreshold`), which then simply stops answering.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from secagg.ckks.threshold.session import ThresholdRoundConfig
from secagg.contract import Header, ReleasedAggregate
from secagg_clients.participants import CLIENT_MODES
from secagg_clients.runtime import OCTET, Dropped, RoundInfo
from tests.server.conftest import Federation, expect_error, start_federation, updates, wait_stage
from tests.server.test_ckks_mode import Clients, _mean

MODE = "ckks-threshold"
LENGTH = 3000
N10 = 10


@pytest.fixture
def fed10(tmp_path: Path) -> Any:
    f = start_federation(tmp_path, N10)
    try:
        yield f
    finally:
        f.server.kill()


def open_threshold(fed: Federation, timeout: float = 30.0, **options: Any) -> dict[str, Any]:
    with fed.op() as op:
        resp = op.post("/v1/rounds", json={"mode": MODE, "stage_timeout_s": timeout,
                                           "options": {"vector_length": LENGTH, **options}})
    assert resp.status_code == 201, resp.text
    info: dict[str, Any] = resp.json()
    return info


def wait_end(fed: Federation, rid: int, timeout: float = 90.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while fed.status(rid)["status"] == "open" and time.monotonic() < end:
        time.sleep(0.05)
    return fed.status(rid)


class ManualThreshold:
    """The runtime's threshold participant, driven one stage at a time from the test."""

    def __init__(self, fed: Federation, i: int, info: dict[str, Any], update: np.ndarray,
                 weight: int = 1) -> None:
        self.fed, self.i, self.round_id = fed, i, info["round_id"]
        self.party = CLIENT_MODES[MODE](RoundInfo(info["round_id"], info["index"], MODE,
                                                  info["config"], i),
                                        update, weight, identity=fed.identity(i),
                                        roster=fed.roster)
        self.seen = 0

    def post(self, body: bytes) -> httpx.Response:
        with self.fed.as_client(self.i) as c:
            return c.post(f"/v1/rounds/{self.round_id}/messages", content=body, headers=OCTET)

    def send(self, body: bytes) -> None:
        resp = self.post(body)
        assert resp.status_code == 202, resp.text

    def advertise(self) -> bytes:
        body = self.party.first()
        self.send(body)
        return body

    def inbox(self, wait: float = 20.0) -> httpx.Response:
        with self.fed.as_client(self.i) as c:
            return c.get(f"/v1/rounds/{self.round_id}/inbox",
                         params={"after": self.seen, "wait": wait})

    def step(self, send: bool = True) -> bytes | None:
        resp = self.inbox()
        assert resp.headers.get("X-Secagg-State") == "message", (resp.status_code, resp.text)
        self.seen = int(resp.headers["X-Secagg-Stage-No"])
        answer = self.party.reply(resp.content)
        if answer is not None and send:
            self.send(answer)
        return answer

    def run_until(self, stage: str) -> None:
        """Advertise, then answer every stage up to and including ``stage``; then go silent."""
        self.advertise()
        while self.party.last_stage != stage:
            self.step()

    def result(self) -> tuple[ReleasedAggregate, np.ndarray]:
        with self.fed.as_client(self.i) as c:
            resp = c.get(f"/v1/rounds/{self.round_id}/result")
        assert resp.status_code == 200, resp.text
        meta = ReleasedAggregate.from_header(resp.headers[Header.RESULT])
        return meta, self.party.decode(meta, resp.content)


def _vanishing(fed: Federation, ids: list[int], info: dict[str, Any], ups: list[np.ndarray],
               weights: dict[int, int], stage: str) -> Vanishing:
    """Clients ``ids`` take part until they have sent their ``stage`` message, then vanish."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            ManualThreshold(fed, i, info, ups[i], weights.get(i, 1)).run_until(stage)
        except BaseException as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in ids]
    for t in threads:
        t.start()
    return Vanishing(threads, errors)


class Vanishing:
    def __init__(self, threads: list[threading.Thread], errors: list[BaseException]) -> None:
        self.threads, self.errors = threads, errors

    def join(self) -> None:
        for t in self.threads:
            t.join(60)
        assert all(not t.is_alive() for t in self.threads), "a vanishing client hung"
        assert not self.errors, self.errors


def _bound(info: dict[str, Any], weight_total: int) -> float:
    """The promised error of the released mean: the sum's bound over the total weight."""
    return float(ThresholdRoundConfig.from_dict(info["config"]).max_error) / weight_total


# ---- whole rounds ------------------------------------------------------------------------------

def test_ten_enterprises_release_the_weighted_mean(fed10: Federation) -> None:
    health = httpx.get(fed10.server.url + "/healthz").json()
    assert MODE in health["modes"]
    ups = updates(N10, LENGTH, seed=31)
    weights = {i: 1 + i % 4 for i in range(N10)}
    clients = Clients(fed10, list(range(N10)), ups, weights)
    info = open_threshold(fed10, weight_bound=4)
    cfg = info["config"]
    assert cfg["protocol"] == "secagg-ckks-threshold" and cfg["threshold"] == 6
    assert cfg["roster_digest"] == fed10.roster.digest().hex()
    assert (cfg["quorum"], cfg["min_uploaders"], cfg["corrupt"]) == (6, 6, 1)
    assert cfg["params"]["attempts"] == 2
    results = clients.join()
    want = _mean(ups, list(range(N10)), weights)
    total = sum(weights.values())
    for res in results.values():
        assert res.mode == MODE and res.survivors == tuple(range(N10)) and res.dropped == ()
        assert res.total_weight == total
        assert np.max(np.abs(res.mean - want)) <= _bound(info, total)
    first = results[0].weighted_sum
    assert all(np.array_equal(r.weighted_sum, first) for r in results.values())  # one release
    status = fed10.status(info["round_id"])
    assert status["status"] == "done"
    released = status["result"]
    assert released["encrypted"] is False and released["survivors"] == list(range(N10))
    assert abs(released["total_weight"] - total) < 1e-3
    assert released["extra"]["decryptors"] == list(range(N10))
    assert released["extra"]["decryption_attempts"] == 1


def test_four_enterprises_gone_at_decryption_the_round_completes(fed10: Federation) -> None:
    """Done when: "the round completes with 4 enterprises dropped at the decryption stage". All
    ten sign the statement; four never send their partial decryption; the server asks the six
    who answered once more (the parameters were planned for two decryptions) and combines."""
    ups = updates(N10, LENGTH, seed=32)
    gone = [1, 4, 6, 9]
    stay = [i for i in range(N10) if i not in gone]
    clients = Clients(fed10, stay, ups)
    info = open_threshold(fed10, timeout=8.0)
    vanish = _vanishing(fed10, gone, info, ups, {}, "statement")
    results = clients.join()
    vanish.join()
    want = _mean(ups, list(range(N10)))  # all ten uploaded: their updates are in the sum
    for res in results.values():
        assert res.survivors == tuple(range(N10))
        assert np.max(np.abs(res.mean - want)) <= _bound(info, N10)
    released = fed10.status(info["round_id"])["result"]
    assert released["extra"]["signers"] == list(range(N10))
    assert released["extra"]["decryptors"] == stay
    assert released["extra"]["decryption_attempts"] == 2


def test_below_the_threshold_at_decryption_the_round_ends_clearly(fed10: Federation) -> None:
    ups = updates(N10, LENGTH, seed=33)
    gone = [0, 2, 4, 6, 8]  # five gone: five answer, t = 6
    stay = [i for i in range(N10) if i not in gone]
    clients = Clients(fed10, stay, ups)
    info = open_threshold(fed10, timeout=6.0)
    vanish = _vanishing(fed10, gone, info, ups, {}, "statement")
    clients.wait()
    vanish.join()
    assert set(clients.errors) == set(stay) and not clients.results
    assert all(isinstance(e, Dropped) for e in clients.errors.values()), clients.errors
    status = wait_end(fed10, info["round_id"])
    assert status["status"] == "failed", status
    reason = status["reason"]
    assert "stage 'partial'" in reason and "5 participant(s) remain but the threshold is 6" \
        in reason, reason
    assert "[0, 2, 4, 6, 8]" in reason, reason  # who was silent
    with fed10.as_client(1) as c:
        expect_error(c.get(f"/v1/rounds/{info['round_id']}/result"), 409, "no_result")


def test_three_enterprises_all_must_sign(fed3: Federation) -> None:
    """The demo's federation: with n=3 the statement quorum is all three; one silent enterprise
    at the statement stage ends the round, naming the quorum."""
    ups = updates(3, LENGTH, seed=34)
    info = open_threshold(fed3, timeout=4.0)
    assert (info["config"]["threshold"], info["config"]["quorum"]) == (2, 3)
    clients = Clients(fed3, [0, 1], ups)
    vanish = _vanishing(fed3, [2], info, ups, {}, "upload")
    clients.wait()
    vanish.join()
    status = wait_end(fed3, info["round_id"])
    assert status["status"] == "failed" and "stage 'upload'" not in status["reason"], status
    assert "stage 'statement'" in status["reason"] and "quorum" in status["reason"], status

    # and with all three it completes
    clients = Clients(fed3, [0, 1, 2], ups)
    info = open_threshold(fed3)
    for res in clients.join().values():
        assert res.survivors == (0, 1, 2)
        assert np.max(np.abs(res.mean - _mean(ups, [0, 1, 2]))) <= _bound(info, 3)


def test_bad_options_are_refused_naming_them(fed3: Federation) -> None:
    with fed3.op() as op:
        def bad_open(options: dict[str, Any]) -> str:
            body = expect_error(op.post("/v1/rounds", json={"mode": MODE, "options": options}),
                                400, "invalid_options")
            return body["detail"]

        assert "vector_length" in bad_open({})
        detail = bad_open({"vector_length": 10, "clip": 1.0})
        assert "'clip'" in detail and "value_bound" in detail  # names the allowed ones
        assert "threshold" in bad_open({"vector_length": 10, "threshold": 1})
        assert "threshold" in bad_open({"vector_length": 10, "threshold": 4})
        assert "target_error" in bad_open({"vector_length": 10, "target_error": 0})
        assert "value_bound" in bad_open({"vector_length": 10, "value_bound": "big"})
        assert "dealer" in bad_open({"vector_length": 10, "dealer": 0})  # a dealer-mode option


@pytest.mark.slow
def test_server_restart_mid_round_resumes(fed3: Federation) -> None:
    """Crashes after the adverts and in the upload stage: the round is rebuilt from the store
    (the server keeps no secret; every client's secret stays in its own process)."""
    ups = updates(3, LENGTH, seed=35)
    info = open_threshold(fed3, timeout=30.0)
    rid = info["round_id"]
    parties = [ManualThreshold(fed3, i, info, ups[i]) for i in range(3)]
    for p in parties:
        p.advertise()
    fed3.server.kill()
    fed3.server.start()
    for p in parties:
        p.step()  # the key request the restarted server relays -> the deal
    uploads = [p.step(send=False) for p in parties]  # the delivery -> the upload
    for p, body in zip(parties[:2], uploads[:2], strict=True):
        assert body is not None
        p.send(body)
    wait_stage(fed3, rid, "upload", 1)
    fed3.server.kill()
    fed3.server.start()
    assert uploads[2] is not None
    parties[2].send(uploads[2])
    for p in parties:
        p.step()  # statement
    for p in parties:
        p.step()  # partial decryption
    status = wait_end(fed3, rid)
    assert status["status"] == "done", status
    want = _mean(ups, [0, 1, 2])
    for p in parties:
        meta, total = p.result()
        assert meta.survivors == (0, 1, 2)
        assert np.max(np.abs(total / 3 - want)) <= _bound(info, 3)


def test_the_adapter_maps_refusals_and_replays_to_the_same_release() -> None:
    """In memory, no server: the mode adapter over the library's sessions, its HTTP refusals
    (from the session's state), and determinism (crash recovery replays the accepted messages
    and closes into a fresh round)."""
    from secagg.ckks.threshold.session import ClientSession
    from secagg.identity import Identity, Roster
    from secagg_server.modes import Rejected, default_modes
    from secagg_server.modes.ckks_threshold import ThresholdRound

    identities = [Identity.generate(f"enterprise-{i}") for i in range(3)]
    roster = Roster.of("adapter", identities)
    config = default_modes()[MODE].make_config(3, 2, {"vector_length": 20}, roster)
    cfg = ThresholdRoundConfig.from_dict(config)
    ups = updates(3, 20, seed=36)
    clients = {i: ClientSession(cfg, i, ups[i], identity=identities[i], roster=roster)
               for i in range(3)}
    live = ThresholdRound(config, frozenset(range(3)), roster)
    log: list[tuple[int, bytes] | None] = []

    def take(i: int, body: bytes) -> None:
        assert live.claimed_sender(body) == i and len(body) <= live.max_message_bytes()
        live.receive(i, body)
        log.append((i, body))

    def refused(i: int, body: bytes) -> Rejected:
        with pytest.raises(Rejected) as err:
            live.receive(i, body)
        return err.value

    adverts = {i: c.start() for i, c in clients.items()}
    assert (refused(1, adverts[0]).status, refused(1, adverts[0]).code) == (403, "wrong_sender")
    for i in range(3):
        take(i, adverts[i])
    assert refused(0, adverts[0]).code == "conflicting_message"
    log.append(None)
    out = live.advance()
    assert live.stage == "deal" and live.expected == {0, 1, 2}
    assert refused(0, adverts[0]).code == "wrong_stage"
    deals = {i: clients[i].handle_bytes(out[i]) for i in range(3)}
    for i in range(3):
        body = deals[i]
        assert body is not None
        take(i, body)
    while not live.done:
        log.append(None)
        out = live.advance()
        for i in sorted(out):
            reply = clients[i].handle_bytes(out[i])
            assert reply is not None
            take(i, reply)
    meta, payload = live.result()
    assert meta.mode == MODE and meta.survivors == (0, 1, 2) and not meta.encrypted
    total = np.frombuffer(payload, "<f8")
    assert np.max(np.abs(total - sum(u.astype(np.float64) for u in ups))) <= cfg.max_error

    again = ThresholdRound(config, frozenset(range(3)), roster)
    for entry in log:
        if entry is None:
            again.advance()
        else:
            again.receive(*entry)
    assert again.done and again.result() == (meta, payload)
