"""CKKS rounds over a real server process on loopback: the released mean, dropouts, a missing
dealer, abuse of the message route, crash recovery, an attack on the server's stored bytes, and
a forged aggregate.

The federation is enrolled as in a deployment (``tests/server/conftest.py``): each enterprise
holds an identity, the federation is created from their roster, and every round's config is
bound to that roster. The server only relays the clients' signed key ceremony and sums
ciphertexts (:class:`secagg.ckks.ServerSession` behind ``server.modes.CKKSRound``); the clients
verify and decrypt the released (encrypted) aggregate themselves (:class:`secagg.ckks.
ClientSession` behind the runtime). Runtime clients run in threads of this process
(``clients.runtime.RuntimeClient``); where a test needs to hold a round at a chosen stage or read
a client's key, it drives the runtime's own CKKS participant by hand (:class:`ManualCKKS`).
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from secagg.ckks import CKKSRoundConfig
from secagg.ckks.adversary import tweak_coefficient
from secagg.ckks.client import session_for
from secagg.ckks.layout import Layout
from secagg.ckks.messages import Aggregate, Kind, Upload
from secagg.ckks.wire import MAGIC, frame, peek, u32
from secagg.contract import Header, ReleasedAggregate
from secagg.errors import InvalidParameter, ProtocolAbort
from secagg.hazmat.seal_codec import CiphertextRejected
from secagg.identity import Identity, Roster
from secagg_clients.runtime import (
    _CKKS,
    OCTET,
    Dropped,
    RoundInfo,
    RoundRefused,
    RoundResult,
    RuntimeClient,
)
from tests.server.conftest import Federation, expect_error, updates, wait_stage

N3 = 3  # the fed3 fixture's federation (tests.server.conftest)
LENGTH = 2000


def open_ckks(fed: Federation, timeout: float = 20.0, **options: Any) -> dict[str, Any]:
    with fed.op() as op:
        resp = op.post("/v1/rounds", json={"mode": "ckks", "stage_timeout_s": timeout,
                                           "options": {"vector_length": LENGTH, **options}})
    assert resp.status_code == 201, resp.text
    info: dict[str, Any] = resp.json()
    return info


class Clients:
    """Runtime clients in threads, each taking part in the next round with its own weight."""

    def __init__(self, fed: Federation, ids: list[int], ups: list[np.ndarray],
                 weights: dict[int, int] | None = None) -> None:
        self.results: dict[int, RoundResult] = {}
        self.errors: dict[int, BaseException] = {}
        w = weights or {}
        self.threads = [threading.Thread(target=self._run, args=(fed, i, ups[i], w.get(i, 1)),
                                         daemon=True) for i in ids]
        for t in self.threads:
            t.start()
        time.sleep(0.2)  # their long polls for the next round are in

    def _run(self, fed: Federation, i: int, update: np.ndarray, weight: int) -> None:
        try:
            with fed.runtime(i, poll_wait=2.0, retry_for=60.0) as rt:
                self.results[i] = rt.run_round(update, weight=weight, timeout=60)
        except BaseException as exc:
            self.errors[i] = exc

    def wait(self, timeout: float = 90.0) -> None:
        for t in self.threads:
            t.join(timeout)
        assert all(not t.is_alive() for t in self.threads), "a client did not finish"

    def join(self) -> dict[int, RoundResult]:
        self.wait()
        assert not self.errors, self.errors
        return self.results


class ManualCKKS:
    """The runtime's CKKS participant, driven one stage at a time from the test."""

    def __init__(self, fed: Federation, i: int, info: dict[str, Any], update: np.ndarray,
                 weight: int = 1) -> None:
        self.fed, self.i, self.round_id = fed, i, info["round_id"]
        self.party = _CKKS(RoundInfo(info["round_id"], info["index"], "ckks", info["config"], i),
                           update, weight, identity=fed.identity(i), roster=fed.roster)
        self.seen = 0
        self.sent: list[bytes] = []

    @property
    def dealer(self) -> bool:
        return self.i == self.party.config.dealer

    def post(self, body: bytes, as_client: int | None = None) -> httpx.Response:
        with self.fed.as_client(self.i if as_client is None else as_client) as c:
            return c.post(f"/v1/rounds/{self.round_id}/messages", content=body, headers=OCTET)

    def send(self, body: bytes) -> None:
        resp = self.post(body)
        assert resp.status_code == 202, resp.text
        self.sent.append(body)

    def advertise(self) -> bytes:
        body = self.party.first()
        self.send(body)
        return body

    def inbox(self, wait: float = 10.0) -> httpx.Response:
        with self.fed.as_client(self.i) as c:
            return c.get(f"/v1/rounds/{self.round_id}/inbox", params={"after": self.seen, "wait": wait})

    def step(self, send: bool = True) -> bytes | None:
        """Fetch the next stage message and compute (and by default post) the answer."""
        resp = self.inbox()
        assert resp.headers.get("X-Secagg-State") == "message", (resp.status_code, resp.text)
        self.seen = int(resp.headers["X-Secagg-Stage-No"])
        answer = self.party.reply(resp.content)
        if answer is not None and send:
            self.send(answer)
        return answer

    def next_answer(self) -> bytes:
        """The next thing this client would post, not posted. A non-dealer may see the roster
        (nothing to answer) or, if the dealer was quick, go straight to its key delivery."""
        while True:
            answer = self.step(send=False)
            if answer is not None:
                return answer

    def result(self) -> np.ndarray:
        with self.fed.as_client(self.i) as c:
            resp = c.get(f"/v1/rounds/{self.round_id}/result")
        assert resp.status_code == 200, resp.text
        meta = ReleasedAggregate.from_header(resp.headers[Header.RESULT])
        return self.party.decode(meta, resp.content)

    def secrets(self) -> list[bytes]:
        """This client's secret bytes: the round key's seed and its X25519 private key."""
        session = self.party.session
        seed = session._require_key().expose_secret_seed_for_export().expose_secret_bytes()
        box = session._box.export_private_bytes_for_sharing().expose_secret_bytes()
        return [seed, box]


