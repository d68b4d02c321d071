"""Which server certificates an HTTP client trusts: the one rule both parties' clients follow.

The enterprise's runtime (``secagg_clients``) and the operator's client (``secagg_server.operator``)
both speak HTTPS to ``secagg-server`` and both take ``verify``: ``True`` (the system's CA store),
``False`` (no check: loopback tests only) or the path of a CA bundle (the PEM certificates that
signed the server's certificate). :func:`tls_verify` turns that into what ``httpx`` takes, and
refuses a bundle that is missing or holds no usable certificate in one line saying what to pass.

Standard library only (:mod:`ssl`): no transport is opened here, and the library stays free of
any HTTP client.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from .errors import InvalidParameter, SecAggError

__all__ = ["tls_verify"]


def _why(exc: BaseException) -> str:
    """OpenSSL's own words for a bundle it cannot use (no file position suffix)."""
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    return (str(exc) or type(exc).__name__).split(" (_ssl.c")[0]


def tls_verify(verify: bool | str, *, flag: str | None = None,
               error: type[SecAggError] = InvalidParameter,
               say_why: bool = True) -> bool | ssl.SSLContext:
    """httpx's ``verify`` from ``True``/``False`` or a CA bundle path (a file of PEM certificates).

    ``flag``: the command-line option the path came from (``--ca-cert``), named in the refusal.
    ``error``: the :class:`~secagg.errors.SecAggError` raised for a bundle that does not exist or
    holds no usable PEM certificate (:class:`~secagg.errors.InvalidParameter` by default).
    ``say_why``: put OpenSSL's reason for an unusable bundle in the message (the operator's
    client has always left it out)."""
    if not isinstance(verify, str):
        return verify
    hint = "pass the PEM file that signed the server's certificate" + (f" ({flag})" if flag else "")
    if not Path(verify).is_file():
        raise error(f"CA bundle {verify!r} does not exist; {hint}")
    try:
        return ssl.create_default_context(cafile=verify)
    except (ssl.SSLError, OSError, ValueError) as exc:
        why = f" ({_why(exc)})" if say_why else ""
        raise error(f"CA bundle {verify!r} holds no usable PEM certificate{why}; {hint}") from None
