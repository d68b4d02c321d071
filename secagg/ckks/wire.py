"""Length-prefixed framing for CKKS messages: injective, versioned, bounded.

A frame is ``MAGIC || kind (1 byte) || fields``; each field is ``u32 length || bytes``. Lists are
a field holding a nested field sequence. Parsing never trusts a length: anything that does not
add up exactly is a :class:`RejectedMessage`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from secagg.errors import RejectedMessage

__all__ = ["MAGIC", "frame", "join_fields", "peek", "split_fields", "u32", "u64", "unframe"]

MAGIC = b"SCK1"
_LEN = struct.Struct(">I")


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def join_fields(fields: Sequence[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(f)) + f for f in fields)


def split_fields(
    data: bytes | memoryview, *, count: int | None = None, what: str = "message", sender: int | None = None
) -> list[bytes]:
    """Inverse of :func:`join_fields`; ``count`` pins the number of fields when known."""
    out: list[bytes] = []
    pos = 0
    view = memoryview(data)
    while pos < len(data):
        if pos + 4 > len(data):
            raise RejectedMessage(sender, f"{what} is truncated (field header at byte {pos})")
        (size,) = _LEN.unpack_from(data, pos)
        pos += 4
        if pos + size > len(data):
            raise RejectedMessage(
                sender, f"{what} is truncated: a field claims {size} bytes, {len(data) - pos} remain"
            )
        out.append(bytes(view[pos : pos + size]))
        pos += size
    if count is not None and len(out) != count:
        raise RejectedMessage(sender, f"{what} has {len(out)} fields, expected {count}")
    return out


def frame(kind: int, fields: Sequence[bytes]) -> bytes:
    return MAGIC + bytes([kind]) + join_fields(fields)


def unframe(
    data: bytes, *, expected: int, count: int, names: dict[int, str], sender: int | None = None
) -> list[bytes]:
    """Check magic and kind, then split exactly ``count`` fields."""
    if not isinstance(data, bytes | bytearray) or len(data) < len(MAGIC) + 1:
        raise RejectedMessage(sender, "not a secagg CKKS message (too short)")
    if bytes(data[: len(MAGIC)]) != MAGIC:
        raise RejectedMessage(sender, "not a secagg CKKS message (bad magic)")
    kind = data[len(MAGIC)]
    if kind != expected:
        raise RejectedMessage(
            sender,
            f"expected a message of kind '{names.get(expected, expected)}', found "
            f"'{names.get(kind, f'unknown kind {kind}')}'",
        )
    return split_fields(memoryview(data)[len(MAGIC) + 1 :], count=count, what=names[expected], sender=sender)


def peek(data: bytes, field: int | None = None) -> tuple[int | None, bytes | None]:
    """``(kind, bytes of field number field)`` from a frame's header, without parsing the rest.

    For routing only (which stage a body is for, which sender it claims): None where the frame
    is not one or is too short; the full parse (:func:`unframe`) still decides acceptance.
    """
    if len(data) < len(MAGIC) + 1 or data[: len(MAGIC)] != MAGIC:
        return None, None
    kind = data[len(MAGIC)]
    if field is None:
        return kind, None
    pos = len(MAGIC) + 1
    for i in range(field + 1):
        if pos + 4 > len(data):
            return kind, None
        (size,) = _LEN.unpack_from(data, pos)
        pos += 4
        if pos + size > len(data):
            return kind, None
        if i == field:
            return kind, bytes(data[pos : pos + size])
        pos += size
    return kind, None  # pragma: no cover - the loop returns at i == field
