"""A client's round state in Flower's ``Context.state``, sealed between ClientApp calls.

Flower may run every message of a round in a fresh ClientApp call, so the protocol session is
kept in ``Context.state`` as one ConfigRecord: the round's config (public), the client id, the
stage the session reached (a public high-water mark) and the session sealed with its
``export_state`` under a key derived from the enterprise's identity, Flower's run id, the round's
config and the client id. The stage is bound into the seal, so an older blob written back after a
newer one is refused, as is a tampered one or one from another round, run or client. A second
setup for any round this client began in the same Flower run is refused too (the digests of the
rounds begun are kept beside the session), so it never advertises twice in one round.

:class:`RoundState` keeps a masking session (:class:`secagg.masking.ClientSession`),
:class:`ThresholdRoundState` a threshold-CKKS one
(:class:`secagg.ckks.threshold.session.ClientSession`); each in its own record, so neither
protocol's mod can be handed the other's state.
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Any, ClassVar, Final

from flwr.app import ConfigRecord, Context

from secagg.errors import AlreadyUsed, InvalidParameter, ProtocolAbort
from secagg.masking import ClientSession, MaskingConfig, Stage
from secagg.masking.session_state import state_key

from .credentials import Credentials

if TYPE_CHECKING:
    from secagg.ckks.threshold.session import ClientSession as ThresholdClient
    from secagg.ckks.threshold.session import ThresholdRoundConfig
    from secagg.hazmat.handles import SecretBytes

__all__ = ["STATE_RECORD", "THRESHOLD_STATE_RECORD", "RoundState", "ThresholdRoundState"]

STATE_RECORD: Final = "secagg-session"
THRESHOLD_STATE_RECORD: Final = "secagg-ckks-threshold-session"


class _SealedRound:
    """The record logic both protocols share; a subclass names the record, the stage order,
    the terminal stages, and how to derive the key and restore the session."""

    RECORD: ClassVar[str]
    ORDER: ClassVar[tuple[str, ...]]  # stage values, earliest first
    FINISHED: ClassVar[frozenset[str]]  # stages after which the session answers nothing more

    def __init__(self, context: Context, credentials: Credentials) -> None:
        self._context = context
        self._credentials = credentials

    def _scope(self) -> bytes:
        return b"flower-run" + struct.pack(">Q", int(self._context.run_id) & (2**64 - 1))

    def _begin(self, digest: bytes, round_index: int, config_json: str, first: str) -> None:
        """Start the round whose config digest is ``digest``, refusing one this client began
        before in this Flower run (any earlier one, not only the current: a server alternating
        two setups gets no second advert for either)."""
        history = self._context.state.config_records.get(self.RECORD + ".begun")
        stored = history.get("digests", []) if history is not None else []
        begun = [str(d) for d in stored] if isinstance(stored, list) else []
        if digest.hex() in begun:
            raise AlreadyUsed(f"this client already took part in round {round_index} of this "
                              "configuration; refusing to set it up twice")
        self._context.state.config_records[self.RECORD + ".begun"] = ConfigRecord(
            {"digests": [*begun, digest.hex()]})
        self._context.state.config_records[self.RECORD] = ConfigRecord({
            "digest": digest.hex(), "config": config_json,
            "client-id": self._credentials.client_id, "stage": first,
        })

    def _save(self, digest: bytes, stage: str, seal: Any) -> ConfigRecord:
        """Raise the stage mark to ``stage`` and store ``seal()`` (no blob once finished)."""
        record = self._record(digest)
        if self.ORDER.index(stage) < self.ORDER.index(str(record["stage"])):
            raise InvalidParameter("a session may not go back to an earlier stage")
        record["stage"] = stage
        if stage in self.FINISHED:
            record.pop("blob", None)
        else:
            record["blob"] = seal()
        return record

    def _stored(self, digest: bytes | None) -> tuple[ConfigRecord, str, bytes]:
        """The record, its stage mark and its blob; refuses a finished session."""
        record = self._record(digest)
        stage = str(record["stage"])
        if stage in self.FINISHED or "blob" not in record:
            raise AlreadyUsed("this client's session for the round is finished (completed or "
                              "aborted); refusing to answer again")
        blob = record["blob"]
        if not isinstance(blob, bytes):
            raise InvalidParameter("the stored session state is not bytes")
        return record, stage, blob

    def _record(self, digest: bytes | None) -> ConfigRecord:
        """The stored record; with ``digest``, only if it is that round's."""
        record = self._context.state.config_records.get(self.RECORD)
        if record is None or (digest is not None and record.get("digest") != digest.hex()):
            raise ProtocolAbort("client", "a protocol message for a round this client holds no "
                                "session for (was the setup message lost, or is this another "
                                "round's message?)")
        if record.get("client-id") != self._credentials.client_id:
            raise ProtocolAbort("client", "the stored session belongs to another client id")
        return record


