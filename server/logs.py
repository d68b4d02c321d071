"""Logging that never leaks request data: every log line of the server process goes through
:class:`SafeFormatter`, which renders an attached exception as its type and where it was raised,
never its message or traceback (those may quote bodies, headers, tokens or option values),
whoever logs it (uvicorn, asyncio, the coordinator)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["LOG_FORMAT", "SafeFormatter", "log_config", "where_raised"]


def where_raised(exc: BaseException) -> str:
    """Where ``exc`` was raised (file:line in function): a reason that holds no data."""
    tb = exc.__traceback__
    if tb is None:
        return "an unknown place"
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{'/'.join(Path(code.co_filename).parts[-2:])}:{tb.tb_lineno} in {code.co_name}"


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
        return (f"({type(exc).__name__} at {where_raised(exc)}; message and traceback withheld: they "
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