def _mean(ups: list[np.ndarray], ids: list[int], weights: dict[int, int] | None = None) -> np.ndarray:
    w = weights or {}
    total = sum(w.get(i, 1) * ups[i].astype(np.float64) for i in ids)
    return np.asarray(total) / sum(w.get(i, 1) for i in ids)


# ---- whole rounds ------------------------------------------------------------------------------

def test_ckks_rounds_release_the_plaintext_mean(fed3: Federation) -> None:
    health = httpx.get(fed3.server.url + "/healthz").json()
    assert "ckks" in health["modes"]
    ups = updates(N3, LENGTH, seed=21)
    clients = Clients(fed3, [0, 1, 2], ups)
    info = open_ckks(fed3)
    assert info["config"]["protocol"] == "secagg-ckks" and info["config"]["dealer"] == 0
    # bound to the federation's roster: its digest, and the roster's ids as client ids
    assert info["config"]["roster_digest"] == fed3.roster.digest().hex()
    assert info["config"]["client_ids"] == list(fed3.roster.ids) == [0, 1, 2]
    assert CKKSRoundConfig.from_dict(info["config"]).roster_digest == fed3.roster.digest()
    results = clients.join()
    want = _mean(ups, [0, 1, 2])
    for res in results.values():
        assert res.mode == "ckks" and res.survivors == (0, 1, 2) and res.dropped == ()
        assert res.total_weight == N3
        assert np.max(np.abs(res.mean - want)) <= 1e-4
    first = results[0].weighted_sum
    assert all(np.array_equal(r.weighted_sum, first) for r in results.values())  # one release
    status = fed3.status(info["round_id"])
    assert status["status"] == "done"
    assert status["result"]["encrypted"] is True and status["result"]["total_weight"] is None
    assert status["result"]["survivors"] == [0, 1, 2] and status["result"]["dropped"] == []
    assert status["result"]["excluded"] == []

    # weighted: the weights travel encrypted with the update; the next round has dealer 1
    weights = {0: 1, 1: 2, 2: 4}
    clients = Clients(fed3, [0, 1, 2], ups, weights)
    info = open_ckks(fed3, weight_bound=4, preset="precise")
    assert info["config"]["dealer"] == 1
    results = clients.join()
    want = _mean(ups, [0, 1, 2], weights)
    for res in results.values():
        assert res.total_weight == 7
        assert np.max(np.abs(res.mean - want)) <= 1e-4


