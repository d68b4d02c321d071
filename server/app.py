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
accepted}``. Anything unexpected is caught, logged by exception type and where it was raised
(never its message, a traceback, bodies or headers, which may hold tokens or protocol data) and
answered as a 500; the tests fuzz the routes to keep that path unreachable. Every log line of
the server process goes through :class:`secagg_server.logs.SafeFormatter`, which renders an
attached exception the same way, whoever logs it (uvicorn, asyncio, the coordinator).

Transport hardening (bounded request heads and bodies, deadlines, plain HTTP only on the
loopback) is :mod:`secagg_server.transport`; :func:`serve`, the ``secagg-server`` command, runs
the app under it. The process umask is 0077 and the store keeps its files 0600 in a 0700
directory that must be the server user's own (:class:`secagg_server.store.Store`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from secagg.contract import Header, InboxState, ReleasedAggregate, Route
from secagg.errors import InvalidParameter

from .coordinator import Coordinator, not_live
from .live import LiveRound
from .logs import log_config, where_raised
from .modes import Rejected, default_modes
from .store import DataDirError, Principal, Role, RoundRow, RoundStatus, Store
from .transport import InsecureBind, Limits, check_bind, guarded_protocol, read_body

__all__ = ["Limits", "create_app", "serve"]

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
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else \
        {"Connection": "close"} if status == 408 else None  # a too-slow client is cut off
    return JSONResponse(body, status_code=status, headers=headers)


class _Contain:
    """A guard around the routes, inside Starlette's outermost error middleware: an unexpected
    exception becomes a JSON 500 and one log line naming its type and where it was raised. Its
    message and traceback are never logged (they may quote a body or a header), and it does not
    travel on to Starlette's and uvicorn's handlers, which would log the traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            route = getattr(scope.get("route"), "path", "an unknown route")  # the template only
            log.error("unexpected %s at %s on %s %s; answered 500 (its message and traceback are "
                      "not logged: they may hold request data)", type(exc).__name__, where_raised(exc),
                      scope.get("method", "?"), route)
            if not started:
                await _error(500, "internal_error", "the server hit an unexpected condition; the "
                             "round state is unchanged")(scope, receive, send)


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's handler for errors nobody awaited: type and place, not the message."""
    exc = context.get("exception")
    where = f": {type(exc).__name__} at {where_raised(exc)}" if isinstance(exc, BaseException) else ""
    log.error("asyncio: %s%s", str(context.get("message", "unhandled error"))[:200], where)


