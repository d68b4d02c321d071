"""Canonical binary encoding of :mod:`secagg.masking.messages`.

Layout: ``b"SAGM" | version u8 | type u8 | digest 32 | round u64 | party u32`` followed by the
type's fields in declaration order. Field kinds: bytes (u32 length + data), id tuple (u32 count +
sorted unique u32 ids), id->bytes map (u32 count + (u32 id, u32 length, data) sorted by id).
Decoding checks every length against the buffer and an overall size limit before it allocates,
and names the field that was wrong. Encoding is injective, so signatures over it are unambiguous.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple, get_type_hints

from secagg.errors import InvalidParameter
from secagg.masking import messages as m

__all__ = ["MAX_MESSAGE_BYTES", "Header", "decode", "encode", "encode_all", "peek_header",
           "peek_type", "without_signature"]

MAGIC: Final = b"SAGM"
WIRE_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 1 << 31
#: Bytes fields at least this long are borrowed, not copied, by ``decode(..., borrow=True)``.
BORROW_BYTES: Final = 1 << 16
_HEADER = struct.Struct(">4sBB32sQI")
_PAIR = struct.Struct(">II")
_U32 = struct.Struct(">I")

_TYPES: Final[tuple[type[Any], ...]] = (
    m.AdvertiseKeys, m.ShareKeys, m.MaskedInput, m.ConsistencySignature, m.UnmaskShares,
    m.KeyDirectory, m.ShareDelivery, m.ConsistencyRequest, m.UnmaskRequest,
)
_TYPE_ID: Final = {t: i + 1 for i, t in enumerate(_TYPES)}


def _fields(cls: type[Any]) -> list[tuple[str, str]]:
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in ("digest", "round", "party"):
            continue
        hint = str(hints[f.name])
        kind = "bytes" if hint == "<class 'bytes'>" else "ids" if "tuple" in hint else "map"
        out.append((f.name, kind))
    return out


_SCHEMA: Final = {t: _fields(t) for t in _TYPES}


def encode(msg: m.Message) -> bytes:
    """Serialise a message (any type in :mod:`secagg.masking.messages`)."""
    return _encode(msg, None)


def encode_all(msgs: Mapping[int, m.Message]) -> dict[int, bytes]:
    """:func:`encode` for many messages at once: a map or id field that several of them share
    (the same object, as every key directory shares the round's advert hashes and every
    survivor-set message the survivor tuple) is encoded once."""
    cache: dict[int, tuple[object, bytes]] = {}
    return {party: _encode(msg, cache) for party, msg in msgs.items()}


def _encode_ids(value: Iterable[int]) -> bytes:
    ids = sorted(set(value))
    return struct.pack(f">I{len(ids)}I", len(ids), *ids)


def _encode_map(value: Mapping[int, bytes]) -> bytes:
    pack = _PAIR.pack
    parts = [_U32.pack(len(value))]
    for key, data in sorted(value.items()):  # keys are distinct: values are never compared
        parts.append(pack(key, len(data)))
        parts.append(data)
    return b"".join(parts)


def _encode(msg: m.Message, cache: dict[int, tuple[object, bytes]] | None) -> bytes:
    cls = type(msg)
    if cls not in _TYPE_ID:
        raise InvalidParameter(f"cannot encode {cls.__name__}: not a masking protocol message")
    if len(msg.digest) != 32:
        raise InvalidParameter("message digest must be 32 bytes")
    parts = [_HEADER.pack(MAGIC, WIRE_VERSION, _TYPE_ID[cls], msg.digest, msg.round, msg.party)]
    for name, kind in _SCHEMA[cls]:
        value = getattr(msg, name)
        if kind == "bytes":
            parts += [struct.pack(">I", len(value)), value]
        elif cache is None or len(value) < 64:
            parts.append(_encode_ids(value) if kind == "ids" else _encode_map(value))
        else:  # the cache holds the object, so its id cannot be reused during the call
            hit = cache.get(id(value))
            if hit is None or hit[0] is not value:
                hit = cache[id(value)] = (value, _encode_ids(value) if kind == "ids"
                                          else _encode_map(value))
            parts.append(hit[1])
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        # slices of a bytes object are bytes already (one step, not a view and then a copy)
        self.raw: bytes | None = data if type(data) is bytes else None
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidParameter(f"message is truncated in field '{what}': needs {n} more bytes, "
                                   f"{len(self.data) - self.pos} left")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def view(self, n: int, what: str) -> memoryview:
        """:meth:`take` without the copy (the buffer must be immutable)."""
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidParameter(f"message is truncated in field '{what}': needs {n} more bytes, "
                                   f"{len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self, what: str) -> int:
        value: int = struct.unpack(">I", self.take(4, what))[0]
        return value

    def id_map(self, what: str) -> dict[int, bytes]:
        """u32 count, then (u32 id, u32 length, data) with ids strictly ascending; read in
        place (the hot path of every directory and share message), every length checked."""
        data, end, raw = self.data, len(self.data), self.raw
        count = self.u32(what)
        entries: dict[int, bytes] = {}
        pos, last = self.pos, -1
        for _ in range(count):
            if pos + 8 > end:
                raise InvalidParameter(f"message is truncated in field '{what}': needs 8 more "
                                       f"bytes, {end - pos} left")
            key, size = _PAIR.unpack_from(data, pos)
            pos += 8
            if key <= last:
                raise InvalidParameter(f"field '{what}' keys must be distinct and ascending")
            if pos + size > end:
                raise InvalidParameter(f"message is truncated in field '{what}': needs {size} "
                                       f"more bytes, {end - pos} left")
            entries[key] = raw[pos : pos + size] if raw is not None else bytes(data[pos : pos + size])
            pos += size
            last = key
        self.pos = pos
        return entries


def without_signature(raw: bytes, signature: bytes) -> bytes:
    """The encoding of the message ``raw`` encodes with its ``signature`` field emptied, for a
    type whose last field that is (:class:`~.messages.AdvertiseKeys`, :class:`~.messages.
    ShareKeys`): what its sender signed, without decoding and encoding it again. ``raw`` must be
    a canonical encoding (as :func:`decode` accepts only); the caller passes the signature it
    decoded from it."""
    cls = peek_type(raw)
    if _SCHEMA[cls][-1] != ("signature", "bytes"):
        raise InvalidParameter(f"{cls.__name__} does not end with a signature field")
    cut = len(raw) - len(signature) - 4
    if cut < _HEADER.size or raw[cut:] != _U32.pack(len(signature)) + signature:
        raise InvalidParameter("the message does not end with this signature")
    return raw[:cut] + _U32.pack(0)


def peek_type(data: bytes) -> type[Any]:
    """The message class encoded in ``data``'s header (no other validation)."""
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise InvalidParameter("not a secagg masking message: bad magic or too short")
    type_id = data[5]
    if not 1 <= type_id <= len(_TYPES):
        raise InvalidParameter(f"unknown message type {type_id}")
    return _TYPES[type_id - 1]