def test_packed_rounds_run_through_the_real_server(fed3: Federation) -> None:
    """The compact wire format (preset "packed", parameters sized to the round's precision):
    the operator opens it with a target error, the clients rebuild the identical config and
    release the plaintext mean within that error (relative to the sum's range)."""
    ups = updates(N3, LENGTH, seed=23)
    clients = Clients(fed3, [0, 1, 2], ups)
    info = open_ckks(fed3, preset="packed", target_error=1e-6)
    cfg = CKKSRoundConfig.from_dict(info["config"])
    assert info["config"]["preset"] == "packed" and info["config"]["target_error"] == 1e-6
    assert cfg.params.coeff_modulus_bits[0] <= 32  # residues packed at <= 32 bits per value
    results = clients.join()
    want = _mean(ups, [0, 1, 2])
    for res in results.values():
        assert res.survivors == (0, 1, 2)
        assert np.max(np.abs(res.mean - want)) <= 1e-6 * N3  # relative to the sum's range
    with fed3.op() as op:
        for bad, word in (({"preset": "packed", "target_error": 0}, "target_error"),
                          ({"preset": "compact", "target_error": 1e-6}, "packed"),
                          ({"preset": "pakced"}, "preset")):
            resp = op.post("/v1/rounds", json={"mode": "ckks", "options": {
                "vector_length": LENGTH, **bad}})
            assert resp.status_code == 400 and word in resp.json()["detail"], resp.text


def test_a_client_silent_before_uploading_is_a_dropout(fed3: Federation) -> None:
    ups = updates(N3, LENGTH, seed=22)
    dealer = 0  # the first round's dealer
    victim = 2
    clients = Clients(fed3, [0, 1], ups)
    info = open_ckks(fed3, timeout=1.5)
    assert info["config"]["dealer"] == dealer
    quiet = ManualCKKS(fed3, victim, info, ups[victim])
    quiet.advertise()
    quiet.next_answer()  # keyed, its upload ready... and never sent
    results = clients.join()
    want = _mean(ups, [0, 1])
    for res in results.values():
        assert res.survivors == (0, 1) and res.dropped == (victim,) and res.total_weight == 2
        assert np.max(np.abs(res.mean - want)) <= 1e-4
    assert fed3.status(info["round_id"])["status"] == "done"
    late = quiet.inbox(wait=0)
    assert late.headers.get("X-Secagg-State") == "done" or late.status_code in (409, 410)


def test_too_few_uploads_release_nothing(fed3: Federation) -> None:
    ups = updates(N3, LENGTH, seed=23)
    info = open_ckks(fed3, timeout=1.0, min_clients=3)
    parties = [ManualCKKS(fed3, i, info, ups[i]) for i in range(N3)]
    for p in parties:
        p.advertise()
    parties[0].step()  # the dealer deals
    for p in parties[:2]:
        p.send(p.next_answer())  # two uploads; the third client stays silent
    end = time.monotonic() + 15
    while fed3.status(info["round_id"])["status"] == "open" and time.monotonic() < end:
        time.sleep(0.05)
    status = fed3.status(info["round_id"])
    assert status["status"] == "failed" and "min_clients is 3" in status["reason"], status
    with fed3.as_client(0) as c:
        expect_error(c.get(f"/v1/rounds/{info['round_id']}/result"), 409, "no_result")


def test_a_missing_dealer_fails_the_round_with_a_clear_reason(fed3: Federation) -> None:
    ups = updates(N3, LENGTH, seed=24)
    # round 0: the dealer (client 0) never shows up
    clients = Clients(fed3, [1, 2], ups)
    info = open_ckks(fed3, timeout=1.0)
    assert info["config"]["dealer"] == 0
    clients.wait()
    assert set(clients.errors) == {1, 2} and not clients.results
    for exc in clients.errors.values():
        assert isinstance(exc, Dropped) and "dealer (client 0)" in str(exc), exc
    status = fed3.status(info["round_id"])
    assert status["status"] == "failed"
    assert "dealer (client 0) sent no valid key advert" in status["reason"], status

    # round 1: the dealer (client 1) advertises, then never deals
    clients = Clients(fed3, [0, 2], ups)
    info = open_ckks(fed3, timeout=1.0)
    assert info["config"]["dealer"] == 1
    ManualCKKS(fed3, 1, info, ups[1]).advertise()
    clients.wait()
    assert set(clients.errors) == {0, 2}
    status = fed3.status(info["round_id"])
    assert status["status"] == "failed"
    assert "dealer (client 1) sent no valid key distribution" in status["reason"], status
    assert httpx.get(fed3.server.url + "/healthz").status_code == 200


