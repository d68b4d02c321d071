"""A threshold CKKS client session between transport calls, sealed under a key only that client
holds.

A :class:`~secagg.ckks.threshold.session.ClientSession` holds the round's fresh secret (in its
:class:`~secagg.ckks.threshold.protocol.ThresholdParty`) and refuses to be pickled. A transport
that runs each protocol message in a fresh process carries it with this explicit export instead:
:meth:`ClientSession.export_state` returns one sealed blob, :meth:`ClientSession.restore`
rebuilds the session from it. The codec and the frame are the masking session's
(:mod:`secagg.hazmat.sealed_state`); this module says what is exported and lists the types
threshold sessions add to the shared core:

* numpy arrays of dtype ``uint64`` (ring residues), ``int64`` and ``float64`` (the weighted
  update), with shape and dtype recorded; any other dtype is refused naming the attribute;
* :class:`~secagg.ckks.threshold.session.ClientStage`;
* the :class:`~secagg.ckks.threshold.protocol.ThresholdParty`, as the attributes of
  :meth:`~.ThresholdParty.export_fields` (the secret's residues, the share bundles it holds, the
  statements it signed, the round seeds it encrypted under, the smudging budget spent), with its
  :class:`~secagg.ckks.threshold.sharing.ShareBundle` and signed-statement records field by field.

Not exported, re-supplied by the caller: the round config, the enterprise's identity and the
pinned roster, and the client id. Not exported, rebuilt from those at restore by the very code
``__init__`` runs (so the same checks on policy, membership and identity apply): the round roster,
the config digest, the ring, the setup digest, and the party's ring, ids, terms, setup, policy and
its SEAL encryptor and decryptor (built from the secret's residues).

Blob: ``b"SCTS" | version u8 | ChaCha20-Poly1305(key, attributes, ad)``; the associated data
binds this module's domain, the format version, the config digest, the round, the client id and
the high-water mark ``stage`` (at ``decrypted`` also the number of partial decryptions sent: a
retry stays at that stage but spends smudging budget, so an export from before it must not open
after it). The caller keeps the mark beside the blob and passes it back, so a tampered blob, one
for another client, round, config or transport scope, and an older blob replayed after a newer
one was stored are all refused by the same opaque :class:`~secagg.errors.AuthenticationFailed`. A
store that can roll back the mark together with the blob can replay a stage; keep the mark where
the client alone writes.

A session refused by the client (stage ``refused``) has dropped its secret on purpose; it is not
exported (:class:`~secagg.errors.InvalidParameter`) and the round goes on without it, as for any
dropout.

:func:`state_key` derives the sealing key from the enterprise's identity with HKDF, under its own
protocol label and :attr:`~secagg.hazmat.kdf.Purpose.THRESHOLD_SESSION_STATE`, bound to the
config digest, the client id and a transport scope: a masking state key never opens a threshold
blob, nor the reverse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypeVar

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
    record_extension,
)

from .protocol import ThresholdParty, _Statement
from .session import ClientStage, ThresholdRoundConfig
from .sharing import ShareBundle

if TYPE_CHECKING:
    from secagg.identity import Identity, Roster

    from .session import ClientSession

__all__ = ["STATE_FORMAT_VERSION", "export_session", "restore_session", "state_key"]

STATE_FORMAT_VERSION: Final = 1
_MAGIC: Final = b"SCTS"
_KEY_PROTOCOL: Final = "secagg-ckks-threshold-session-state"
#: attributes the caller supplies again at restore
_RESUPPLIED: Final = frozenset({"config", "client_id", "_identity"})
#: attributes that are pure functions of the re-supplied ones, rebuilt at restore
_REBUILT: Final = frozenset({"_roster", "_digest", "_ring", "_setup"})
_MAX_PARTIALS: Final = 2  # the first decryption and one retry (session.ATTEMPTS)

_S = TypeVar("_S", bound="ClientSession")

# threshold's types after the shared core tags (0-12)
_ARRAY, _STAGE, _PARTY, _BUNDLE, _STATEMENT = 13, 14, 15, 16, 17


class _PartyFields:
    """A decoded party, before :func:`restore_session` binds it to the re-supplied round."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields


def _write_party(codec: StateCodec, out: bytearray, party: ThresholdParty, where: str,
                 depth: int) -> None:
    codec.write_attrs(out, party.export_fields(), where, depth + 1)


def _read_party(codec: StateCodec, r: Reader, depth: int) -> _PartyFields:
    return _PartyFields(codec.read_attrs(r, depth + 1))


