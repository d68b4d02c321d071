"""What went wrong between this client and the server, in words a user can act on.

:func:`check_server_url` refuses a URL that cannot work before anything is sent (no scheme, a
scheme other than http/https, no host). :func:`diagnose` turns a failed request into a
:class:`Problem`: what failed (connection refused, a host name that does not resolve, an
untrusted certificate, plain HTTP spoken to an HTTPS server or the reverse, ...), what to try, and
whether retrying can help. The runtime (:mod:`secagg_clients.runtime`) retries only what can
heal (a server restarting mid-round, a timeout, a 5xx) and raises :class:`ServerUnreachable`
for the rest, at once: a server that is simply not there at startup costs a second, not a minute.

:func:`tls_verify` is :func:`secagg.tls.tls_verify` naming ``--ca-cert``; the operator's HTTP
client (``secagg_server.operator.tls_verify``) uses the same function: the two sides share no code
outside :mod:`secagg`.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass

import httpx

from secagg.errors import InvalidParameter
from secagg.tls import tls_verify as _tls_verify

__all__ = ["Problem", "ServerRefused", "ServerUnreachable", "check_server_url", "diagnose",
           "tls_verify"]

#: OpenSSL's words for "the other end does not speak TLS" (versions differ)
_NOT_TLS = ("WRONG_VERSION_NUMBER", "wrong version number", "record layer failure",
            "packet length too long", "unknown protocol", "http request")
_SERVER_HINT = "check the host and port in --server and that secagg-server is running there"


class ServerRefused(Exception):
    """The server answered 4xx: ``code`` and ``detail`` come from its JSON error body."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"server refused ({status} {code}): {detail}")
        self.status, self.code, self.detail = status, code, detail


class ServerUnreachable(ConnectionError):
    """No answer from the server at ``url``: ``problem`` says what failed, ``hint`` what to try.

    Its message is one line: ``cannot reach URL: PROBLEM; HINT``."""

    def __init__(self, url: str, problem: str, hint: str) -> None:
        super().__init__(f"cannot reach {url}: {problem}; {hint}")
        self.url, self.problem, self.hint = url, problem, hint


@dataclass(frozen=True)
class Problem:
    """A diagnosed transport failure. ``transient``: retrying may heal it once the server has
    answered before (a restart, a dropped connection); ``permanent``: retrying never helps."""

    what: str
    hint: str
    transient: bool
    permanent: bool = False


def tls_verify(verify: bool | str) -> bool | ssl.SSLContext:
    """httpx's ``verify`` from ``True``/``False`` or a CA bundle path (a file of PEM certificates);
    a bundle that is missing or unusable raises :class:`InvalidParameter` naming ``--ca-cert``
    (:func:`secagg.tls.tls_verify`, shared with the operator's client)."""
    return _tls_verify(verify, flag="--ca-cert")


def check_server_url(url: str) -> str:
    """``url`` without a trailing slash, or :class:`InvalidParameter` saying how to write it."""
    text = str(url).strip()
    if "://" not in text:
        host = text.split("/", 1)[0] or "HOST:PORT"
        raise InvalidParameter(
            f"server URL {url!r} has no scheme; write https://{host} (a server with "
            f"--tls-cert) or http://{host} (plain HTTP, loopback only)")
    scheme = text.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise InvalidParameter(f"server URL {url!r} has scheme {scheme}://; secagg-server speaks "
                               "https:// (or http:// on the loopback)")
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as exc:
        raise InvalidParameter(f"server URL {url!r} is not a valid URL ({exc})") from None
    if not parsed.host:
        raise InvalidParameter(f"server URL {url!r} names no host; write e.g. "
                               f"{scheme}://127.0.0.1:8443")
    return text.rstrip("/")


