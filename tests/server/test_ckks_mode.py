"""CKKS rounds over a real server process on loopback: the released mean, dropouts, a missing
dealer, abuse of the message route, crash recovery, and an attack on the server's stored bytes.

The server only relays the clients' key ceremony and sums ciphertexts; the clients decrypt the
released (encrypted) aggregate themselves. Runtime clients run in threads of this process
(``clients.runtime.RuntimeClient``); where a test needs to hold a round at a chosen stage or read
a client's key, it drives the runtime's own CKKS participant by hand (:class:`ManualCKKS`).
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from clients.runtime import _CKKS, OCTET, Dropped, RoundInfo, RoundResult, RuntimeClient
from secagg.ckks.layout import Layout
from secagg.ckks.messages import Kind
from secagg.ckks.wire import MAGIC, frame, u32
from secagg.errors import InvalidParameter
from secagg.hazmat.seal_codec import CiphertextRejected
from tests.server.conftest import Federation, expect_error, start_federation, updates, wait_stage

N3 = 3
LENGTH = 2000


@pytest.fixture
def fed3(tmp_path: Path) -> Iterator[Federation]:
    f = start_federation(tmp_path, n=N3)
    try:
        yield f
    finally:
        f.server.kill()


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
            with RuntimeClient(fed.server.url, fed.tokens[i], poll_wait=2.0, retry_for=60.0) as rt:
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
                           update, weight)
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
        meta = json.loads(resp.headers["X-Secagg-Result"])
        return self.party.decode(meta, resp.content)

    def secrets(self) -> list[bytes]:
        """This client's secret bytes: the round key's seed and its X25519 private key."""
        client = self.party.client
        seed = client._keyed().expose_secret_seed_for_export().expose_secret_bytes()
        box = client._box.export_private_bytes_for_sharing().expose_secret_bytes()
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
    assert "dealer (client 0) sent no key advert" in status["reason"], status

    # round 1: the dealer (client 1) advertises, then never deals
    clients = Clients(fed3, [0, 2], ups)
    info = open_ckks(fed3, timeout=1.0)
    assert info["config"]["dealer"] == 1
    ManualCKKS(fed3, 1, info, ups[1]).advertise()
    clients.wait()
    assert set(clients.errors) == {0, 2}
    status = fed3.status(info["round_id"])
    assert status["status"] == "failed"
    assert "dealer (client 1) sent no key distribution" in status["reason"], status
    assert httpx.get(fed3.server.url + "/healthz").status_code == 200


def test_the_runtime_checks_its_input_against_the_round_before_sending_anything() -> None:
    from server.modes import MODES

    config = MODES["ckks"].make_config(N3, 0, {"vector_length": 10, "weight_bound": 2})
    info = RoundInfo(1, 0, "ckks", config, 1)
    with pytest.raises(InvalidParameter, match="weight_bound=2"):
        _CKKS(info, np.zeros(10, np.float32), 3)
    with pytest.raises(InvalidParameter, match="shape"):
        _CKKS(info, np.zeros(11, np.float32), 1)
    with pytest.raises(InvalidParameter, match="digest"):
        _CKKS(RoundInfo(1, 0, "ckks", {**config, "min_clients": 3}, 1), np.zeros(10, np.float32), 1)
    party = _CKKS(info, np.full(10, 5.0, np.float32), 2)  # clipped to value_bound, like masking
    assert float(np.max(party.update)) == 1.0


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
    assert "authentication failed" in body["detail"]
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
    session = party.party.client._session
    key = party.party.client._keyed().seal
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