class RoundState(_SealedRound):
    """The record in ``context.state`` for this client's current masking round."""

    RECORD = STATE_RECORD
    ORDER = tuple(s.value for s in Stage)
    FINISHED = frozenset({Stage.DONE.value})

    def _key_for(self, config: MaskingConfig) -> SecretBytes:
        return state_key(self._credentials.identity, config=config,
                         client_id=self._credentials.client_id, scope=self._scope())

    def begin(self, config: MaskingConfig) -> None:
        """Record that this client starts the round ``config`` describes; refuse a round it began."""
        self._begin(config.digest(), config.round, json.dumps(config.to_dict()),
                    Stage.ADVERTISE.value)

    def save(self, session: ClientSession) -> None:
        """Seal ``session`` and raise the stage mark; a finished session leaves no blob."""
        self._save(session.config.digest(), session.stage.value,
                   lambda: session.export_state(self._key_for(session.config)))

    def load(self, digest: bytes) -> ClientSession:
        """The session of the round whose config digest is ``digest``."""
        record, stage, blob = self._stored(digest)
        config = MaskingConfig.from_dict(json.loads(str(record["config"])))
        creds = self._credentials
        return ClientSession.restore(blob, self._key_for(config), config=config,
                                     client_id=creds.client_id, identity=creds.identity,
                                     roster=creds.roster, stage=Stage(stage))


class ThresholdRoundState(_SealedRound):
    """The record in ``context.state`` for this client's current threshold-CKKS round.

    A session that sent its partial decryption keeps its blob (the server may retry the
    decryption once with fewer decryptors); the record also counts the partial decryptions
    sent, and the count is sealed into the blob with the stage, so an older blob of the same
    stage written back does not open and cannot make the client decrypt more often than the
    round's smudging budget.
    """

    RECORD = THRESHOLD_STATE_RECORD
    ORDER = ("new", "advertised", "dealt", "uploaded", "signed", "decrypted", "refused")
    FINISHED = frozenset({"refused"})

    def _key_for(self, config: ThresholdRoundConfig) -> SecretBytes:
        from secagg.ckks.threshold.session_state import state_key as threshold_state_key

        return threshold_state_key(self._credentials.identity, config=config,
                                   client_id=self._credentials.client_id, scope=self._scope())

    def begin(self, config: ThresholdRoundConfig) -> None:
        """Record that this client starts the round ``config`` describes; refuse a round it began."""
        self._begin(config.digest(), config.round, json.dumps(config.to_dict()), "new")

    def save(self, session: ThresholdClient) -> None:
        """Seal ``session``, raise the stage mark and count its partial decryptions."""
        record = self._save(session.config.digest(), session.stage.value,
                            lambda: session.export_state(self._key_for(session.config)))
        record["partials"] = session.partials_sent

    def load(self) -> ThresholdClient:
        """The session of the round this client last set up."""
        from secagg.ckks.threshold.session import ClientSession as ThresholdClient
        from secagg.ckks.threshold.session import ClientStage, ThresholdRoundConfig

        record, stage, blob = self._stored(None)
        config = ThresholdRoundConfig.from_dict(json.loads(str(record["config"])))
        creds = self._credentials
        partials = record.get("partials", 0)
        if not isinstance(partials, int) or isinstance(partials, bool):
            raise InvalidParameter("the stored partial-decryption count is not an integer")
        # the count is sealed into the blob's associated data: an older blob of the same stage
        # (before a retry) does not open
        return ThresholdClient.restore(blob, self._key_for(config), config=config,
                                       client_id=creds.client_id, identity=creds.identity,
                                       roster=creds.roster, stage=ClientStage(stage),
                                       partials_sent=partials)