def _root(exc: BaseException) -> BaseException:
    """The innermost cause (``ssl.SSLError``, ``ConnectionRefusedError``, ``socket.gaierror``)."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return seen


def _reason(exc: BaseException) -> str:
    """The innermost error's own words (``self-signed certificate``, ``wrong version number``)."""
    root = _root(exc)
    if isinstance(root, ssl.SSLCertVerificationError) and root.verify_message:
        return str(root.verify_message)
    if isinstance(root, OSError) and root.strerror:
        return str(root.strerror)
    text = str(root) or type(root).__name__
    return text.split(" (_ssl.c")[0]


def _host_port(url: httpx.URL) -> tuple[str, int]:
    return url.host, url.port or (443 if url.scheme == "https" else 80)


def speaks_plain_http(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` answers a plain HTTP request with an HTTP response."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n")
            return sock.recv(5) == b"HTTP/"
    except OSError:
        return False


def speaks_tls(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` completes a TLS handshake (its certificate is not checked)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=host):
            return True
    except (OSError, ssl.SSLError):
        return False


def diagnose(exc: httpx.TransportError, url: httpx.URL, *, probe: bool = True) -> Problem:
    """What failed when a request to ``url`` raised ``exc``. ``probe``: may open a connection
    or two to tell a wrong scheme from another failure (at startup; never mid-round)."""
    root = _root(exc)
    host, port = _host_port(url)
    where = f"{host}:{port}"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return Problem(f"unsupported URL ({exc})", "write https://HOST:PORT or http://HOST:PORT",
                       transient=False, permanent=True)
    if isinstance(exc, httpx.TimeoutException):
        kind = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "waiting for an answer"
        return Problem(f"timed out {kind} ({type(exc).__name__})",
                       f"{_SERVER_HINT}, and that no firewall drops the traffic", transient=True)
    if isinstance(root, ssl.SSLCertVerificationError):
        why = _reason(root)
        if "hostname" in why.lower() or "ip address mismatch" in why.lower():
            hint = (f"connect with a host name the certificate lists (not {host!r}), or reissue "
                    "the certificate for it")
        else:
            hint = ("pass the CA bundle that signed it (--ca-cert ca.pem, or verify='ca.pem' "
                    "from Python)")
        return Problem(f"the server's TLS certificate is not trusted ({why})", hint,
                       transient=False, permanent=True)
    if isinstance(root, ssl.SSLError):
        if url.scheme == "https" and any(w in str(root) for w in _NOT_TLS):
            if probe and speaks_plain_http(host, port):
                return Problem(f"the server at {where} speaks plain HTTP, not HTTPS (wrong scheme)",
                               f"use http://{where}, or start secagg-server with --tls-cert and "
                               "--tls-key to serve HTTPS", transient=False, permanent=True)
            return Problem(f"{where} does not speak TLS ({_reason(exc)})",
                           f"check the port in --server; {_SERVER_HINT}", transient=False,
                           permanent=True)
        return Problem(f"the TLS handshake failed ({_reason(exc)})",
                       "check --ca-cert and that the server's certificate and key are valid",
                       transient=False, permanent=True)
    if isinstance(root, socket.gaierror):
        return Problem(f"cannot resolve the host name {host!r} (DNS: {_reason(root)})",
                       "check the host name in --server, or use the server's IP address",
                       transient=root.errno == socket.EAI_AGAIN)
    if isinstance(root, ConnectionRefusedError):
        return Problem(f"connection refused: nothing listens on {where}", _SERVER_HINT,
                       transient=True)
    if isinstance(root, OSError) and root.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return Problem(f"no route to {where} ({_reason(root)})",
                       "check the host in --server and this machine's network", transient=True)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError) \
            and url.scheme == "http" and probe and speaks_tls(host, port):
        return Problem(f"the server at {where} speaks HTTPS (TLS), not plain HTTP (wrong scheme)",
                       f"use https://{where} (with --ca-cert if its certificate is self-signed)",
                       transient=False, permanent=True)
    return Problem(f"{type(exc).__name__}: {_reason(exc)}", _SERVER_HINT, transient=True)