def create_app(data_dir: str | Path, *, allow_plain: bool = False,
               limits: Limits | None = None) -> FastAPI:
    """The service over the store in ``data_dir`` (created 0700 if missing; an unsafe existing
    one raises :class:`secagg_server.store.DataDirError`). ``limits`` bound slow or large requests."""
    limits = limits or Limits()
    store = Store(data_dir)
    modes = default_modes(allow_plain=allow_plain)
    coord = Coordinator(store, modes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        asyncio.get_running_loop().set_exception_handler(_loop_exception)
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

    app.add_middleware(_Contain)  # unexpected errors end there, not in uvicorn's log

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
        if who.role is not Role.CLIENT or who.client_id is None:
            raise Rejected(403, "client_only", "this route is for client tokens", "a client token")
        return who

    async def operator(who: Principal = Depends(principal)) -> Principal:  # noqa: B008
        if who.role is not Role.OPERATOR:
            raise Rejected(403, "operator_only", "this route is for the federation's operator "
                           "token", "the operator token")
        return who

    def round_row(round_id: int, who: Principal) -> RoundRow:
        """The live row of an open round, else the stored row; 404 across federations, 403 to
        a member left out of it (a culprit of an earlier round learns nothing of it)."""
        live = coord.live.get(round_id)
        row = live.row if live is not None else \
            store.round(round_id) if 0 <= round_id <= MAX_ROUND_ID else None
        if row is None or row.federation_id != who.federation_id:
            raise Rejected(404, "unknown_round", f"federation {who.federation!r} has no round "
                           f"{round_id}")
        if who.role is Role.CLIENT and who.client_id in row.excluded:
            raise Rejected(403, "left_out", f"client {who.client_id} is left out of round "
                           f"{round_id}: it was named as the culprit of an earlier round of "
                           "this federation", "a round it takes part in")
        return row

    def live_round(round_id: int, who: Principal) -> LiveRound:
        row = round_row(round_id, who)
        live = coord.live.get(round_id)
        if live is None:
            raise not_live(round_id, row)
        return live

    @app.get(Route.HEALTH)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "open_rounds": len(coord.live), "modes": sorted(modes)}

    @app.get(Route.ME)
    async def me(who: Principal = Depends(principal)) -> dict[str, Any]:  # noqa: B008
        return {"federation": who.federation, "role": who.role, "client_id": who.client_id,
                "clients": who.num_clients}

    @app.post(Route.ROUNDS, status_code=201)
    async def open_round(request: Request, who: Principal = Depends(operator)) -> dict[str, Any]:  # noqa: B008
        try:
            spec = json.loads(await read_body(request, JSON_LIMIT, limits) or b"{}")
        except (ValueError, RecursionError):
            raise Rejected(400, "invalid_json", "body is not JSON",
                           '{"mode": "masking", "options": {"vector_length": N}}') from None
        example = '{"mode": "masking", "options": {"vector_length": N}}'
        if not isinstance(spec, dict) or not isinstance(spec.get("options", {}), dict):
            raise Rejected(400, "invalid_request", "body must be an object with an 'options' "
                           "object", example)
        mode = spec.get("mode", "masking")
        if not isinstance(mode, str):
            raise Rejected(400, "invalid_request", f"'mode' must be a string, found "
                           f"{type(mode).__name__}", f"one of {sorted(modes)}")
        timeout = spec.get("stage_timeout_s", 60.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                or not 0.1 <= timeout <= 86400:  # NaN fails the comparison too
            raise Rejected(400, "invalid_request", f"stage_timeout_s must be a number of seconds "
                           f"in [0.1, 86400], found {json.dumps(timeout)[:40]}", "e.g. 60")
        live = await coord.open_round(who.federation_id, who.num_clients, mode,
                                      spec.get("options", {}), float(timeout))
        # notes: what the mode warned about the operator's choice (e.g. a small federation's
        # odds of a failed round); an empty list when it had nothing to say
        return {**_round_info(live.row), "notes": list(live.notes)}

    @app.get(Route.NEXT_ROUND)
    async def next_round(after: int = -1, wait: float = WAIT,
                         who: Principal = Depends(client)) -> Response:  # noqa: B008
        assert who.client_id is not None
        row = await coord.wait_next_round(who.federation_id, who.client_id, after, _clamp(wait))
        if row is None:
            return Response(status_code=204)
        return JSONResponse({**_round_info(row), "client_id": who.client_id})

    @app.get(Route.ROUNDS + "/{round_id}")
    async def round_status(round_id: int, who: Principal = Depends(principal)) -> dict[str, Any]:  # noqa: B008
        info = _round_info(round_row(round_id, who))
        live = coord.live.get(round_id)
        if live is not None:
            info.update(stage=live.protocol.stage, stage_no=live.stage_no,
                        awaiting=len(live.awaiting),
                        deadline_in_s=round(max(0.0, live.deadline - time.monotonic()), 3))
            if who.role is Role.OPERATOR:
                info["awaiting_clients"] = sorted(live.awaiting)
        return info

    @app.post(Route.ROUNDS + "/{round_id}/messages", status_code=202)
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
        body = await read_body(request, max(live.protocol.max_message_bytes(),
                                             live.largest_accepted(who.client_id)), limits)
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
        headers = {Header.STATE: state, Header.STAGE_NO: str(stage_no),
                   Header.ACCEPTED_STAGE: stage}
        if state == InboxState.MESSAGE:
            assert data is not None
            return Response(data, media_type="application/octet-stream", headers=headers)
        return JSONResponse({**ack, "state": state}, status_code=202, headers=headers)

    @app.get(Route.ROUNDS + "/{round_id}/inbox")
    async def inbox(round_id: int, after: int = 0, wait: float = WAIT,
                    who: Principal = Depends(client)) -> Response:  # noqa: B008
        assert who.client_id is not None
        row = round_row(round_id, who)
        state, stage_no, data = await coord.wait_inbox(row.id, who.client_id, after, _clamp(wait))
        headers = {Header.STAGE_NO: str(stage_no), Header.STATE: state}
        if state == InboxState.MESSAGE:
            assert data is not None
            return Response(data, media_type="application/octet-stream", headers=headers)
        if state == "dropped":
            return _error(410, "dropped", f"client {who.client_id} missed a stage deadline or "
                          f"was left out of round {round_id}; it can join the next round")
        if state == InboxState.FAILED:
            reason = (store.round(round_id) or row).reason  # ``row`` may be the stale live one
            return _error(409, "round_failed", f"round {round_id} failed: {reason}")
        return Response(status_code=204, headers=headers)

    @app.get(Route.ROUNDS + "/{round_id}/result")
    async def result(round_id: int, who: Principal = Depends(principal)) -> Response:  # noqa: B008
        row = round_row(round_id, who)
        if row.status is not RoundStatus.DONE or row.result_meta is None:
            raise Rejected(409, "no_result", f"round {round_id} is {row.status}; no aggregate released",
                           "a round whose status is 'done'")
        payload = await asyncio.to_thread(store.result, round_id)
        return Response(payload, media_type="application/octet-stream",
                        headers={Header.RESULT: released(row).to_header()})

    @app.post(Route.ROUNDS + "/{round_id}/cancel")
    async def cancel(round_id: int, who: Principal = Depends(operator)) -> dict[str, Any]:  # noqa: B008
        await coord.cancel(live_round(round_id, who))
        return _round_info(store.round(round_id) or round_row(round_id, who))

    @app.get(Route.ROUNDS)
    async def list_rounds(who: Principal = Depends(operator)) -> dict[str, Any]:  # noqa: B008
        rows = [r for r in store.rounds() if r.federation_id == who.federation_id]
        out = []
        for row in sorted(rows, key=lambda r: r.index):
            live = coord.live.get(row.id)
            info = _round_info(live.row if live is not None else row)
            info.pop("config", None)
            info.pop("result", None)
            if live is not None:
                info.update(stage=live.protocol.stage, stage_no=live.stage_no,
                            awaiting_clients=sorted(live.awaiting))
            out.append(info)
        return {"rounds": out}

    return app


def released(row: RoundRow) -> ReleasedAggregate:
    """The stored result metadata of a done round as the contract's type (a store written
    before the contract, which kept ``kind`` instead of ``mode``, is read too)."""
    meta = dict(row.result_meta or {})
    if "mode" not in meta:  # the older form: {"kind", "survivors", ...}
        meta = {"mode": row.mode, "round": row.id, **{k: v for k, v in meta.items()
                                                     if k != "kind"}}
    try:
        return ReleasedAggregate.from_header(json.dumps(meta))
    except InvalidParameter as exc:
        raise Rejected(500, "corrupt_result", f"round {row.id}'s stored result is unreadable: "
                       f"{exc}") from None


def _round_info(row: RoundRow) -> dict[str, Any]:
    info: dict[str, Any] = {"round_id": row.id, "index": row.index, "mode": row.mode,
                            "status": row.status, "config": row.config,
                            "stage_timeout_s": row.stage_timeout}
    if row.reason:
        info["reason"] = row.reason
    if row.excluded:  # culprits of earlier rounds, left out of this one
        info["excluded_culprits"] = list(row.excluded)
    if row.status is RoundStatus.FAILED:
        if row.result_meta and "culprit" in row.result_meta:
            info["culprit"] = row.result_meta["culprit"]  # left out of later rounds
    elif row.result_meta:
        info["result"] = dict(row.result_meta)
    return info


def _clamp(wait: float) -> float:
    return min(max(wait, 0.0), MAX_WAIT_S)


# ---- the process: bind checks, logging, uvicorn --------------------------------------------

def serve(data_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8443,
          tls_cert: str | None = None, tls_key: str | None = None, insecure_http: bool = False,
          allow_plain: bool = False, log_level: str = "warning",
          limits: Limits | None = None) -> int:
    """Run the service until stopped; returns the process exit code (2: refused to start)."""
    import uvicorn

    def refuse(why: object) -> int:
        print(f"secagg-server: error: {why}", file=sys.stderr, flush=True)
        return 2

    if bool(tls_cert) != bool(tls_key):
        return refuse("--tls-cert and --tls-key go together")
    try:
        warning = check_bind(host, tls=bool(tls_cert), insecure_http=insecure_http)
        limits = limits or Limits()
    except (InsecureBind, ValueError) as exc:
        return refuse(exc)
    os.umask(0o077)  # whatever this process creates is its owner's alone
    logging.config.dictConfig(log_config(log_level))
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        app = create_app(data_dir, allow_plain=allow_plain, limits=limits)
    except DataDirError as exc:
        return refuse(exc)
    uvicorn.run(app, host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                http=guarded_protocol(limits), ws="none", lifespan="on",
                h11_max_incomplete_event_size=limits.max_header_bytes,
                timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]
                log_config=log_config(log_level), log_level=log_level, access_log=False)
    return 0