_CODEC: Final = StateCodec(
    what="threshold session state", magic=_MAGIC, version=STATE_FORMAT_VERSION,
    domain=b"secagg-ckks-threshold-session-state",
    listed_in="secagg/ckks/threshold/session_state.py",
    arrays=ArrayFormat(_ARRAY, (np.dtype(np.uint64), np.dtype(np.int64), np.dtype(np.float64))),
    extensions=(enum_extension(_STAGE, ClientStage),
                Extension(_PARTY, (ThresholdParty,), _write_party, _read_party),
                record_extension(_BUNDLE, ShareBundle),
                record_extension(_STATEMENT, _Statement)),
)


def state_key(identity: Identity, *, config: ThresholdRoundConfig, client_id: int,
              scope: bytes = b"") -> SecretBytes:
    """The key that seals ``client_id``'s threshold session state for the round ``config``
    describes: HKDF-SHA256 over the enterprise's Ed25519 identity seed (which never leaves the
    enterprise), ``info`` naming this protocol, purpose and the client id, the salt covering the
    config digest (roster, round, session nonce, parameters) and ``scope`` (the transport's run).
    """
    if not isinstance(config, ThresholdRoundConfig):
        raise InvalidParameter(f"config must be a ThresholdRoundConfig, found "
                               f"{type(config).__name__}")
    return derive_state_key(identity.signing_key, protocol=_KEY_PROTOCOL,
                            purpose=Purpose.THRESHOLD_SESSION_STATE,
                            version=STATE_FORMAT_VERSION, config_digest=config.digest(),
                            round=config.round, client_id=client_id, scope=scope)


def _mark(stage: ClientStage, partials: int) -> str:
    return f"{stage.value}/{partials}"


def _binding(config: ThresholdRoundConfig, client_id: int, stage: ClientStage,
             partials: int) -> StateBinding:
    return StateBinding(config.digest(), config.round, client_id, _mark(stage, partials))


def export_session(session: ClientSession, key: SecretBytes) -> bytes:
    """Seal every attribute of ``session`` but the re-supplied and rebuilt ones."""
    if session.stage is ClientStage.FAILED:
        raise InvalidParameter(f"client {session.client_id}'s session was refused and has "
                               "dropped its secret; there is nothing to export (the round goes "
                               "on without it, like any dropout)")
    attrs = {name: value for name, value in vars(session).items()
             if name not in _RESUPPLIED and name not in _REBUILT}
    return _CODEC.seal(key, attrs, _binding(session.config, session.client_id, session.stage,
                                            session.partials_sent))


def restore_session(cls: type[_S], blob: bytes, key: SecretBytes, *,
                    config: ThresholdRoundConfig, client_id: int, identity: Identity,
                    roster: Roster, stage: ClientStage, partials_sent: int | None = None) -> _S:
    """Rebuild a session of ``cls`` sealed by :func:`export_session` at ``stage`` (and
    ``partials_sent``, by default the fewest the stage allows: 1 at ``decrypted``, else 0).

    The round is checked as ``__init__`` checks it (:class:`InvalidParameter`) before the blob is
    opened; a blob that was altered, sealed under another key, for another config, round or
    client, or at another mark is :class:`AuthenticationFailed` (opaque).
    """
    if not isinstance(stage, ClientStage):
        raise InvalidParameter(f"stage must be a ClientStage, found {type(stage).__name__}")
    if stage is ClientStage.FAILED:
        raise InvalidParameter("a refused session is never exported, so none is restored")
    if not isinstance(config, ThresholdRoundConfig):
        raise InvalidParameter(f"config must be a ThresholdRoundConfig, found "
                               f"{type(config).__name__}")
    if isinstance(client_id, bool) or not isinstance(client_id, int):
        raise InvalidParameter(f"client_id must be an int, found {type(client_id).__name__}")
    decrypted = stage is ClientStage.DECRYPTED
    partials = (1 if decrypted else 0) if partials_sent is None else partials_sent
    if isinstance(partials, bool) or not isinstance(partials, int) \
            or not (1 <= partials <= _MAX_PARTIALS if decrypted else partials == 0):
        raise InvalidParameter(f"partials_sent {partials_sent!r} is impossible at stage "
                               f"{stage.value!r} (1 or {_MAX_PARTIALS} at 'decrypted', else 0)")
    session = cls.__new__(cls)
    session._bind(config, client_id, identity, roster)  # the checks __init__ runs
    attrs = _CODEC.open(blob, key, _binding(config, client_id, stage, partials))
    clash = sorted(set(attrs) & (_RESUPPLIED | _REBUILT))
    if clash:
        raise InvalidParameter(f"threshold session state carries re-supplied attributes {clash}")
    for name, value in attrs.items():
        if isinstance(value, _PartyFields):
            value = ThresholdParty.from_fields(
                session._ring, client_id, config.client_ids, config.threshold, value.fields,
                identity=identity, roster=session._roster, policy=config.policy)
        setattr(session, name, value)
    if session.stage is not stage or session.partials_sent != partials:  # bound by the seal too
        raise InvalidParameter("threshold session state does not match the expected stage")
    return session