def _local_federation(n: int, name: str = "local") -> tuple[list[Identity], Roster]:
    identities = [Identity.generate(f"enterprise-{i}") for i in range(n)]
    return identities, Roster.of(name, identities)


def test_the_runtime_checks_its_input_against_the_round_before_sending_anything() -> None:
    from secagg_server.modes import default_modes

    identities, roster = _local_federation(N3)
    config = default_modes()["ckks"].make_config(N3, 0, {"vector_length": 10, "weight_bound": 2}, roster)
    info = RoundInfo(1, 0, "ckks", config, 1)
    me = identities[1]
    with pytest.raises(InvalidParameter, match="weight_bound=2"):
        _CKKS(info, np.zeros(10, np.float32), 3, identity=me, roster=roster)
    with pytest.raises(InvalidParameter, match="shape"):
        _CKKS(info, np.zeros(11, np.float32), 1, identity=me, roster=roster)
    with pytest.raises(InvalidParameter, match="digest"):
        _CKKS(RoundInfo(1, 0, "ckks", {**config, "min_clients": 3}, 1), np.zeros(10, np.float32), 1,
              identity=me, roster=roster)
    # clipped to value_bound, like masking
    party = _CKKS(info, np.full(10, 5.0, np.float32), 2, identity=me, roster=roster)
    assert float(np.max(party.update)) == 1.0

    # the roster binding: a round bound to another roster, or this identity under another id,
    # is refused before anything is sent (a ProtocolAbort: the runtime's RoundRefused)
    _, other = _local_federation(N3, "elsewhere")
    foreign = default_modes()["ckks"].make_config(N3, 0, {"vector_length": 10}, other)
    with pytest.raises(ProtocolAbort, match="roster"):
        _CKKS(RoundInfo(1, 0, "ckks", foreign, 1), np.zeros(10, np.float32), 1, identity=me, roster=roster)
    with pytest.raises(ProtocolAbort, match="pinned roster gives client 2"):
        _CKKS(RoundInfo(1, 0, "ckks", config, 2), np.zeros(10, np.float32), 1, identity=me, roster=roster)


def test_a_federation_without_a_roster_cannot_open_ckks_rounds() -> None:
    from secagg_server.modes import default_modes
    from secagg_server.modes.ckks import CKKSRound

    with pytest.raises(InvalidParameter, match="no pinned roster"):
        default_modes()["ckks"].make_config(N3, 0, {"vector_length": 10}, None)
    _, roster = _local_federation(N3)
    config = default_modes()["ckks"].make_config(N3, 0, {"vector_length": 10}, roster)
    with pytest.raises(InvalidParameter, match="roster"):
        CKKSRound(config, frozenset(range(N3)), None)
    _, other = _local_federation(N3, "elsewhere")
    with pytest.raises(InvalidParameter, match="another roster"):
        CKKSRound(config, frozenset(range(N3)), other)


