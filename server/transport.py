"""Transport hardening: what one connection may cost the server, and where it may listen.

:func:`secagg_server.app.serve` (the ``secagg-server`` command) runs the service with these; see
:class:`Limits` for the bounds.

* Plain HTTP only on a loopback address, unless ``--insecure-http`` (then one loud warning line
  on stderr at start); anywhere else it is ``--tls-cert/--tls-key`` or a refusal to start
  (:func:`check_bind`).
* uvicorn runs its h11 protocol (pure Python, with a bound on the request head) under
  :class:`GuardedH11Protocol`: a request head over ``max_header_bytes`` gets 431, one that takes
  longer than ``header_timeout_s`` from its first byte (or from the connection's start) gets
  408, and either way the connection is closed. Idle kept-alive connections close after
  ``keep_alive_s``.
* A request body must start within ``body_timeout_s`` and then keep up ``body_min_rate`` bytes a
  second on average (:func:`read_body`), else 408 and the connection is closed; a body the
  server answered without reading (an early 401/413) may go on arriving for ``body_timeout_s``.
  A slow client holds one connection for a bounded time and never the round: stage deadlines
  and the other clients go on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
from starlette.requests import ClientDisconnect, Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from .modes import Rejected

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

__all__ = ["GuardedH11Protocol", "InsecureBind", "Limits", "check_bind", "guarded_protocol",
           "is_loopback", "read_body"]


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


async def read_body(request: Request, limit: int, limits: Limits) -> bytes:
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
