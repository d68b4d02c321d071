"""What every secagg client mod shares: the message routing around one protocol's session, and
the one call in which the ClientApp trains.

Every ``train`` message must carry the protocol record. The first one of a round (``setup``)
carries the round's config and model layout: the mod checks them (:meth:`SecureMod._config`:
bound to the roster this enterprise pinned, whole, with a policy no weaker than the roster's),
records the round in ``Context.state``, starts the protocol's session without an update
(:meth:`SecureMod._start`) and answers with its first message. Each later message is answered
by the session restored from ``Context.state`` and sealed back after it; the one that also
carries the strategy's content (the global model: the stage at which the protocol first needs
the update) runs the ClientApp on that content, gives the session the update it returns
(:meth:`SecureMod._provide`) and answers with the protocol's reply and the ClientApp's metrics,
never its model nor its weight metric (the protocol carries both protected; the workflow hands
the strategy the round's released total weight instead). So the update exists only inside that
one call and never in the state kept between calls. ``train`` messages of every action
(``train.<action>``, which Flower routes to the same train functions) go through the protocol;
other message types pass through untouched.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import InvalidParameter, ProtocolAbort, SecAggError

from . import records as r
from .credentials import Credentials, CredentialsSource, credentials_from_node_config

__all__ = ["SecureMod", "is_train"]


def is_train(message_type: str) -> bool:
    """Whether Flower routes ``message_type`` to a ClientApp's train functions: ``train`` and
    ``train.<action>`` alike."""
    return message_type.split(".", 1)[0] == MessageType.TRAIN


class SecureMod(ABC):
    """The shared client-side plumbing; a protocol's mod fills in the hooks below."""

    #: the ServerApp workflow the refusal of a plain train message points to
    WORKFLOW: ClassVar[str]
    #: what the setup's config is (named when it is not a JSON object)
    CONFIG: ClassVar[str]

    def __init__(self, *, credentials: CredentialsSource = credentials_from_node_config,
                 weight_keys: tuple[str, ...] = ("num-examples", "num_examples")) -> None:
        """``weight_keys``: the metric names a ClientApp may report its weight (number of
        examples) under, the first found counts; chosen here, by the client, and all of them
        are removed from the reply."""
        if not weight_keys or not all(isinstance(k, str) and k for k in weight_keys):
            raise InvalidParameter("weight_keys must be one or more metric names")
        self._credentials = credentials
        self._weight_keys = tuple(weight_keys)

    # ---- the protocol's hooks ---------------------------------------------------------------

    @abstractmethod
    def _state(self, ctxt: Context, creds: Credentials) -> Any:
        """The sealed-session store in ``ctxt.state`` (``begin``/``save``, and ``_load``)."""

    @abstractmethod
    def _load(self, state: Any, payload: bytes) -> Any:
        """The session that answers ``payload``."""

    @abstractmethod
    def _config(self, fields: dict[str, Any], layout: ParamSpec, creds: Credentials) -> Any:
        """The round's config from the server's JSON fields, refused (ProtocolAbort) unless this
        client takes part in such rounds (bound to the roster it pinned, whole, with a policy no
        weaker than the roster's). ``layout`` is the model the round aggregates."""

    @abstractmethod
    def _start(self, config: Any, creds: Credentials) -> tuple[Any, bytes]:
        """The round's session, made without the update, and its first message."""

    @abstractmethod
    def _is_training_stage(self, payload: bytes) -> bool:
        """Whether ``payload`` is the protocol message at which the client trains (the share
        delivery)."""

    @abstractmethod
    def _max_weight(self, session: Any) -> int:
        """The largest weight the round counts (larger ones are capped)."""

    @abstractmethod
    def _provide(self, session: Any, vector: npt.NDArray[np.float32], weight: int) -> None:
        """Give ``session`` the ClientApp's model ``vector`` with its ``weight``."""

    # ---- the plumbing ---------------------------------------------------------------------

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        # "train" and every named train action ("train.<action>") reach the ClientApp's train
        # functions: all of them go through the protocol
        if not is_train(msg.metadata.message_type):
            return call_next(msg, ctxt)
        record = msg.content.config_records.get(r.PROTOCOL_RECORD)
        if record is None:
            raise ProtocolAbort("client", "a train message outside a secure round: this ClientApp "
                                "sends its training result only through secure aggregation (run "
                                f"the ServerApp with secagg.integrations.flower.{self.WORKFLOW})")
        creds = self._credentials(ctxt)
        state = self._state(ctxt, creds)
        if record.get(r.STAGE) == r.SETUP:
            return self._setup(record, state, creds, msg)
        payload = record.get(r.PAYLOAD)
        if record.get(r.STAGE) != r.STEP or not isinstance(payload, bytes):
            raise ProtocolAbort("client", "malformed secure-aggregation message")
        session = self._load(state, payload)
        reply = RecordDict()
        if msg.content.array_records:  # the training stage: the strategy's model rides along
            # checked before the ClientApp runs: only the share delivery of a session still
            # waiting for its update takes a model (so training happens once per round, and the
            # update is never held between calls)
            if not (self._is_training_stage(payload) and session.awaiting_update):
                raise ProtocolAbort("client", "the server sent the model with a message other "
                                    "than this session's share delivery; refusing to train")
            trained = self._train(msg, ctxt, call_next, session)
            if isinstance(trained, Message):  # the ClientApp or its result failed: a dropout
                session.abandon("the ClientApp's training failed")
                state.save(session)  # returned, not raised, so Flower keeps the state: the
                return trained  # session can never be handed a model (and train) again
            reply = trained
        try:
            answer = session.handle_bytes(payload)
        finally:  # a refusal clears the session's secrets: the mark then says so
            state.save(session)
        if answer is None:
            raise ProtocolAbort("client", "the session had nothing to answer to this message")
        out = reply.config_records.get(r.PROTOCOL_RECORD)
        fields = ConfigRecord({r.PAYLOAD: answer})
        if out is not None:
            fields[r.ARRAYS_KEY] = out[r.ARRAYS_KEY]
        reply[r.PROTOCOL_RECORD] = fields
        return Message(reply, reply_to=msg)

    def _setup(self, record: ConfigRecord, state: Any, creds: Credentials,
               msg: Message) -> Message:
        raw = record.get(r.CONFIG)
        try:
            fields = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise ProtocolAbort("client", f"the setup message's '{r.CONFIG}' is not a JSON object "
                                f"of round config fields ({self.CONFIG})")
        layout = ParamSpec.from_json(str(record.get(r.LAYOUT)))
        try:
            config = self._config(fields, layout, creds)
        except (SecAggError, ValueError, TypeError, KeyError) as exc:
            if isinstance(exc, ProtocolAbort):
                raise
            raise ProtocolAbort("client", f"the server's round config is refused: {exc}") \
                from None
        if not config.layout_digest:
            raise ProtocolAbort("client", "the round's config names no model layout")
        layout.check_round(config.layout_digest)
        state.begin(config)
        session, first = self._start(config, creds)
        state.save(session)
        return Message(RecordDict({r.PROTOCOL_RECORD: ConfigRecord({r.PAYLOAD: first})}),
                       reply_to=msg)

    def _train(self, msg: Message, ctxt: Context, call_next: ClientAppCallable,
               session: Any) -> RecordDict | Message:
        """Run the ClientApp on the strategy's content and give ``session`` its model: the reply
        content to send (metrics, the ArrayRecord's name), or an error reply when the ClientApp
        or what it returned failed (its reason names what was wrong, never a value)."""
        del msg.content.config_records[r.PROTOCOL_RECORD]  # the ClientApp sees what Flower sent
        try:
            out = call_next(msg, ctxt)
            if out.has_error():
                return out
            content = out.content
            if len(content.array_records) != 1:
                raise InvalidParameter(f"the ClientApp returned {len(content.array_records)} "
                                       "ArrayRecords; secure aggregation sums exactly one")
            (arrays_key, arrays), = content.array_records.items()
            layout = r.layout_of(arrays)
            layout.check_round(session.config.layout_digest)  # the round's model, by name/shape
            self._provide(session, r.vector_of(arrays, layout),
                          r.weight_of(content, self._weight_keys, self._max_weight(session)))
        except Exception as exc:
            why = str(exc) if isinstance(exc, SecAggError) else type(exc).__name__
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                 reason=f"secagg: training for this round failed ({why}); this "
                                 "client is a dropout of the round"), reply_to=msg)
        del content.array_records[arrays_key]  # the model never leaves in the clear
        r.strip_weight(content, self._weight_keys)  # nor its weight, which the protocol protects
        content.config_records[r.PROTOCOL_RECORD] = ConfigRecord({r.ARRAYS_KEY: arrays_key})
        return content
