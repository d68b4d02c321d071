"""A client session's state between transport calls, sealed under a key only that client holds.

Some transports run each protocol message in a fresh process or call (Flower's ClientApp), so a
:class:`~secagg.masking.client.ClientSession` must outlive the call that made it. It refuses to be
pickled; this module is the explicit export it points to: :meth:`ClientSession.export_state`
returns one sealed blob, :meth:`ClientSession.restore` rebuilds the session from it.

The codec walks the session's instance attributes and encodes each by its type, with no field
list of its own: ``None``, ``bool``, ``int``, ``bytes``, ``str``, ``tuple``/``list``/``frozenset``/
``set``/``dict`` of these (a :class:`~secagg.masking.graph.FrozenGraph` is exported as its dict),
:class:`~secagg.hazmat.handles.SecretBytes`,
:class:`~secagg.hazmat.agreement.X25519KeyPair`, numpy ``uint32`` arrays, :class:`Stage` and the
protocol messages of :mod:`secagg.masking.messages`. An attribute of any other type is refused
with an error naming the attribute and its type (never its value), so a field added to the
session later is either covered by this list or caught the first time it is exported. The round's
config, the enterprise's identity and the pinned roster are not exported: the caller supplies
them again at restore, and the config's digest is bound into the seal.

The blob is ``b"SAGS" | version u8 | ChaCha20-Poly1305(key, encoded attributes, ad)`` where the
associated data binds the format version, the config digest, round, client id and the session's
stage. The caller keeps that stage (not secret) beside the blob as a high-water mark and passes it
to :meth:`ClientSession.restore`, so a tampered blob, one for another client, round or config, and
an older blob replayed after a newer one was stored are all refused by the same opaque
:class:`~secagg.errors.AuthenticationFailed`. A store that can roll back the mark together with
the blob can replay a stage; keep the mark where the client alone writes (Flower's
``Context.state`` lives in the SuperNode, on the enterprise's side).

:func:`state_key` derives the sealing key from the enterprise's identity with HKDF, bound to the
config digest (hence federation roster, round and session), the client id and a transport scope
(for instance Flower's run id): a blob never opens under another round's or client's key.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar, get_args

import numpy as np

from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.hazmat.aead import open_sealed, seal
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import KeyContext, Purpose, derive_key
from secagg.hazmat.signing import export_private_bytes_for_storage
from secagg.masking import messages as m
from secagg.masking import wire
from secagg.masking.config import MaskingConfig, Stage
from secagg.masking.graph import FrozenGraph

if TYPE_CHECKING:
    from secagg.identity import Identity, Roster
    from secagg.masking.client import ClientSession

__all__ = ["STATE_FORMAT_VERSION", "export_session", "restore_session", "state_key"]

STATE_FORMAT_VERSION: Final = 1
_MAGIC: Final = b"SAGS"
_KEY_PROTOCOL: Final = "secagg-session-state"
#: attributes the caller supplies again at restore instead of exporting them
_RESUPPLIED: Final = frozenset({"config", "_identity", "_roster"})
_MESSAGE_TYPES: Final[tuple[type[Any], ...]] = get_args(m.Message)
_MAX_DEPTH: Final = 8

_S = TypeVar("_S", bound="ClientSession")


def state_key(identity: Identity, *, config: MaskingConfig, client_id: int,
              scope: bytes = b"") -> SecretBytes:
    """The key that seals ``client_id``'s session state for the round ``config`` describes.

    HKDF-SHA256 over the enterprise's Ed25519 identity seed (which never leaves the enterprise),
    with ``info`` naming this purpose and the client id and the salt covering the config digest
    (roster, round, session nonce) and ``scope`` (the transport's run, e.g. Flower's run id).
    """
    if not isinstance(scope, bytes):
        raise InvalidParameter(f"scope must be bytes, found {type(scope).__name__}")
    seed = SecretBytes(export_private_bytes_for_storage(identity.signing_key), label="identity")
    session = config.digest() + struct.pack(">I", len(scope)) + scope
    context = KeyContext(protocol=_KEY_PROTOCOL, version=STATE_FORMAT_VERSION, session=session,
                         round=config.round, purpose=Purpose.SESSION_STATE,
                         pair=(client_id, client_id))
    return derive_key(seed, context)


def _associated_data(config: MaskingConfig, client_id: int, stage: Stage) -> bytes:
    label = stage.value.encode()
    return (b"secagg-session-state" + _MAGIC + bytes([STATE_FORMAT_VERSION]) + config.digest()
            + struct.pack(">QIB", config.round, client_id, len(label)) + label)


def export_session(session: ClientSession, key: SecretBytes) -> bytes:
    """Seal every attribute of ``session`` but the re-supplied ones (see the module docstring)."""
    attrs = {name: value for name, value in vars(session).items() if name not in _RESUPPLIED}
    out = bytearray()
    out += struct.pack(">I", len(attrs))
    for name, value in attrs.items():
        _put_str(out, name)
        _encode(out, value, name, 0)
    ad = _associated_data(session.config, session.client_id, session.stage)
    return _MAGIC + bytes([STATE_FORMAT_VERSION]) + seal(key, bytes(out), ad)


def restore_session(cls: type[_S], blob: bytes, key: SecretBytes, *, config: MaskingConfig,
                    client_id: int, identity: Identity | None, roster: Roster | None,
                    stage: Stage) -> _S:
    """Rebuild a session of ``cls`` sealed by :func:`export_session` at ``stage``.

    Raises :class:`AuthenticationFailed` (opaque) for a blob that was altered, sealed under
    another key, for another config, round or client, or at another stage than ``stage``.
    """
    if not isinstance(stage, Stage):
        raise InvalidParameter(f"stage must be a Stage, found {type(stage).__name__}")
    config.check_roster(roster)
    if identity is not None and roster is not None \
            and roster.member(client_id).public_key != identity.public_key:
        raise InvalidParameter(f"this identity ({identity.fingerprint}) is not the one the "
                               f"roster pins for client {client_id}")
    if not isinstance(blob, bytes) or blob[:4] != _MAGIC or len(blob) < 5:
        raise AuthenticationFailed("session state")
    if blob[4] != STATE_FORMAT_VERSION:
        raise InvalidParameter(f"session state format version {blob[4]} is not supported "
                               f"(this is version {STATE_FORMAT_VERSION})")
    plain = open_sealed(key, blob[5:], _associated_data(config, client_id, stage),
                        what="session state")
    reader = _Reader(plain)
    attrs: dict[str, Any] = {}
    for _ in range(reader.u32()):
        name = reader.str_()
        attrs[name] = _decode(reader, 0)
    if reader.pos != len(plain):
        raise InvalidParameter("session state has trailing bytes")
    session = cls.__new__(cls)
    session.config = config
    session._identity = identity
    session._roster = roster
    for name, value in attrs.items():
        setattr(session, name, value)
    if session.client_id != client_id or session.stage is not stage:  # bound by the seal too
        raise InvalidParameter("session state does not match the expected client and stage")
    return session


# ---- the type-driven codec ---------------------------------------------------------------------

_NONE, _FALSE, _TRUE, _INT, _BYTES, _STR = 0, 1, 2, 3, 4, 5
_TUPLE, _LIST, _FROZENSET, _SET, _DICT = 6, 7, 8, 9, 10
_SECRET, _X25519, _U32_ARRAY, _STAGE, _MESSAGE = 11, 12, 13, 14, 15
_COLLECTIONS: Final[dict[type[Any], int]] = {tuple: _TUPLE, list: _LIST, frozenset: _FROZENSET,
                                             set: _SET}


def _put_bytes(out: bytearray, data: bytes) -> None:
    out += struct.pack(">Q", len(data))
    out += data


def _put_str(out: bytearray, text: str) -> None:
    _put_bytes(out, text.encode())


def _encode(out: bytearray, value: Any, where: str, depth: int) -> None:
    """Append ``value``; ``where`` names it (attribute path) in errors, which never show values."""
    if depth > _MAX_DEPTH:
        raise InvalidParameter(f"session attribute {where} is nested deeper than {_MAX_DEPTH}")
    kind = type(value)
    if value is None:
        out.append(_NONE)
    elif kind is bool:
        out.append(_TRUE if value else _FALSE)
    elif kind is int:
        out.append(_INT)
        _put_str(out, str(value))
    elif kind is bytes:
        out.append(_BYTES)
        _put_bytes(out, value)
    elif kind is str:
        out.append(_STR)
        _put_str(out, value)
    elif kind in _COLLECTIONS:
        out.append(_COLLECTIONS[kind])
        items = list(value)
        if kind in (frozenset, set):  # a canonical order: by encoding
            encoded = []
            for item in items:
                buf = bytearray()
                _encode(buf, item, f"{where}[]", depth + 1)
                encoded.append(bytes(buf))
            out += struct.pack(">Q", len(encoded))
            for item_bytes in sorted(encoded):
                out += item_bytes
            return
        out += struct.pack(">Q", len(items))
        for i, item in enumerate(items):
            _encode(out, item, f"{where}[{i}]", depth + 1)
    elif kind is dict or kind is FrozenGraph:  # the shared roster graph: restored as a dict
        out.append(_DICT)
        out += struct.pack(">Q", len(value))
        for k, v in value.items():
            _encode(out, k, f"{where} key", depth + 1)
            _encode(out, v, f"{where}[{k if type(k) is int else type(k).__name__}]", depth + 1)
    elif kind is SecretBytes:
        out.append(_SECRET)
        _put_str(out, value._label)
        _put_bytes(out, value.expose_secret_bytes())
    elif kind is X25519KeyPair:
        out.append(_X25519)
        _put_bytes(out, value.export_private_bytes_for_sharing().expose_secret_bytes())
    elif kind is np.ndarray:
        if value.dtype != np.uint32:
            raise InvalidParameter(f"session attribute {where} is a numpy array of dtype "
                                   f"{value.dtype}; only uint32 arrays can be exported")
        out.append(_U32_ARRAY)
        out += struct.pack(">B", value.ndim)
        out += struct.pack(f">{value.ndim}Q", *value.shape)
        _put_bytes(out, np.ascontiguousarray(value, dtype="<u4").tobytes())
    elif kind is Stage:
        out.append(_STAGE)
        _put_str(out, value.value)
    elif kind in _MESSAGE_TYPES:
        out.append(_MESSAGE)
        _put_bytes(out, wire.encode(value))
    else:
        raise InvalidParameter(
            f"session attribute {where} has type {kind.__module__}.{kind.__qualname__}, which the "
            "session state codec cannot export (secagg/masking/session_state.py lists the "
            "supported types); add it there with a test before storing it in a session")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidParameter("session state is truncated")
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


def _decode_array(r: _Reader) -> np.ndarray[Any, np.dtype[np.uint32]]:
    ndim = r.u8()
    shape = struct.unpack(f">{ndim}Q", r.take(8 * ndim))
    raw = r.bytes_()
    if len(raw) != 4 * int(np.prod(shape, dtype=np.int64)):
        raise InvalidParameter("session state holds an array of the wrong size")
    return np.frombuffer(raw, dtype="<u4").astype(np.uint32).reshape(shape)


_SIMPLE: Final[dict[int, Callable[[_Reader], Any]]] = {
    _NONE: lambda r: None,
    _FALSE: lambda r: False,
    _TRUE: lambda r: True,
    _INT: lambda r: int(r.str_()),
    _BYTES: lambda r: r.bytes_(),
    _STR: lambda r: r.str_(),
    _X25519: lambda r: X25519KeyPair.from_private_bytes(SecretBytes(r.bytes_())),
    _U32_ARRAY: _decode_array,
    _STAGE: lambda r: Stage(r.str_()),
    _MESSAGE: lambda r: wire.decode(r.bytes_()),
}
_BUILDERS: Final[dict[int, Callable[[list[Any]], Any]]] = {
    _TUPLE: tuple, _LIST: list, _FROZENSET: frozenset, _SET: set,
}


def _decode(r: _Reader, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise InvalidParameter("session state is nested too deeply")
    tag = r.u8()
    if tag in _SIMPLE:
        return _SIMPLE[tag](r)
    if tag in _BUILDERS:
        return _BUILDERS[tag]([_decode(r, depth + 1) for _ in range(r.u64())])
    if tag == _DICT:
        out = {}
        for _ in range(r.u64()):
            k = _decode(r, depth + 1)
            out[k] = _decode(r, depth + 1)
        return out
    if tag == _SECRET:
        label = r.str_()
        return SecretBytes(r.bytes_(), label=label)
    raise InvalidParameter(f"session state holds an unknown type tag {tag}")