class Header(NamedTuple):
    """The fixed header every message starts with."""

    type: type[Any]
    digest: bytes
    round: int
    party: int


def peek_header(data: bytes) -> Header:
    """Read only the header (e.g. to route or authenticate a message before parsing its body)."""
    cls = peek_type(data)
    _, _, _, digest, rnd, party = _HEADER.unpack_from(data)
    return Header(cls, digest, rnd, party)


def decode(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES,
           expect: type[Any] | tuple[type[Any], ...] | None = None, borrow: bool = False) -> Any:
    """Parse bytes into a message; raises :class:`InvalidParameter` naming what was wrong.

    ``borrow`` (``data`` must be immutable ``bytes``): a bytes field of at least
    :data:`BORROW_BYTES` is returned as a read-only memoryview into ``data`` instead of a copy
    (the server's masked vectors: a copy of each cost more than summing it)."""
    if len(data) > max_bytes:
        raise InvalidParameter(f"message is {len(data)} bytes; the limit for this stage is {max_bytes}")
    cls = peek_type(data)
    if expect is not None and not issubclass(cls, expect):
        names = expect.__name__ if isinstance(expect, type) else "/".join(e.__name__ for e in expect)
        raise InvalidParameter(f"expected a {names} message, found {cls.__name__}")
    _, version, _, digest, rnd, party = _HEADER.unpack_from(data)
    if version != WIRE_VERSION:
        raise InvalidParameter(f"wire version {version} is not supported (expected {WIRE_VERSION})")
    reader = _Reader(data)
    reader.pos = _HEADER.size
    values: dict[str, Any] = {"digest": digest, "round": rnd, "party": party}
    for name, kind in _SCHEMA[cls]:
        if kind == "bytes":
            size = reader.u32(name)
            if borrow and size >= BORROW_BYTES and type(data) is bytes:
                values[name] = reader.view(size, name)
            else:
                values[name] = reader.take(size, name)
        elif kind == "ids":
            count = reader.u32(name)
            raw = reader.take(4 * count, name)
            ids = struct.unpack(f">{count}I", raw)
            if list(ids) != sorted(set(ids)):
                raise InvalidParameter(f"field '{name}' must list distinct ids in ascending order")
            values[name] = tuple(ids)
        else:
            values[name] = reader.id_map(name)
    if reader.pos != len(data):
        raise InvalidParameter(f"{len(data) - reader.pos} trailing bytes after a {cls.__name__}")
    return cls(**values)
