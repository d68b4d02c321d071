"""A client's round state in Flower's ``Context.state``, sealed between ClientApp calls.

Flower may run every message of a round in a fresh ClientApp call, so the masking session is
kept in ``Context.state`` as one ConfigRecord: the round's config (public), the client id, the
stage the session reached (a public high-water mark) and the session sealed with
:meth:`~secagg.masking.ClientSession.export_state` under a key derived from the enterprise's
identity, Flower's run id, the round's config and the client id. The stage is bound into the
seal, so an older blob written back after a newer one is refused, as is a tampered one or one
from another round, run or client. A second setup for a round already begun is refused too
(a client never advertises twice in one round).
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Final

from flwr.app import ConfigRecord, Context

from secagg.errors import AlreadyUsed, InvalidParameter, ProtocolAbort
from secagg.masking import ClientSession, MaskingConfig, Stage
from secagg.masking.session_state import state_key

from .credentials import Credentials

if TYPE_CHECKING:
    from secagg.hazmat.handles import SecretBytes

__all__ = ["STATE_RECORD", "RoundState"]

STATE_RECORD: Final = "secagg-session"
_ORDER: Final = [s.value for s in Stage]


class RoundState:
    """The record in ``context.state`` for this client's current round."""

    def __init__(self, context: Context, credentials: Credentials) -> None:
        self._context = context
        self._credentials = credentials

    def _key_for(self, config: MaskingConfig) -> SecretBytes:
        scope = b"flower-run" + struct.pack(">Q", int(self._context.run_id) & (2**64 - 1))
        return state_key(self._credentials.identity, config=config,
                         client_id=self._credentials.client_id, scope=scope)

    def begin(self, config: MaskingConfig) -> None:
        """Record that this client starts the round ``config`` describes; refuse a round it began."""
        record = self._context.state.config_records.get(STATE_RECORD)
        if record is not None and record.get("digest") == config.digest().hex():
            raise AlreadyUsed(f"this client already took part in round {config.round} of this "
                              "configuration; refusing to set it up twice")
        self._context.state.config_records[STATE_RECORD] = ConfigRecord({
            "digest": config.digest().hex(), "config": json.dumps(config.to_dict()),
            "client-id": self._credentials.client_id, "stage": Stage.ADVERTISE.value,
        })

    def save(self, session: ClientSession) -> None:
        """Seal ``session`` and raise the stage mark; a finished session leaves no blob."""
        record = self._record(session.config.digest())
        stage = session.stage
        if _ORDER.index(stage.value) < _ORDER.index(str(record["stage"])):
            raise InvalidParameter("a session may not go back to an earlier stage")
        record["stage"] = stage.value
        if stage is Stage.DONE:
            record.pop("blob", None)
        else:
            record["blob"] = session.export_state(self._key_for(session.config))

    def load(self, digest: bytes) -> ClientSession:
        """The session of the round whose config digest is ``digest``."""
        record = self._record(digest)
        stage = Stage(str(record["stage"]))
        if stage is Stage.DONE or "blob" not in record:
            raise AlreadyUsed("this client's session for the round is finished (completed or "
                              "aborted); refusing to answer again")
        config = MaskingConfig.from_dict(json.loads(str(record["config"])))
        blob = record["blob"]
        if not isinstance(blob, bytes):
            raise InvalidParameter("the stored session state is not bytes")
        creds = self._credentials
        return ClientSession.restore(blob, self._key_for(config), config=config,
                                     client_id=creds.client_id,
                                     identity=creds.identity, roster=creds.roster, stage=stage)

    def _record(self, digest: bytes) -> ConfigRecord:
        record = self._context.state.config_records.get(STATE_RECORD)
        if record is None or record.get("digest") != digest.hex():
            raise ProtocolAbort("client", "a protocol message for a round this client holds no "
                                "session for (was the setup message lost, or is this another "
                                "round's message?)")
        if record.get("client-id") != self._credentials.client_id:
            raise ProtocolAbort("client", "the stored session belongs to another client id")
        return record