def test_the_adapter_is_the_library_session_and_replays_to_the_same_bytes() -> None:
    """In memory, no server: the mode adapter over the library's sessions, its per-stage size
    limits, its 409 refusals (from the session's state), and determinism (the coordinator's
    crash recovery replays the accepted messages and closes into a fresh round)."""
    from secagg.ckks import ClientSession, ServerStage
    from secagg_server.modes import Rejected, default_modes
    from secagg_server.modes.ckks import CKKSRound

    identities, roster = _local_federation(N3)
    config = default_modes()["ckks"].make_config(N3, 4, {"vector_length": 10, "weight_bound": 2}, roster)
    assert config["dealer"] == 4 % N3 == 1  # rotates with the round index
    cfg = CKKSRoundConfig.from_dict(config)
    ups = updates(N3, 10, seed=3)
    clients = {i: ClientSession(cfg, i, ups[i], weight=2.0, identity=identities[i], roster=roster)
               for i in range(N3)}
    live = CKKSRound(config, frozenset(range(N3)), roster)
    log: list[tuple[int, bytes] | None] = []  # what the coordinator journals: messages, closes

    def take(i: int, body: bytes) -> None:
        assert len(body) <= live.max_message_bytes()
        assert live.claimed_sender(body) == i
        live.receive(i, body)
        log.append((i, body))

    def refused(i: int, body: bytes) -> Rejected:
        with pytest.raises(Rejected) as err:
            live.receive(i, body)
        return err.value

    def close() -> dict[int, bytes]:
        log.append(None)
        return live.advance()

    assert live.stage == ServerStage.ADVERT.value and live.expected == {0, 1, 2}
    adverts = {i: c.start() for i, c in clients.items()}
    assert all(len(a) == live.max_message_bytes() for a in adverts.values())  # one exact size
    for i, advert in adverts.items():
        take(i, advert)
    second = ClientSession(cfg, 0, ups[0], identity=identities[0], roster=roster).start()
    assert (refused(0, second).status, refused(0, second).code) == (409, "conflicting_message")
    requests = close()
    assert live.stage == "key-distribution" and live.expected == {1} and set(requests) == {0, 1, 2}
    assert all(clients[i].handle_bytes(requests[i]) is None for i in (0, 2))
    dist = clients[1].handle_bytes(requests[1])
    assert dist is not None
    assert refused(0, adverts[0]).code == "wrong_stage"
    bad = bytearray(dist)
    bad[-1] ^= 1  # the dealer's roster signature no longer verifies
    err = refused(1, bytes(bad))
    assert (err.status, err.code) == (400, "invalid_message") and "key-distribution-signature" in err.detail
    take(1, dist)
    deliveries = close()
    assert live.stage == "upload" and set(deliveries) == {0, 1, 2}
    uploads = {i: clients[i].handle_bytes(deliveries[i]) for i in range(N3)}
    for i in (2, 0):
        body = uploads[i]
        assert body is not None
        take(i, body)
    again_0 = uploads[0]
    assert again_0 is not None
    err = refused(0, again_0)  # the session does not await client 0 any more
    assert (err.status, err.code) == (409, "conflicting_message")
    assert live.expected == {1}
    close()  # the deadline passes: client 1 is a dropout
    assert live.done
    meta, payload = live.result()
    assert meta.survivors == (0, 2) and meta.dropped == (1,) and meta.excluded == ()
    assert meta.encrypted and meta.total_weight is None
    release = None
    for i in (0, 2):
        assert clients[i].handle_bytes(payload) is None
        release = clients[i].result
    assert release is not None and release.contributors == (0, 2)
    assert np.max(np.abs(release.mean() - (ups[0] + ups[2]) / 2)) <= 1e-4

    # crash recovery: the journal replayed into a fresh round gives the same bytes throughout
    again = CKKSRound(config, frozenset(range(N3)), roster)
    for entry in log:
        if entry is None:
            again.advance()
        else:
            again.receive(*entry)
    assert again.done and again.result() == (meta, payload)
    assert again.session.stored_messages() == live.session.stored_messages()


# ---- abuse -------------------------------------------------------------------------------------

