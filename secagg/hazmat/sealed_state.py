"""A client session's attributes as one sealed, versioned blob: the type-driven codec and the AEAD
frame that every protocol's session export shares.

.. danger:: Part of :mod:`secagg.hazmat`. The plaintext this codec builds holds every secret of
   a session (seeds, private keys, shares) in the clear; it exists only inside
   :meth:`StateCodec.seal` and :meth:`StateCodec.open`, and the key must come from
   :func:`derive_state_key` for exactly one client, round and transport scope.

Some transports run each protocol message in a fresh process (Flower's ClientApp), so a client
session, which refuses pickling, must be carried between calls by an explicit export. Each
protocol keeps a thin module of its own (:mod:`secagg.masking.session_state`,
:mod:`secagg.ckks.threshold.session_state`) that decides which attributes are re-supplied or
rebuilt at restore and which extra types its sessions hold; the walk, the framing and the seal
live here once, so a fix to the codec reaches every protocol.

The codec walks a mapping of attribute names to values and encodes each value by its type, with
no field list of its own: ``None``, ``bool``, ``int``, ``bytes``, ``str``,
``tuple``/``list``/``frozenset``/``set``/``dict`` of these, :class:`~.handles.SecretBytes` and
:class:`~.agreement.X25519KeyPair` (tags 0-12, the same in every protocol), numpy arrays of the
dtypes a protocol lists (:class:`ArrayFormat`), and a protocol's own :class:`Extension` types.
A value of any other type, and an array of another dtype, is refused with an error naming the
attribute path and the type (never the value), so a field added to a session later is either
covered or caught the first time it is exported.

Blob: ``magic (4 bytes) | version u8 | ChaCha20-Poly1305(key, payload, ad)``. The associated data
is ``domain | magic | version | config digest | round u64 | client id u32 | len u8 | mark``, where
``mark`` is the session's high-water mark (its stage, plus whatever else a protocol needs to tell
two states apart): the caller keeps it beside the blob and passes it back at restore, so a blob
that was altered, sealed under another key, for another config, round or client, or at another
mark is refused by the same opaque :class:`~secagg.errors.AuthenticationFailed`. The payload is
``count u32`` then ``name, value`` pairs; strings and byte strings are ``u64 length | bytes``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Final

import numpy as np

from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.hazmat.aead import open_sealed, seal
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import KeyContext, Purpose, derive_key
from secagg.hazmat.signing import SigningKey, export_private_bytes_for_storage

__all__ = [
    "ArrayFormat",
    "Extension",
    "Reader",
    "StateBinding",
    "StateCodec",
    "derive_state_key",
    "enum_extension",
    "put_bytes",
    "put_str",
    "record_extension",
]

MAX_DEPTH: Final = 8

# the core tags, fixed for every protocol (the masking blob of format 1 uses them)
_NONE, _FALSE, _TRUE, _INT, _BYTES, _STR = 0, 1, 2, 3, 4, 5
_TUPLE, _LIST, _FROZENSET, _SET, _DICT = 6, 7, 8, 9, 10
_SECRET, _X25519 = 11, 12
CORE_TAGS: Final = frozenset(range(13))
_COLLECTIONS: Final[dict[type[Any], int]] = {tuple: _TUPLE, list: _LIST, frozenset: _FROZENSET,
                                             set: _SET}
_BUILDERS: Final[dict[int, Callable[[list[Any]], Any]]] = {
    _TUPLE: tuple, _LIST: list, _FROZENSET: frozenset, _SET: set,
}


def derive_state_key(signing_key: SigningKey, *, protocol: str, purpose: Purpose, version: int,
                     config_digest: bytes, round: int, client_id: int,
                     scope: bytes = b"") -> SecretBytes:
    """The key that seals ``client_id``'s session state of one round (HKDF-SHA256).

    The input is the enterprise's Ed25519 identity seed, which never leaves the enterprise, so
    only that client can open its blob. ``protocol`` and ``purpose`` keep each protocol's state
    keys apart; the salt covers the config digest (roster, round, session nonce) and ``scope``
    (the transport's run, e.g. Flower's run id), and ``info`` names the client.
    """
    if not isinstance(scope, bytes):
        raise InvalidParameter(f"scope must be bytes, found {type(scope).__name__}")
    seed = SecretBytes(export_private_bytes_for_storage(signing_key), label="identity")
    session = config_digest + struct.pack(">I", len(scope)) + scope
    context = KeyContext(protocol=protocol, version=version, session=session, round=round,
                         purpose=purpose, pair=(client_id, client_id))
    return derive_key(seed, context)


@dataclass(frozen=True, slots=True)
class StateBinding:
    """What a blob is sealed to besides its key: the round's config digest and round, the client,
    and the caller's high-water ``mark`` (the session's stage, in a protocol's spelling)."""

    config_digest: bytes
    round: int
    client_id: int
    mark: str


