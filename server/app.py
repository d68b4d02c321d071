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
the server process goes through :class:`SafeFormatter`, which renders an attached exception the
same way, whoever logs it (uvicorn, asyncio, the coordinator).

Transport hardening (:func:`serve`, the ``secagg-server`` command, runs it; see :class:`Limits`):

* Plain HTTP only on a loopback address, unless ``--insecure-http`` (then one loud warning line
  on stderr at start); anywhere else it is ``--tls-cert/--tls-key`` or a refusal to start.
* uvicorn runs its h11 protocol (pure Python, with a bound on the request head) under
  :class:`GuardedH11Protocol`: a request head over ``max_header_bytes`` gets 431, one that takes
  longer than ``header_timeout_s`` from its first byte (or from the connection's start) gets
  408, and either way the connection is closed. Idle kept-alive connections close after
  ``keep_alive_s``.
* A request body must start within ``body_timeout_s`` and then keep up ``body_min_rate`` bytes a
  second on average (:func:`_read_body`), else 408 and the connection is closed; a body the
  server answered without reading (an early 401/413) may go on arriving for ``body_timeout_s``.
  A slow client holds one connection for a bounded time and never the round: stage deadlines
  and the other clients go on.
* The process umask is 0077 and the store keeps its files 0600 in a 0700 directory that must be
  the server user's own (:class:`secagg_server.store.Store`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import logging.config
import math
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import h11
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .coordinator import Coordinator, LiveRound
from .modes import Rejected, default_modes
from .store import DataDirError, Principal, RoundRow, Store

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

__all__ = ["GuardedH11Protocol", "InsecureBind", "Limits", "SafeFormatter", "check_bind",
           "create_app", "serve"]

log = logging.getLogger("secagg.server")
JSON_LIMIT = 64 * 1024
MAX_WAIT_S = 30.0
MAX_ROUND_ID = (1 << 63) - 1  # SQLite INTEGER
#: Long-poll seconds; non-finite values are refused (422) instead of holding a request forever.
WAIT = Query(20.0, allow_inf_nan=False)
POST_WAIT = Query(0.0, allow_inf_nan=False)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one connection may cost the server (slow-loris and oversized requests).

    ``max_header_bytes``: the request line and headers together (431 above it).
    ``header_timeout_s``: the whole request head must arrive within this, counted from its first
    byte (from the connection's start for the first request), else 408 and the connection closes.
    ``keep_alive_s``: an idle kept-alive connection is closed after this.
    ``body_timeout_s`` and ``body_min_rate``: a request body must start within
    ``body_timeout_s`` and then arrive at ``body_min_rate`` bytes a second on average (by
    ``body_timeout_s + n / body_min_rate`` seconds more than ``n`` bytes are in), else 408 and
    the connection closes. At the defaults a 4 MB masked vector may take up to ~4 minutes.
    """

    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    body_timeout_s: float = 10.0
    body_min_rate: int = 16 * 1024

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "keep_alive_s", "body_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 3600):
                raise ValueError(f"{name} must be a number of seconds in (0, 3600], found {value!r}")
        if not 1024 <= self.max_header_bytes <= 1 << 20:
            raise ValueError(f"max_header_bytes must be in [1024, 1048576], found "
                             f"{self.max_header_bytes!r}")
        if not 1 <= self.body_min_rate <= 1 << 30:
            raise ValueError(f"body_min_rate must be in [1, 2^30] bytes/s, found "
                             f"{self.body_min_rate!r}")


def _error(status: int, code: str, detail: str, expected: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if expected is not None:
        body["expected"] = expected
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else \
        {"Connection": "close"} if status == 408 else None  # a too-slow client is cut off
    return JSONResponse(body, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int, limits: Limits) -> bytes:
    """The request body, refusing (413) anything over ``limit`` before buffering it all, and
    (408) a body that arrives slower than ``limits`` allow."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(400, "bad_content_length", "Content-Length is not a number")
        if int(declared) > limit:
            raise Rejected(413, "body_too_large", f"body is {declared} bytes; the limit here is "
                           f"{limit}", f"at most {limit} bytes")
    loop = asyncio.get_running_loop()
    start = loop.time()
    stream = request.stream()
    chunks: list[bytes] = []
    size = 0
    while True:
        # more than ``size`` bytes are due by start + grace + size / rate
        due = start + limits.body_timeout_s + size / limits.body_min_rate
        try:
            async with asyncio.timeout_at(due):
                chunk = await anext(stream)
        except StopAsyncIteration:
            break
        except TimeoutError:
            of = f" of {declared}" if declared is not None else ""
            raise Rejected(408, "body_timeout", f"the request body arrived too slowly: {size}{of} "
                           f"bytes in {loop.time() - start:.1f} s; this server needs a body to "
                           f"start within {limits.body_timeout_s:g} s and then to keep up "
                           f"{limits.body_min_rate} bytes/s on average", "the whole body at "
                           "once (retry on a faster link, or ask the operator to lower "
                           "--min-body-rate)") from None
        except ClientDisconnect:
            raise Rejected(400, "client_disconnected", f"the client went away after {size} "
                           "bytes of the body") from None
        size += len(chunk)
        if size > limit:
            raise Rejected(413, "body_too_large", f"body exceeds the limit of {limit} bytes",
                           f"at most {limit} bytes")
        if chunk:
            chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one copy of a large body


def _where(exc: BaseException) -> str:
    """Where ``exc`` was raised (file:line in function): a reason that holds no data."""
    tb = exc.__traceback__
    if tb is None:
        return "an unknown place"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{'/'.join(Path(code.co_filename).parts[-2:])}:{tb.tb_lineno} in {code.co_name}"


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
                      "not logged: they may hold request data)", type(exc).__name__, _where(exc),
                      scope.get("method", "?"), route)
            if not started:
                await _error(500, "internal_error", "the server hit an unexpected condition; the "
                             "round state is unchanged")(scope, receive, send)


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's handler for errors nobody awaited: type and place, not the message."""
    exc = context.get("exception")
    where = f": {type(exc).__name__} at {_where(exc)}" if isinstance(exc, BaseException) else ""
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
            spec = json.loads(await _read_body(request, JSON_LIMIT, limits) or b"{}")
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


# ---- the process: bind checks, logging, uvicorn --------------------------------------------


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines uvicorn itself lacks (it has none on a request
    head, and none on a fresh connection that never sends a byte).

    Phases of a connection, each with at most one timer: ``head`` (waiting for a request head:
    ``header_timeout_s``, counted from the connection's start or the head's first byte), ``app``
    (the route runs and bounds its own body reads: no timer), ``drain`` (the response is sent
    but the request body is still arriving, and is thrown away: ``body_timeout_s``), and idle
    keep-alive (uvicorn's own ``timeout_keep_alive``). The limits are a class attribute: see
    :func:`guarded_protocol`."""

    limits = Limits()

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._enter("head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # reading a request head
            if self._phase is None:
                self._enter("head")  # its first byte: the head's deadline starts now
            # h11 bounds only a head still incomplete when a read ends; one that comes whole in
            # a single read could be as large as that read, so the bound is checked here
            head = self.conn.trailing_data[0] + data
            end = head.find(b"\r\n\r\n")
            if (len(head) if end < 0 else end + 4) > self.limits.max_header_bytes:
                self._refuse(431, "Request Header Fields Too Large", "header_too_large",
                             f"the request line and headers exceed {self.limits.max_header_bytes}"
                             " bytes", f"a request head of at most {self.limits.max_header_bytes}"
                             " bytes")
                return
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def _refuse(self, status: int, reason: str, code: str, detail: str, expected: str) -> None:
        """Answer a request whose head never completed, and close (h11 has no request to answer
        through, so the bytes are written here)."""
        body = json.dumps({"error": code, "detail": detail, "expected": expected}).encode()
        self.transport.write(f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                             f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
                             .encode() + body)
        self._enter(None)
        self.transport.close()

    def _follow(self) -> None:
        """The phase that the connection's state now calls for."""
        if self.transport is None or self.transport.is_closing():
            self._enter(None)
            return
        theirs = self.conn.their_state
        answered = self.cycle is None or self.cycle.response_complete
        if theirs is h11.IDLE:
            # a head being read keeps its deadline; bytes of a pipelined next head start one, and
            # so does an idle connection that uvicorn's keep-alive timer does not watch (it arms
            # that only when a response completes, not when a drained body ends)
            idle_unwatched = self.timeout_keep_alive_task is None
            self._enter("head" if self._phase == "head" or idle_unwatched
                        or self.conn.trailing_data[0] else None)
        elif answered and self.cycle is not None and theirs is h11.SEND_BODY:
            self._enter("drain")
        else:
            self._enter("app")

    def _enter(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = phase
        if phase == "head":
            self._timer = self.loop.call_later(self.limits.header_timeout_s, self._expired)
        elif phase == "drain":
            self._timer = self.loop.call_later(self.limits.body_timeout_s, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._phase == "head" and self.conn.their_state is h11.IDLE \
                and self.conn.trailing_data[0]:  # part of a head came, the rest is late
            self._refuse(408, "Request Timeout", "header_timeout", "the request line and headers "
                         f"did not all arrive within {self.limits.header_timeout_s:g} s",
                         "the whole request head at once")
            return
        self._phase = None  # an idle connection, or a body nobody reads any more: just close
        self.transport.close()


def guarded_protocol(limits: Limits) -> type[GuardedH11Protocol]:
    """:class:`GuardedH11Protocol` bound to ``limits`` (uvicorn builds protocols itself)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


class SafeFormatter(logging.Formatter):
    """Renders an attached exception as its type and where it was raised, never its message or
    traceback: those may quote request bodies, headers or option values."""

    def formatException(
        self, ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        exc = ei[1]
        if exc is None:
            return ""
        return (f"({type(exc).__name__} at {_where(exc)}; message and traceback withheld: they "
                "may hold request data)")

    def formatStack(self, stack_info: str) -> str:
        return "(stack withheld)"


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_config(level: str) -> dict[str, Any]:
    """One stderr handler through :class:`SafeFormatter` for the whole process, uvicorn's
    loggers included (its access log stays off: request lines are not logged)."""
    level = level.upper()
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"safe": {"()": SafeFormatter, "fmt": LOG_FORMAT}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "safe",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {name: {"handlers": [], "level": level, "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")},
    }


class InsecureBind(Exception):
    """Plain HTTP on an address off the loopback, without ``--insecure-http``."""


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1 (bracketed or IPv4-mapped too); nothing that needs a
    resolver's word for it."""
    name = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    if name == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def check_bind(host: str, *, tls: bool, insecure_http: bool) -> str | None:
    """Refuse (:class:`InsecureBind`) plain HTTP off the loopback unless ``insecure_http``;
    returns the warning line to print when it is allowed that way, else None."""
    if tls:
        if insecure_http:
            raise InsecureBind("--insecure-http and --tls-cert/--tls-key contradict each other: "
                               "with a certificate the server speaks HTTPS only; drop "
                               "--insecure-http")
        return None
    if is_loopback(host):
        return None
    shown = host or "every interface"
    if not insecure_http:
        raise InsecureBind(
            f"refusing to serve plain HTTP on {shown!r}, which is not a loopback address: "
            "bearer tokens and protocol messages would cross the network unencrypted. Pass "
            "--tls-cert FILE --tls-key FILE to serve HTTPS, or --insecure-http if something else "
            "encrypts the traffic (a TLS-terminating proxy, a VPN)")
    return (f"secagg-server: WARNING: serving plain HTTP on {shown} (--insecure-http): bearer "
            "tokens and protocol messages travel UNENCRYPTED; use --tls-cert/--tls-key unless a "
            "TLS-terminating proxy or an encrypted network carries every byte")


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
