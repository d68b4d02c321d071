"""Abuse against a live round: every bad request gets a clear JSON 4xx, never a 5xx, the server
stays up, and the honest clients' round still completes with the right aggregate."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from secagg.masking import wire
from tests.server.conftest import (
    Federation,
    HonestClients,
    N,
    expect_error,
    make_federation,
    tolerance,
    updates,
)
from tests.server.manual import OCTET, ManualClient


def test_abuse_gets_clear_4xx_and_honest_clients_complete(fed: Federation) -> None:
    length = 2000
    ups = updates(N, length, seed=5)
    clients = HonestClients(fed, list(range(1, N)), ups)
    info = fed.open_round(length, timeout=20.0)
    rid = info["round_id"]
    me = ManualClient(fed, 0, info, ups[0])
    url = f"/v1/rounds/{rid}/messages"
    base = fed.server.url

    # authentication and authorisation
    expect_error(httpx.post(base + url, content=b"x", headers=OCTET), 401, "missing_token")
    expect_error(httpx.post(base + url, content=b"x", headers={**OCTET, "Authorization": "Bearer nope"}),
         401, "invalid_token")
    expect_error(httpx.get(base + "/v1/me", headers={"Authorization": "Basic abc"}), 401)
    with fed.op() as op:
        expect_error(op.post(url, content=b"x", headers=OCTET), 403, "client_only")
    with fed.as_client(0) as c:
        expect_error(c.post("/v1/rounds", json={"options": {"vector_length": 3}}), 403, "operator_only")
        # unknown round, malformed round id, unknown route
        expect_error(c.post("/v1/rounds/999/messages", content=b"x", headers=OCTET), 404, "unknown_round")
        expect_error(c.get("/v1/rounds/999/inbox"), 404, "unknown_round")
        expect_error(c.get("/v1/rounds/999/result"), 404)
        expect_error(c.get("/v1/rounds/abc"), 422)
        expect_error(c.get("/nope"), 404)
        expect_error(c.post(url, content=b"x", headers={"Content-Type": "application/json"}), 415)
        # garbage, truncated, oversized
        expect_error(c.post(url, content=b"\x00" * 100, headers=OCTET), 400, "invalid_message")
        expect_error(c.post(url, content=b"", headers=OCTET), 400, "invalid_message")
        advert = wire.encode(me.session.start())
        expect_error(c.post(url, content=advert[:-7], headers=OCTET), 400, "invalid_message")
        expect_error(c.post(url, content=advert + b"\x00", headers=OCTET), 400, "invalid_message")
        expect_error(c.post(url, content=b"\x00" * 100_000, headers=OCTET), 413, "body_too_large")
    # a client posting as another
    with fed.as_client(1) as other:
        expect_error(other.post(url, content=advert, headers=OCTET), 403, "wrong_sender")
    # operator can open only known modes
    with fed.op() as op:
        body = expect_error(op.post("/v1/rounds", json={"mode": "nope", "options": {}}), 400,
                    "mode_unavailable")
        assert "nope" in body["detail"]
        expect_error(op.post("/v1/rounds", content=b"{not json", headers={"Content-Type": "x"}), 400)
        expect_error(op.post("/v1/rounds", json={"mode": "masking", "options": {"nope": 1}}), 400)
        expect_error(op.post("/v1/rounds", json={"mode": "plain", "options": {"vector_length": 3}}), 400)
    # now the real advert is accepted once; the replay is refused
    me.send(advert)
    with fed.as_client(0) as c:
        expect_error(c.post(url, content=advert, headers=OCTET), 409, "replayed")
    # random junk never yields a 5xx
    rng = np.random.default_rng(0)
    with fed.as_client(2) as c:
        for _ in range(30):
            junk = rng.bytes(int(rng.integers(0, 400)))
            if rng.random() < 0.5 and len(junk) > 60:
                junk = advert[:50] + junk  # a valid header, a garbage body
            resp = c.post(url, content=junk, headers=OCTET)
            assert 400 <= resp.status_code < 500, resp.text
    assert httpx.get(base + "/healthz").status_code == 200
    for _ in range(4):  # shares, masked input, consistency signature, unmask reply
        me.step()
    results = clients.join()
    want = np.sum(np.stack(ups).astype(np.float64), axis=0)
    for res in results.values():
        assert res.survivors == tuple(range(N))
        assert np.max(np.abs(res.weighted_sum - want)) <= tolerance(N)
    # a message after the end is refused too
    with fed.as_client(0) as c:
        expect_error(c.post(url, content=advert, headers=OCTET), 409)


@pytest.mark.parametrize("path", ["/v1/me", "/v1/rounds/next?wait=0", "/v1/rounds/1"])
def test_tokens_from_another_federation_do_not_cross(fed: Federation, tmp_path, path: str) -> None:  # type: ignore[no-untyped-def]
    other = make_federation(fed.server.data_dir, "other", 3)  # while the server runs
    info = fed.open_round(10)
    time.sleep(0.05)
    h = {"Authorization": f"Bearer {other['client_tokens'][0]}"}
    resp = httpx.get(fed.server.url + path.replace("/1", f"/{info['round_id']}"), headers=h,
                     timeout=10)
    if path == "/v1/me":
        assert resp.json()["federation"] == "other"
    elif path.startswith("/v1/rounds/next"):
        assert resp.status_code == 204  # the other federation's round is not offered
    else:
        expect_error(resp, 404, "unknown_round")


def test_retry_of_an_accepted_message_after_completion_still_gets_the_result(
    fed: Federation,
) -> None:
    """An ack lost in a crash: the client's retry arrives after the round completed. The refusal
    must not make the client believe it dropped: the inbox says it is in the result."""
    length = 500
    ups = updates(N, length, seed=8)
    clients = HonestClients(fed, list(range(N - 1)), ups)
    info = fed.open_round(length, timeout=20.0)
    last = ManualClient(fed, N - 1, info, ups[N - 1])
    last.advertise()
    for _ in range(4):  # shares, masked input, consistency, unmask reply: the last completes it
        last.step()
    clients.join()
    rid = info["round_id"]
    assert "result" in fed.status(rid)  # the round completed and released
    expect_error(last.post(last.sent[-1]), 409, "round_done")
    assert last.inbox(wait=1.0).headers["X-Secagg-State"] == "done"
    with fed.runtime(N - 1) as rt:
        rt._post(rid, last.sent[-1])  # the runtime's retry path: no Dropped raised
