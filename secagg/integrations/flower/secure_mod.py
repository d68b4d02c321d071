"""What every secagg client mod shares: the message routing and the setup round-trip around one
protocol's session.

A ``train`` message must carry the protocol record. Its first message of a round (``setup``)
carries the strategy's content with the round's config and model layout: the mod checks them
(:meth:`SecureMod._config`, the layout digest), records the round in ``Context.state``, runs the
ClientApp, turns the one ``ArrayRecord`` it returns into the protocol's first message
(:meth:`SecureMod._start`) and answers with that message and the ClientApp's metrics, never the
model, and without the weight metric (the protocol carries the weight as protected as the
model; the workflow hands the strategy the round's released total instead). Every later message
is answered by the session restored from ``Context.state`` and
sealed back after it. ``train`` messages of every action (``train.<action>``, which Flower routes
to the same train functions) go through the protocol; other message types pass through.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import InvalidParameter, ProtocolAbort, SecAggError

from . import records as r
from .credentials import Credentials, CredentialsSource, credentials_from_node_config

__all__ = ["SecureMod", "is_train"]


def is_train(message_type: str) -> bool:
    """Whether Flower routes ``message_type`` to a ClientApp's train functions: ``train`` and
    ``train.<action>`` alike."""
    return message_type.split(".", 1)[0] == MessageType.TRAIN


class SecureMod:
    """The shared client-side plumbing; a protocol's mod fills in the hooks below."""

    #: the ServerApp workflow the refusal of a plain train message points to
    WORKFLOW: ClassVar[str]
    #: what the setup's config is (named when it is not a JSON object)
    CONFIG: ClassVar[str]

    def __init__(self, *, credentials: CredentialsSource = credentials_from_node_config) -> None:
        self._credentials = credentials

    # ---- the protocol's hooks ---------------------------------------------------------------

    def _state(self, ctxt: Context, creds: Credentials) -> Any:
        """The sealed-session store in ``ctxt.state`` (``begin``/``save``, and ``_load``)."""
        raise NotImplementedError

    def _load(self, state: Any, payload: bytes) -> Any:
        """The session that answers ``payload``."""
        raise NotImplementedError

    def _config(self, fields: dict[str, Any], layout: ParamSpec, creds: Credentials) -> Any:
        """The round's config from the server's JSON fields, refused (ProtocolAbort) unless this
        client takes part in such rounds (bound to the roster it pinned, whole, with a policy no
        weaker than the roster's): checked before the ClientApp trains. ``layout`` is the model
        the round aggregates."""
        raise NotImplementedError

    def _start(self, config: Any, creds: Credentials, vector: npt.NDArray[np.float32],
               content: RecordDict, weight_key: str) -> tuple[Any, bytes]:
        """The round's session for the ClientApp's model ``vector`` (weight: metric
        ``weight_key`` of ``content``) and its first message."""
        raise NotImplementedError

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
            return self._setup(msg, ctxt, call_next, record, state, creds)
        payload = record.get(r.PAYLOAD)
        if record.get(r.STAGE) != r.STEP or not isinstance(payload, bytes):
            raise ProtocolAbort("client", "malformed secure-aggregation message")
        session = self._load(state, payload)
        try:
            answer = session.handle_bytes(payload)
        finally:  # a refusal clears the session's secrets: the mark then says so
            state.save(session)
        if answer is None:
            raise ProtocolAbort("client", "the session had nothing to answer to this message")
        return Message(RecordDict({r.PROTOCOL_RECORD: ConfigRecord({r.PAYLOAD: answer})}),
                       reply_to=msg)

    def _setup(self, msg: Message, ctxt: Context, call_next: ClientAppCallable,
               record: ConfigRecord, state: Any, creds: Credentials) -> Message:
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
        weight_key = str(record.get(r.WEIGHT_KEY, "num-examples"))
        state.begin(config)
        del msg.content.config_records[r.PROTOCOL_RECORD]  # the ClientApp sees what Flower sent
        out = call_next(msg, ctxt)
        if out.has_error():
            return out
        content = out.content
        if len(content.array_records) != 1:
            raise InvalidParameter(f"the ClientApp returned {len(content.array_records)} "
                                   "ArrayRecords; secure aggregation sums exactly one")
        (arrays_key, arrays), = content.array_records.items()
        session, first = self._start(config, creds, r.vector_of(arrays, layout), content,
                                     weight_key)
        state.save(session)
        del content.array_records[arrays_key]  # the model never leaves in the clear
        r.strip_weight(content, weight_key)  # nor its weight, which the protocol protects too
        content.config_records[r.PROTOCOL_RECORD] = ConfigRecord(
            {r.PAYLOAD: first, r.ARRAYS_KEY: arrays_key})
        return Message(content, reply_to=msg)
