"""The HTTP face of the aggregation server (FastAPI).

Every route but ``/healthz`` needs ``Authorization: Bearer <token>``. Client tokens act only as
their own enrolment id (a message whose sender field names someone else is refused with 403);
the operator token of a federation opens rounds and reads their status. Protocol messages travel
as raw ``application/octet-stream`` bodies, capped at the current stage's largest valid message
(413 above it, checked on Content-Length before reading and again while streaming).

A message post is acknowledged (202 ``{"accepted": true, "stage": ...}``) once it is on disk.
With ``?wait=S`` the same request then waits, like the inbox, for the next message of the round
to this client: 200 with its bytes and the inbox's ``X-Secagg-State``/``X-Secagg-Stage-No``
headers, or, if none comes within S seconds or the round ended, 202 with the ack and the state
(``waiting``, ``done``, ``dropped``, ``failed``; the inbox gives the details). That saves a stage
one request per client; the inbox alone still works.

Every error is JSON: ``{"error": code, "detail": what was wrong, "expected": what would be
accepted}``. Anything unexpected is caught, logged by type only (never bodies or headers, which
may hold tokens) and answered as a 500; the tests fuzz the routes to keep that path unreachable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.coordinator import Coordinator, LiveRound
from server.modes import MODES, PLAIN_MODE, Rejected
from server.store import Principal, RoundRow, Store

__all__ = ["create_app"]

log = logging.getLogger("secagg.server")
JSON_LIMIT = 64 * 1024
MAX_WAIT_S = 30.0
MAX_ROUND_ID = (1 << 63) - 1  # SQLite INTEGER
#: Long-poll seconds; non-finite values are refused (422) instead of holding a request forever.
WAIT = Query(20.0, allow_inf_nan=False)
POST_WAIT = Query(0.0, allow_inf_nan=False)


def _error(status: int, code: str, detail: str, expected: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if expected is not None:
        body["expected"] = expected
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` before buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(400, "bad_content_length", "Content-Length is not a number")
        if int(declared) > limit:
            raise Rejected(413, "body_too_large", f"body is {declared} bytes; the limit here is "
                           f"{limit}", f"at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, "body_too_large", f"body exceeds the limit of {limit} bytes",
                           f"at most {limit} bytes")
        if chunk:
            chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one copy of a large body


def create_app(data_dir: str | Path, *, allow_plain: bool = False) -> FastAPI:
    """The service over the store in ``data_dir`` (created if missing)."""
    store = Store(data_dir)
    modes = dict(MODES)
    if allow_plain:
        modes[PLAIN_MODE.name] = PLAIN_MODE
    coord = Coordinator(store, modes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await coord.start()
        yield
        await coord.stop()
        store.close()

    app = FastAPI(title="secagg aggregation server", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.coordinator = coord

    @app.exception_handler(Rejected)
    async def _rejected(request: Request, exc: Rejected) -> JSONResponse:
        return _error(exc.status, exc.code, exc.detail, exc.expected)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return _error(500, "internal_error", "the server hit an unexpected condition; the round "
                      "state is unchanged")

    # The dependencies are coroutines: a plain ``def`` would cost each request a hop to a worker
    # thread (or two), and the token check is one indexed read on the store's read connection.
    async def principal(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Rejected(401, "missing_token", "no bearer token", "Authorization: Bearer <token>")
        who = store.authenticate(token.strip())
        if who is None:
            raise Rejected(401, "invalid_token", "the bearer token is not valid")
        return who

    async def client(who: Principal = Depends(principal)) -> Principal:  # noqa: B008
        if who.role != "client" or who.client_id is None:
            raise Rejected(403, "client_only", "this route is for client tokens", "a client token")
        return who

    async def operator(who: Principal = Depends(principal)) -> Principal:  # noqa: B008
        if who.role != "operator":
            raise Rejected(403, "operator_only", "this route is for the federation's operator "
                           "token", "the operator token")
        return who

    def round_row(round_id: int, who: Principal) -> RoundRow:
        """The live row of an open round, else the stored row; 404 across federations."""
        live = coord.live.get(round_id)
        row = live.row if live is not None else \
            store.round(round_id) if 0 <= round_id <= MAX_ROUND_ID else None
        if row is None or row.federation_id != who.federation_id:
            raise Rejected(404, "unknown_round", f"federation {who.federation!r} has no round "
                           f"{round_id}")
        return row

    def live_round(round_id: int, who: Principal) -> LiveRound:
        row = round_row(round_id, who)
        live = coord.live.get(round_id)
        if live is None:
            raise Rejected(409, f"round_{row.status}", f"round {round_id} is {row.status}"
                           + (f": {row.reason}" if row.reason else ""))
        return live

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "open_rounds": len(coord.live), "modes": sorted(modes)}

    @app.get("/v1/me")
    async def me(who: Principal = Depends(principal)) -> dict[str, Any]:  # noqa: B008
        return {"federation": who.federation, "role": who.role, "client_id": who.client_id,
                "clients": who.num_clients}

    @app.post("/v1/rounds", status_code=201)
    async def open_round(request: Request, who: Principal = Depends(operator)) -> dict[str, Any]:  # noqa: B008
        try:
            spec = json.loads(await _read_body(request, JSON_LIMIT) or b"{}")
        except (ValueError, RecursionError):
            raise Rejected(400, "invalid_json", "body is not JSON",
                           '{"mode": "masking", "options": {"vector_length": N}}') from None
        if not isinstance(spec, dict) or not isinstance(spec.get("options", {}), dict):
            raise Rejected(400, "invalid_request", "body must be an object with an 'options' object")
        timeout = spec.get("stage_timeout_s", 60.0)
        if not isinstance(timeout, int | float) or not 0.1 <= timeout <= 86400:
            raise Rejected(400, "invalid_request", "stage_timeout_s must be a number in [0.1, 86400]")
        row = await coord.open_round(who.federation_id, who.num_clients,
                                     str(spec.get("mode", "masking")), spec.get("options", {}),
                                     float(timeout))
        return _round_info(row)

    @app.get("/v1/rounds/next")
    async def next_round(after: int = -1, wait: float = WAIT,
                         who: Principal = Depends(client)) -> Response:  # noqa: B008
        assert who.client_id is not None
        row = await coord.wait_next_round(who.federation_id, who.client_id, after, _clamp(wait))
        if row is None:
            return Response(status_code=204)
        return JSONResponse({**_round_info(row), "client_id": who.client_id})

    @app.get("/v1/rounds/{round_id}")
    async def round_status(round_id: int, who: Principal = Depends(principal)) -> dict[str, Any]:  # noqa: B008
        info = _round_info(round_row(round_id, who))
        live = coord.live.get(round_id)
        if live is not None:
            info.update(stage=live.protocol.stage, stage_no=live.stage_no,
                        awaiting=len(live.protocol.expected),
                        deadline_in_s=round(max(0.0, live.deadline - time.monotonic()), 3))
            if who.role == "operator":
                info["awaiting_clients"] = sorted(live.protocol.expected)
        return info

    @app.post("/v1/rounds/{round_id}/messages", status_code=202)
    async def post_message(round_id: int, request: Request, wait: float = POST_WAIT,
                           who: Principal = Depends(client)) -> Response:  # noqa: B008
        assert who.client_id is not None
        live = live_round(round_id, who)
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() != "application/octet-stream":
            raise Rejected(415, "wrong_content_type", f"content type is {ctype or 'missing'}",
                           "application/octet-stream")
        # The stage's limit, or more for a possible retry of an earlier, larger message (its ack
        # lost, the stage moved on): that one must get "replayed" (409), not "too large"; the
        # coordinator applies the stage's limit after recognising retries.
        body = await _read_body(request, max(live.protocol.max_message_bytes(),
                                             live.largest_accepted(who.client_id)))
        claimed = live.protocol.claimed_sender(body)
        if claimed is not None and claimed != who.client_id:
            raise Rejected(403, "wrong_sender", f"the message says it is from client {claimed}; "
                           f"this token is client {who.client_id}", f"sender {who.client_id}")
        after = live.stage_no  # the stage this message answers
        stage = await coord.submit(live, who.client_id, body)
        ack = {"accepted": True, "stage": stage}
        if wait <= 0:
            return JSONResponse(ack, status_code=202)
        # ``wait``: also wait, like the inbox with after=<that stage>, for what comes next
        state, stage_no, data = await coord.wait_inbox(round_id, who.client_id, after, _clamp(wait))
        headers = {"X-Secagg-State": state, "X-Secagg-Stage-No": str(stage_no),
                   "X-Secagg-Accepted-Stage": stage}
        if state == "message":
            assert data is not None
            return Response(data, media_type="application/octet-stream", headers=headers)
        return JSONResponse({**ack, "state": state}, status_code=202, headers=headers)

    @app.get("/v1/rounds/{round_id}/inbox")
    async def inbox(round_id: int, after: int = 0, wait: float = WAIT,
                    who: Principal = Depends(client)) -> Response:  # noqa: B008
        assert who.client_id is not None
        row = round_row(round_id, who)
        state, stage_no, data = await coord.wait_inbox(row.id, who.client_id, after, _clamp(wait))
        headers = {"X-Secagg-Stage-No": str(stage_no), "X-Secagg-State": state}
        if state == "message":
            assert data is not None
            return Response(data, media_type="application/octet-stream", headers=headers)
        if state == "dropped":
            return _error(410, "dropped", f"client {who.client_id} missed a stage deadline or "
                          f"was left out of round {round_id}; it can join the next round")
        if state == "failed":
            reason = (store.round(round_id) or row).reason  # ``row`` may be the stale live one
            return _error(409, "round_failed", f"round {round_id} failed: {reason}")
        return Response(status_code=204, headers=headers)

    @app.get("/v1/rounds/{round_id}/result")
    async def result(round_id: int, who: Principal = Depends(principal)) -> Response:  # noqa: B008
        row = round_row(round_id, who)
        if row.status != "done" or row.result_meta is None:
            raise Rejected(409, "no_result", f"round {round_id} is {row.status}; no aggregate released",
                           "a round whose status is 'done'")
        payload = await asyncio.to_thread(store.result, round_id)
        return Response(payload, media_type="application/octet-stream",
                        headers={"X-Secagg-Result": json.dumps(row.result_meta)})

    return app


def _round_info(row: RoundRow) -> dict[str, Any]:
    info: dict[str, Any] = {"round_id": row.id, "index": row.index, "mode": row.mode,
                            "status": row.status, "config": row.config,
                            "stage_timeout_s": row.stage_timeout}
    if row.reason:
        info["reason"] = row.reason
    if row.result_meta:
        info["result"] = dict(row.result_meta)
    return info


def _clamp(wait: float) -> float:
    return min(max(wait, 0.0), MAX_WAIT_S)
