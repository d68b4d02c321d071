"""The client side: a Flower mod that sends the ClientApp's training result only through secagg's
masking protocol (active mode: roster-pinned identities, per-neighbourhood checks).

Drop-in where Flower's ``secaggplus_mod`` goes::

    from secagg.integrations.flower import secaggplus_mod

    app = ClientApp(mods=[secaggplus_mod])

Every ``train`` message must belong to a secure round: the first one of a round carries the
strategy's model and the round's config; the mod checks the config (active mode, bound to the
roster this enterprise pinned and to the model layout), runs the ClientApp on it, encodes the
returned ``ArrayRecord`` with its weight (the reply's ``num-examples`` metric, capped at the
round's ``max_weight``) and answers with its key advertisement. The model never leaves: the
reply keeps the ClientApp's metrics (in the clear, as with Flower's mod) and drops its arrays.
Later messages are answered by the restored session (:mod:`.client_state`). A ``train`` message
outside a secure round is refused, so a server cannot ask for a plaintext update; other message
types pass through untouched.
"""

from __future__ import annotations

import json

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import InvalidParameter, ProtocolAbort
from secagg.masking import ClientSession, MaskingConfig, encode_update, wire

from . import records as r
from .client_state import RoundState
from .credentials import Credentials, CredentialsSource, credentials_from_node_config

__all__ = ["SecAggPlusMod", "secaggplus_mod"]

class SecAggPlusMod:
    """A Flower mod running the client side of secagg's masking protocol."""

    def __init__(self, *, credentials: CredentialsSource = credentials_from_node_config) -> None:
        self._credentials = credentials

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        record = msg.content.config_records.get(r.PROTOCOL_RECORD)
        if record is None:
            raise ProtocolAbort("client", "a train message outside a secure round: this ClientApp "
                                "sends its training result only through secure aggregation (run "
                                "the ServerApp with secagg.integrations.flower.SecAggPlusWorkflow)")
        creds = self._credentials(ctxt)
        state = RoundState(ctxt, creds)
        if record.get(r.STAGE) == r.SETUP:
            return self._setup(msg, ctxt, call_next, record, state, creds)
        payload = record.get(r.PAYLOAD)
        if record.get(r.STAGE) != r.STEP or not isinstance(payload, bytes):
            raise ProtocolAbort("client", "malformed secure-aggregation message")
        session = state.load(wire.peek_header(payload).digest)
        try:
            answer = session.handle_bytes(payload)
        finally:  # an abort clears the session's secrets: the mark then says so
            state.save(session)
        return Message(RecordDict({r.PROTOCOL_RECORD: ConfigRecord({r.PAYLOAD: answer})}),
                       reply_to=msg)

    def _setup(self, msg: Message, ctxt: Context, call_next: ClientAppCallable,
               record: ConfigRecord, state: RoundState, creds: Credentials) -> Message:
        raw = record.get(r.CONFIG)
        try:
            fields = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise ProtocolAbort("client", f"the setup message's '{r.CONFIG}' is not a JSON object "
                                "of round config fields (MaskingConfig.to_dict)")
        config = MaskingConfig.from_dict(fields)
        if not config.active:
            raise ProtocolAbort("client", "the server asked for an honest-but-curious (passive) "
                                "round; this client takes part only in active rounds")
        layout = ParamSpec.from_json(str(record.get(r.LAYOUT)))
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
        vector = r.vector_of(arrays, layout)
        weight = r.weight_of(content, weight_key, config.max_weight)
        session = ClientSession(config, creds.client_id,
                                encode_update(config, vector, weight=weight),
                                identity=creds.identity, roster=creds.roster)
        advert = wire.encode(session.start())
        state.save(session)
        del content.array_records[arrays_key]  # the model never leaves in the clear
        content.config_records[r.PROTOCOL_RECORD] = ConfigRecord(
            {r.PAYLOAD: advert, r.ARRAYS_KEY: arrays_key})
        return Message(content, reply_to=msg)


#: The mod with credentials from the SuperNode's node_config (see :mod:`.credentials`); build
#: a :class:`SecAggPlusMod` with another ``credentials`` source otherwise.
secaggplus_mod = SecAggPlusMod()
