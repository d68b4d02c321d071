"""Helpers shared by the hazmat tests: does a text, or an exception chain, leak a secret?"""

from __future__ import annotations

import traceback


def leaks(text: str, secret: bytes) -> list[str]:
    """The forms of ``secret`` (or of any 8-byte window of it) that appear in ``text``."""
    found = []
    lowered = text.lower()
    windows = [secret] if len(secret) < 8 else [secret[i : i + 8] for i in range(len(secret) - 7)]
    for w in windows:
        for form in (w.hex(), repr(w)[2:-1], w.hex(" "), w.hex(":")):
            if form and form.lower() in lowered:
                found.append(form)
    if len(secret) >= 8 and str(int.from_bytes(secret, "big")) in text:
        found.append("decimal")
    return found


def assert_no_leak(text: str, secret: bytes) -> None:
    found = leaks(text, secret)
    assert not found, f"secret material appears in text: {found[:3]}"


def exception_text(exc: BaseException) -> str:
    """Everything a log would show: str, repr, and the full formatted chain."""
    parts = [str(exc), repr(exc), *traceback.format_exception(exc)]
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts += [str(e), repr(e), repr(e.args)]
        e = e.__cause__ or e.__context__
    return "\n".join(parts)