def test_bad_options_and_bad_bodies_get_clear_4xx_and_the_round_completes(fed3: Federation) -> None:
    with fed3.op() as op:
        def bad_open(options: dict[str, Any]) -> str:
            body = expect_error(op.post("/v1/rounds", json={"mode": "ckks", "options": options}), 400,
                        "invalid_options")
            return body["detail"]

        assert "vector_length" in bad_open({})
        detail = bad_open({"vector_length": 10, "clip": 1.0})
        assert "clip" in detail and "value_bound" in detail  # names the allowed ones
        assert "preset" in bad_open({"vector_length": 10, "preset": "huge"})
        assert "min_clients" in bad_open({"vector_length": 10, "min_clients": 1})
        assert "dealer" in bad_open({"vector_length": 10, "dealer": 3})
        assert "value_bound" in bad_open({"vector_length": 10, "value_bound": "big"})
        assert "exceeds" in bad_open({"vector_length": 10, "value_bound": 1e6})  # overflow bound

    ups = updates(N3, LENGTH, seed=25)
    clients = Clients(fed3, [0, 1], ups)  # client 0 deals
    info = open_ckks(fed3)
    rid = info["round_id"]
    me = ManualCKKS(fed3, 2, info, ups[2])
    url = f"/v1/rounds/{rid}/messages"
    advert = me.party.first()
    with fed3.as_client(2) as c:
        def post(body: bytes) -> httpx.Response:
            return c.post(url, content=body, headers=OCTET)

        expect_error(post(b"\x00" * 100), 400, "invalid_message")
        expect_error(post(b""), 400, "invalid_message")
        expect_error(post(advert[:-7]), 400, "invalid_message")
        expect_error(post(advert + b"\x00"), 413, "body_too_large")  # an advert has one exact size
        expect_error(post(MAGIC + bytes([Kind.AGGREGATE])), 400, "invalid_message")
        expect_error(post(b"\x00" * 100_000), 413, "body_too_large")
        early = frame(Kind.UPLOAD, [b"\x00" * 32, b"\x00" * 8, u32(2), b"", b"\x00" * 64])
        body = expect_error(post(early), 409, "wrong_stage")
        assert "advert" in body["expected"]
    with fed3.as_client(1) as other:  # a client posting as another
        expect_error(other.post(url, content=advert, headers=OCTET), 403, "wrong_sender")
    me.send(advert)
    expect_error(me.post(advert), 409, "replayed")
    upload = me.next_answer()
    tampered = bytearray(upload)
    tampered[len(upload) // 2] ^= 0x01
    body = expect_error(me.post(bytes(tampered)), 400, "invalid_message")
    assert "upload-signature" in body["detail"]  # the session names the check that failed
    expect_error(me.post(upload[:-100]), 400, "invalid_message")
    expect_error(me.post(upload + b"\x00"), 400, "invalid_message")
    limit = len(upload) * 3  # above any valid upload of this round (one ciphertext)
    expect_error(me.post(upload + b"\x00" * limit), 413, "body_too_large")
    expect_error(me.post(advert), 409, "replayed")  # an earlier stage's message, replayed
    expect_error(me.post(upload, as_client=0), 403, "wrong_sender")
    rng = np.random.default_rng(0)
    for _ in range(20):
        junk = rng.bytes(int(rng.integers(0, 400)))
        if rng.random() < 0.5:
            junk = upload[:60] + junk  # a valid header, a garbage body
        resp = me.post(junk)
        assert 400 <= resp.status_code < 500, resp.text
    assert httpx.get(fed3.server.url + "/healthz").status_code == 200
    me.send(upload)  # the refusals above did not exclude this client
    expect_error(me.post(upload), 409)  # replay after the round completed (round_done or replayed)
    results = clients.join()
    want = _mean(ups, [0, 1, 2])
    for res in results.values():
        assert res.survivors == (0, 1, 2)
        assert np.max(np.abs(res.mean - want)) <= 1e-4
    assert np.max(np.abs(me.result() / 3 - want)) <= 1e-4


# ---- a malicious server: a forged aggregate ----------------------------------------------------

Forgery = Callable[[CKKSRoundConfig, Aggregate, dict[int, Upload]], bytes]


def _replay_one_upload(config: CKKSRoundConfig, honest: Aggregate, uploads: dict[int, Upload]) -> bytes:
    """Client 1's upload passed off as the aggregate: added to itself once per contributor (so
    the decrypted contributor count still matches), with every genuine signed receipt."""
    seal = session_for(config)
    sums = [seal.load(b, what="forged") for b in uploads[1].chunks]
    for _ in honest.contributors[1:]:
        for acc, blob in zip(sums, uploads[1].chunks, strict=True):
            seal.add_inplace(acc, seal.load(blob, what="forged"))
    chunks = tuple(seal.dump(ct) for ct in sums)
    return Aggregate(honest.config_digest, honest.round, honest.receipts, chunks).to_bytes()


def _tweak_the_sum(config: CKKSRoundConfig, honest: Aggregate, uploads: dict[int, Upload]) -> bytes:
    """The honest sum with one raw coefficient moved by one: a tiny change nobody would see."""
    chunks = (tweak_coefficient(session_for(config), honest.chunks[0], 5, 1), *honest.chunks[1:])
    return Aggregate(honest.config_digest, honest.round, honest.receipts, chunks).to_bytes()


class ForgedResultRuntime(RuntimeClient):
    """The real runtime behind a server that sums honestly and then releases a forgery: every
    ``/result`` answer's bytes are replaced by ``forge(...)`` of the genuine aggregate and the
    uploads it saw (the server holds every upload; here they are collected as clients post
    them). There is no server-side hook for this, so the forging sits at the client's side of
    the HTTP connection: the bytes this client receives are exactly what such a server sends."""

    def __init__(self, *args: Any, forge: Forgery | None, uploads: dict[int, Upload],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.forge = forge
        self.uploads = uploads  # shared by the clients of one test, like the server's view

    def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        resp = super()._call(method, url, **kw)
        body = kw.get("content")
        if method == "POST" and isinstance(body, bytes) and peek(body)[0] == Kind.UPLOAD:
            upload = Upload.from_bytes(body)
            self.uploads[upload.client_id] = upload
        if self.forge is not None and method == "GET" and url.endswith("/result"):
            meta = resp.headers["X-Secagg-Result"]
            round_info = self._call("GET", url.removesuffix("/result")).json()
            config = CKKSRoundConfig.from_dict(round_info["config"])
            forged = self.forge(config, Aggregate.from_bytes(resp.content), self.uploads)
            return httpx.Response(200, headers={"X-Secagg-Result": meta}, content=forged)
        return resp


def test_a_forged_aggregate_is_refused_by_the_clients_and_they_go_on(fed3: Federation) -> None:
    uploads: dict[int, Upload] = {}
    forgeries: dict[int, Forgery | None] = {0: _replay_one_upload, 1: _tweak_the_sum, 2: None}
    outcomes: dict[int, list[RoundResult | BaseException]] = {i: [] for i in range(N3)}
    ups = updates(N3, LENGTH, seed=27)

    def run(i: int) -> None:
        rt = ForgedResultRuntime(fed3.server.url, fed3.tokens[i], identity=fed3.identity(i),
                                 roster=fed3.roster, poll_wait=2.0, retry_for=60.0,
                                 forge=forgeries[i], uploads=uploads)
        with rt:
            after = -1
            for _ in range(2):  # the forged round, then an honest one in the same process
                info = rt.wait_for_round(after, timeout=60)
                after = info.index
                try:
                    outcomes[i].append(rt.take_part(info, ups[i]))
                except BaseException as exc:
                    outcomes[i].append(exc)
                rt.forge = None

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(N3)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    first = open_ckks(fed3)
    end = time.monotonic() + 60
    while any(not outcomes[i] for i in range(N3)) and time.monotonic() < end:
        time.sleep(0.05)
    assert fed3.status(first["round_id"])["status"] == "done"  # the server completed the round
    second = open_ckks(fed3)
    for t in threads:
        t.join(90)
    assert all(not t.is_alive() for t in threads), outcomes
    want = _mean(ups, [0, 1, 2])
    for i in (0, 1):  # each refused its forgery by the sketch check, decrypting nothing
        refusal = outcomes[i][0]
        assert isinstance(refusal, RoundRefused), outcomes[i]
        assert refusal.round_index == first["index"] and "sketch-check" in refusal.reason, refusal
    control = outcomes[2][0]  # the same round's genuine aggregate verifies and decrypts
    assert isinstance(control, RoundResult), control
    assert np.max(np.abs(control.mean - want)) <= 1e-4
    for i in range(N3):  # and the refusing clients took part in the next round as usual
        res = outcomes[i][1]
        assert isinstance(res, RoundResult), (i, res)
        assert res.index == second["index"] and res.survivors == (0, 1, 2)
        assert np.max(np.abs(res.mean - want)) <= 1e-4


# ---- crash recovery and the stored bytes -------------------------------------------------------

def _files(data_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in data_dir.rglob("*") if p.is_file()]


def _scan(data_dir: Path, needles: list[bytes]) -> bool:
    """Does any file under the data dir hold any needle?"""
    blobs = _files(data_dir)
    return any(n in b for n in needles for b in blobs)


def _decrypt_everything(data_dir: Path, party: ManualCKKS) -> list[np.ndarray]:
    """The stored-bytes attack *with* the round's secret key: find every SEAL ciphertext in
    every file under the data dir, load it with the round's public parameters and decrypt it.
    Returns the first ``LENGTH`` decoded values of each (chunk 0 of an update or a sum)."""
    config = party.party.config
    session = party.party.session._session
    key = party.party.session._require_key().seal
    assert Layout(config.update_size, session.slots).chunks == 1
    header = struct.Struct("<HBBBBHQ")  # SEAL: magic, header size, version, compression, size
    found = []
    for data in _files(data_dir):
        pos = data.find(b"\x5e\xa1\x10")
        while pos >= 0:
            size = header.unpack_from(data, pos)[-1] if pos + header.size <= len(data) else 0
            blob = data[pos : pos + size]
            try:
                ct = session.load(blob, what="stored bytes")
            except CiphertextRejected:
                pass
            else:
                found.append(key.decrypt_exact(ct).view(np.float64)[:LENGTH])
            pos = data.find(b"\x5e\xa1\x10", pos + 1)
    return found


def _matches(decoded: list[np.ndarray], vector: np.ndarray) -> bool:
    return any(np.max(np.abs(d - vector)) < 1e-3 for d in decoded)


@pytest.mark.slow
def test_server_crash_mid_round_resumes_and_stored_bytes_reveal_no_update(fed3: Federation) -> None:
    ups = updates(N3, LENGTH, seed=26)
    info = open_ckks(fed3, timeout=30.0)
    rid = info["round_id"]
    parties = [ManualCKKS(fed3, i, info, ups[i]) for i in range(N3)]
    for p in parties:
        p.advertise()
    fed3.server.kill()  # crash after the adverts: the key ceremony resumes from the store
    fed3.server.start()
    assert parties[0].dealer
    parties[0].step()  # the dealer deals from the roster the restarted server relays
    uploads = [p.next_answer() for p in parties]
    parties[0].send(uploads[0])
    parties[1].send(uploads[1])
    wait_stage(fed3, rid, "upload", 1)
    data_dir = fed3.server.data_dir

    # positive controls mid-round: the uploads are on disk, and with the round key (which the
    # server never has) the attack below does recover an individual update from them
    needles = [u[i : i + 64] for u in uploads[:2] for i in range(200, len(u) - 64, len(u) // 8)]
    assert _scan(data_dir, needles)
    decoded = _decrypt_everything(data_dir, parties[2])
    assert _matches(decoded, ups[0].astype(np.float64)) and _matches(decoded, ups[1].astype(np.float64))

    fed3.server.kill()  # crash in the upload stage
    fed3.server.start()
    parties[2].send(uploads[2])
    end = time.monotonic() + 20
    while fed3.status(rid)["status"] == "open" and time.monotonic() < end:
        time.sleep(0.05)
    assert fed3.status(rid)["status"] == "done"
    want = _mean(ups, [0, 1, 2])
    for p in parties:
        assert np.max(np.abs(p.result() / 3 - want)) <= 1e-4

    # after the release: no upload bytes, no key material, no plaintext anywhere under --data
    assert not _scan(data_dir, needles)
    assert not _scan(data_dir, [uploads[2][i : i + 64] for i in range(200, 60_000, 6_000)])
    for p in parties:
        for secret in p.secrets():
            assert not _scan(data_dir, [secret, secret[:16], secret[16:32], secret[-16:]])
    for u in ups:
        raw32, raw64 = u.tobytes(), u.astype(np.float64).tobytes()
        assert not _scan(data_dir, [raw32[i : i + 32] for i in range(0, 4096, 512)])
        assert not _scan(data_dir, [raw64[i : i + 32] for i in range(0, 8192, 1024)])
    # and the attack with the round key finds only the released sum, never one update
    decoded = _decrypt_everything(data_dir, parties[0])
    assert decoded, "the scan must at least find the released aggregate"
    total = sum(u.astype(np.float64) for u in ups)
    assert all(np.max(np.abs(d - total)) < 1e-3 for d in decoded)
    assert not any(_matches(decoded, u.astype(np.float64)) for u in ups)