def put_bytes(out: bytearray, data: bytes) -> None:
    out += struct.pack(">Q", len(data))
    out += data


def put_str(out: bytearray, text: str) -> None:
    put_bytes(out, text.encode())


class Reader:
    """Bounds-checked reads from a decrypted payload; ``what`` names it in errors."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidParameter(f"{self.what} is truncated")
        chunk = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack(">Q", self.take(8))[0]
        return value

    def bytes_(self) -> bytes:
        return self.take(self.u64())

    def str_(self) -> str:
        return self.bytes_().decode()


@dataclass(frozen=True)
class Extension:
    """One protocol's own type: ``write(codec, out, value, where, depth)`` appends what follows
    the tag (``where`` is the attribute path, for errors only), ``read(codec, reader, depth)``
    reads it back. ``types`` are matched exactly (no subclasses: a subclass may hold more)."""

    tag: int
    types: tuple[type[Any], ...]
    write: Callable[[StateCodec, bytearray, Any, str, int], None]
    read: Callable[[StateCodec, Reader, int], Any]


@dataclass(frozen=True)
class ArrayFormat:
    """The numpy arrays a protocol's sessions hold: the dtypes allowed and their tag. The payload
    is ``[dtype str] | ndim u8 | shape (u64 each) | little-endian data``; ``record_dtype=False``
    leaves the dtype out (one dtype only: the masking blob of format 1)."""

    tag: int
    dtypes: tuple[np.dtype[Any], ...]
    record_dtype: bool = True

    def __post_init__(self) -> None:
        if not self.dtypes or (not self.record_dtype and len(self.dtypes) != 1):
            raise InvalidParameter("an array format without a recorded dtype has one dtype")


def enum_extension(tag: int, enum_type: type[Any]) -> Extension:
    """A string-valued enum, written as its value."""
    return Extension(tag, (enum_type,), lambda codec, out, value, where, depth:
                     put_str(out, value.value),
                     lambda codec, r, depth: enum_type(r.str_()))


def record_extension(tag: int, record_type: type[Any]) -> Extension:
    """A dataclass, written field by field (``name, value``) and rebuilt by keyword, so a field
    renamed or added is refused rather than misread."""
    if not is_dataclass(record_type):
        raise InvalidParameter(f"{record_type.__qualname__} is not a dataclass")
    names = tuple(f.name for f in fields(record_type))

    def write(codec: StateCodec, out: bytearray, value: Any, where: str, depth: int) -> None:
        codec.write_attrs(out, {name: getattr(value, name) for name in names}, where, depth + 1)

    def read(codec: StateCodec, r: Reader, depth: int) -> Any:
        attrs = codec.read_attrs(r, depth + 1)
        if tuple(sorted(attrs)) != tuple(sorted(names)):
            raise InvalidParameter(f"{codec.what} holds a {record_type.__name__} with other "
                                   "fields than this version's")
        return record_type(**attrs)

    return Extension(tag, (record_type,), write, read)


class StateCodec:
    """The codec and the frame of one protocol's session blobs (see the module docstring).

    ``what`` names the blob in errors; ``listed_in`` is the module that lists the protocol's
    supported types (for the refusal of an unsupported one); ``aliases`` maps a type to the core
    type it is written as (restored as that type)."""

    def __init__(self, *, what: str, magic: bytes, version: int, domain: bytes, listed_in: str,
                 arrays: ArrayFormat | None = None, extensions: Sequence[Extension] = (),
                 aliases: Mapping[type[Any], type[Any]] | None = None) -> None:
        if len(magic) != 4 or not 0 <= version < 256:
            raise InvalidParameter("a state blob has a 4-byte magic and a one-byte version")
        tags = [e.tag for e in extensions] + ([arrays.tag] if arrays is not None else [])
        if len(set(tags)) != len(tags) or CORE_TAGS & set(tags) or not all(
                0 <= t < 256 for t in tags):
            raise InvalidParameter("extension tags must be distinct bytes outside the core tags")
        self.what = what
        self.magic = magic
        self.version = version
        self.domain = domain
        self.listed_in = listed_in
        self.arrays = arrays
        self._by_type = {t: e for e in extensions for t in e.types}
        self._by_tag = {e.tag: e for e in extensions}
        self._aliases = dict(aliases or {})

    # ---- the frame ------------------------------------------------------------------------

    def associated_data(self, binding: StateBinding) -> bytes:
        label = binding.mark.encode()
        if len(label) > 255:
            raise InvalidParameter("a state mark is at most 255 bytes")
        return (self.domain + self.magic + bytes([self.version]) + binding.config_digest
                + struct.pack(">QIB", binding.round, binding.client_id, len(label)) + label)

    def seal(self, key: SecretBytes, attrs: Mapping[str, Any], binding: StateBinding) -> bytes:
        """``attrs`` encoded and sealed under ``key``, bound to ``binding``."""
        out = bytearray()
        self.write_attrs(out, attrs, "", -1)
        return self.magic + bytes([self.version]) + seal(key, bytes(out),
                                                         self.associated_data(binding))

    def open(self, blob: bytes, key: SecretBytes, binding: StateBinding) -> dict[str, Any]:
        """The attributes :meth:`seal` sealed to ``binding``; anything else is
        :class:`AuthenticationFailed`, naming nothing (a version this code does not read is
        :class:`InvalidParameter`, since it says which software wrote it, not what is inside)."""
        if not isinstance(blob, bytes) or len(blob) < 5 or blob[:4] != self.magic:
            raise AuthenticationFailed(self.what)
        if blob[4] != self.version:
            raise InvalidParameter(f"{self.what} format version {blob[4]} is not supported "
                                   f"(this is version {self.version})")
        plain = open_sealed(key, blob[5:], self.associated_data(binding), what=self.what)
        reader = Reader(plain, self.what)
        attrs = self.read_attrs(reader, -1)
        if reader.pos != len(plain):
            raise InvalidParameter(f"{self.what} has trailing bytes")
        return attrs

    # ---- attribute maps -------------------------------------------------------------------

    def write_attrs(self, out: bytearray, attrs: Mapping[str, Any], where: str,
                    depth: int) -> None:
        """``count u32 | (name, value)*``; ``where`` prefixes the names in errors."""
        out += struct.pack(">I", len(attrs))
        for name, value in attrs.items():
            put_str(out, name)
            self.write(out, value, f"{where}.{name}" if where else name, depth + 1)

    def read_attrs(self, r: Reader, depth: int) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        for _ in range(r.u32()):
            name = r.str_()
            if name in attrs:
                raise InvalidParameter(f"{self.what} names an attribute twice")
            attrs[name] = self.read(r, depth + 1)
        return attrs

    # ---- values ---------------------------------------------------------------------------

    def write(self, out: bytearray, value: Any, where: str, depth: int) -> None:
        """Append ``value``; ``where`` names it (attribute path) in errors, which never show
        values."""
        if depth > MAX_DEPTH:
            raise InvalidParameter(f"session attribute {where} is nested deeper than {MAX_DEPTH}")
        kind = self._aliases.get(type(value), type(value))
        extension = self._by_type.get(kind)
        if value is None:
            out.append(_NONE)
        elif kind is bool:
            out.append(_TRUE if value else _FALSE)
        elif kind is int:
            out.append(_INT)
            put_str(out, str(value))
        elif kind is bytes:
            out.append(_BYTES)
            put_bytes(out, value)
        elif kind is str:
            out.append(_STR)
            put_str(out, value)
        elif kind in _COLLECTIONS:
            self._write_collection(out, kind, value, where, depth)
        elif kind is dict:
            out.append(_DICT)
            out += struct.pack(">Q", len(value))
            for k, v in value.items():
                self.write(out, k, f"{where} key", depth + 1)
                self.write(out, v, f"{where}[{k if type(k) is int else type(k).__name__}]",
                           depth + 1)
        elif kind is SecretBytes:
            out.append(_SECRET)
            put_str(out, value._label)
            put_bytes(out, value.expose_secret_bytes())
        elif kind is X25519KeyPair:
            out.append(_X25519)
            put_bytes(out, value.export_private_bytes_for_sharing().expose_secret_bytes())
        elif kind is np.ndarray and self.arrays is not None:
            self._write_array(out, value, where)
        elif extension is not None:
            out.append(extension.tag)
            extension.write(self, out, value, where, depth)
        else:
            kind = type(value)
            raise InvalidParameter(
                f"session attribute {where} has type {kind.__module__}.{kind.__qualname__}, "
                f"which the {self.what} codec cannot export ({self.listed_in} lists the "
                "supported types); add it there with a test before storing it in a session")

    def _write_collection(self, out: bytearray, kind: type[Any], value: Any, where: str,
                          depth: int) -> None:
        out.append(_COLLECTIONS[kind])
        items = list(value)
        if kind in (frozenset, set):  # a canonical order: by encoding
            encoded = []
            for item in items:
                buf = bytearray()
                self.write(buf, item, f"{where}[]", depth + 1)
                encoded.append(bytes(buf))
            out += struct.pack(">Q", len(encoded))
            for item_bytes in sorted(encoded):
                out += item_bytes
            return
        out += struct.pack(">Q", len(items))
        for i, item in enumerate(items):
            self.write(out, item, f"{where}[{i}]", depth + 1)

    def _write_array(self, out: bytearray, value: np.ndarray[Any, Any], where: str) -> None:
        fmt = self.arrays
        assert fmt is not None
        if value.dtype not in fmt.dtypes:
            names = ", ".join(str(d) for d in fmt.dtypes)
            raise InvalidParameter(f"session attribute {where} is a numpy array of dtype "
                                   f"{value.dtype}; only {names} arrays can be exported")
        little = value.dtype.newbyteorder("<")
        out.append(fmt.tag)
        if fmt.record_dtype:
            put_str(out, little.str)
        out += struct.pack(">B", value.ndim)
        out += struct.pack(f">{value.ndim}Q", *value.shape)
        put_bytes(out, np.ascontiguousarray(value, dtype=little).tobytes())

    def _read_array(self, r: Reader) -> np.ndarray[Any, Any]:
        fmt = self.arrays
        assert fmt is not None
        if fmt.record_dtype:
            name = r.str_()
            matches = [d for d in fmt.dtypes if d.newbyteorder("<").str == name]
            if not matches:
                raise InvalidParameter(f"{self.what} holds an array of a dtype this version "
                                       "does not read")
            dtype = matches[0]
        else:
            dtype = fmt.dtypes[0]
        ndim = r.u8()
        shape = struct.unpack(f">{ndim}Q", r.take(8 * ndim))
        raw = r.bytes_()
        if len(raw) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise InvalidParameter(f"{self.what} holds an array of the wrong size")
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)

    def read(self, r: Reader, depth: int) -> Any:
        """One value :meth:`write` appended."""
        if depth > MAX_DEPTH:
            raise InvalidParameter(f"{self.what} is nested too deeply")
        tag = r.u8()
        if tag == _NONE:
            return None
        if tag in (_FALSE, _TRUE):
            return tag == _TRUE
        if tag == _INT:
            return int(r.str_())
        if tag == _BYTES:
            return r.bytes_()
        if tag == _STR:
            return r.str_()
        if tag in _BUILDERS:
            return _BUILDERS[tag]([self.read(r, depth + 1) for _ in range(r.u64())])
        if tag == _DICT:
            out = {}
            for _ in range(r.u64()):
                k = self.read(r, depth + 1)
                out[k] = self.read(r, depth + 1)
            return out
        if tag == _SECRET:
            label = r.str_()
            return SecretBytes(r.bytes_(), label=label)
        if tag == _X25519:
            return X25519KeyPair.from_private_bytes(SecretBytes(r.bytes_()))
        if self.arrays is not None and tag == self.arrays.tag:
            return self._read_array(r)
        if tag in self._by_tag:
            return self._by_tag[tag].read(self, r, depth)
        raise InvalidParameter(f"{self.what} holds an unknown type tag {tag}")
