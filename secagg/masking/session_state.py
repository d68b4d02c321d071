"""A client session's state between transport calls, sealed under a key only that client holds.

Some transports run each protocol message in a fresh process or call (Flower's ClientApp), so a
:class:`~secagg.masking.client.ClientSession` must outlive the call that made it. It refuses to be
pickled; this module is the explicit export it points to: :meth:`ClientSession.export_state`
returns one sealed blob, :meth:`ClientSession.restore` rebuilds the session from it.

The codec (shared with the threshold CKKS session: :mod:`secagg.hazmat.sealed_state`) walks the
session's instance attributes and encodes each by its type, with no field list of its own:
``None``, ``bool``, ``int``, ``bytes``, ``str``, ``tuple``/``list``/``frozenset``/``set``/``dict``
of these (a :class:`~secagg.masking.graph.FrozenGraph` is exported as its dict),
:class:`~secagg.hazmat.handles.SecretBytes`, :class:`~secagg.hazmat.agreement.X25519KeyPair`
(the shared codec's core types), and, listed here, numpy ``uint32`` arrays, :class:`Stage` and
the protocol messages of :mod:`secagg.masking.messages`. An attribute of any other type is refused
with an error naming the attribute and its type (never its value), so a field added to the
session later is either covered by this list or caught the first time it is exported. The round's
config, the enterprise's identity and the pinned roster are not exported: the caller supplies
them again at restore, and the config's digest is bound into the seal. The blob format (tags and
framing) is the one format 1 always had: moving the codec changed no byte.

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

from typing import TYPE_CHECKING, Any, Final, TypeVar, get_args

import numpy as np

from secagg.errors import InvalidParameter
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import Purpose
from secagg.hazmat.sealed_state import (
    ArrayFormat,
    Extension,
    Reader,
    StateBinding,
    StateCodec,
    derive_state_key,
    enum_extension,
    put_bytes,
)
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

_S = TypeVar("_S", bound="ClientSession")

# masking's types after the shared core tags (0-12); the numbers are format 1's
_U32_ARRAY, _STAGE, _MESSAGE = 13, 14, 15


def _write_message(codec: StateCodec, out: bytearray, value: Any, where: str, depth: int) -> None:
    put_bytes(out, wire.encode(value))


def _read_message(codec: StateCodec, r: Reader, depth: int) -> Any:
    return wire.decode(r.bytes_())


_CODEC: Final = StateCodec(
    what="session state", magic=_MAGIC, version=STATE_FORMAT_VERSION,
    domain=b"secagg-session-state", listed_in="secagg/masking/session_state.py",
    arrays=ArrayFormat(_U32_ARRAY, (np.dtype(np.uint32),), record_dtype=False),
    extensions=(enum_extension(_STAGE, Stage),
                Extension(_MESSAGE, _MESSAGE_TYPES, _write_message, _read_message)),
    aliases={FrozenGraph: dict},  # the shared roster graph: restored as a dict
)


def state_key(identity: Identity, *, config: MaskingConfig, client_id: int,
              scope: bytes = b"") -> SecretBytes:
    """The key that seals ``client_id``'s session state for the round ``config`` describes.

    HKDF-SHA256 over the enterprise's Ed25519 identity seed (which never leaves the enterprise),
    with ``info`` naming this purpose and the client id and the salt covering the config digest
    (roster, round, session nonce) and ``scope`` (the transport's run, e.g. Flower's run id).
    """
    return derive_state_key(identity.signing_key, protocol=_KEY_PROTOCOL,
                            purpose=Purpose.SESSION_STATE, version=STATE_FORMAT_VERSION,
                            config_digest=config.digest(), round=config.round,
                            client_id=client_id, scope=scope)


def _binding(config: MaskingConfig, client_id: int, stage: Stage) -> StateBinding:
    return StateBinding(config.digest(), config.round, client_id, stage.value)


def export_session(session: ClientSession, key: SecretBytes) -> bytes:
    """Seal every attribute of ``session`` but the re-supplied ones (see the module docstring)."""
    attrs = {name: value for name, value in vars(session).items() if name not in _RESUPPLIED}
    return _CODEC.seal(key, attrs, _binding(session.config, session.client_id, session.stage))


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
    attrs = _CODEC.open(blob, key, _binding(config, client_id, stage))
    session = cls.__new__(cls)
    session.config = config
    session._identity = identity
    session._roster = roster
    for name, value in attrs.items():
        setattr(session, name, value)
    if session.client_id != client_id or session.stage is not stage:  # bound by the seal too
        raise InvalidParameter("session state does not match the expected client and stage")
    return session
