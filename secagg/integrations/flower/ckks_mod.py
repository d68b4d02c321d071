"""The client side of threshold CKKS in Flower: a mod that sends the ClientApp's training result
only as a threshold-CKKS upload (no enterprise, and not the server, holds a decryption key)::

    from secagg.integrations.flower import threshold_ckks_mod

    app = ClientApp(mods=[threshold_ckks_mod])

Every ``train`` message must belong to a threshold round run by
:class:`~secagg.integrations.flower.ThresholdCKKSWorkflow`. The first one carries the strategy's
model and the round's :class:`~secagg.ckks.threshold.session.ThresholdRoundConfig`; the mod
checks it (bound to the roster this enterprise pinned, covering all of it, with a threshold and
decryption policy no weaker than the roster's, and to the model layout), runs the ClientApp,
clips the returned ``ArrayRecord`` to the round's ``value_bound``, takes its weight from the
reply's ``num-examples`` metric (capped at ``weight_bound``) and answers with the signed advert
of this round's fresh box key. The model never leaves: the reply keeps the ClientApp's metrics
and drops its arrays. Later messages (key request, share delivery, statement request, partial
requests) are answered by the restored session (:class:`.client_state.ThresholdRoundState`).
A ``train`` message outside a threshold round is refused; other message types pass through.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import InvalidParameter, ProtocolAbort, SecAggError

from . import records as r
from .client_state import ThresholdRoundState
from .credentials import Credentials, CredentialsSource, credentials_from_node_config

__all__ = ["ThresholdCKKSMod", "threshold_ckks_mod"]

_log = logging.getLogger(__name__)


class ThresholdCKKSMod:
    """A Flower mod running the client side of secagg's threshold-CKKS protocol."""

    def __init__(self, *, credentials: CredentialsSource = credentials_from_node_config) -> None:
        self._credentials = credentials

    def __call__(self, msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        record = msg.content.config_records.get(r.PROTOCOL_RECORD)
        if record is None:
            raise ProtocolAbort("client", "a train message outside a threshold-CKKS round: this "
                                "ClientApp sends its training result only encrypted (run the "
                                "ServerApp with secagg.integrations.flower.ThresholdCKKSWorkflow)")
        creds = self._credentials(ctxt)
        state = ThresholdRoundState(ctxt, creds)
        if record.get(r.STAGE) == r.SETUP:
            return self._setup(msg, ctxt, call_next, record, state, creds)
        payload = record.get(r.PAYLOAD)
        if record.get(r.STAGE) != r.STEP or not isinstance(payload, bytes):
            raise ProtocolAbort("client", "malformed threshold-CKKS message")
        session = state.load()
        try:
            answer = session.handle_bytes(payload)
        finally:  # a refusal drops the secret: the mark then says so and no blob is kept
            state.save(session)
        if answer is None:
            raise ProtocolAbort("client", "the session had nothing to answer to this message")
        return Message(RecordDict({r.PROTOCOL_RECORD: ConfigRecord({r.PAYLOAD: answer})}),
                       reply_to=msg)

    def _setup(self, msg: Message, ctxt: Context, call_next: ClientAppCallable,
               record: ConfigRecord, state: ThresholdRoundState, creds: Credentials) -> Message:
        from secagg.ckks.threshold.session import ClientSession, ThresholdRoundConfig

        raw = record.get(r.CONFIG)
        try:
            fields = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise ProtocolAbort("client", f"the setup message's '{r.CONFIG}' is not a JSON object "
                                "of round config fields (ThresholdRoundConfig.to_dict)")
        try:
            config = ThresholdRoundConfig.from_dict(fields)
        except (SecAggError, ValueError, TypeError, KeyError) as exc:
            raise ProtocolAbort("client", f"the server's threshold round config is refused: "
                                f"{exc}") from None
        if not config.layout_digest:
            raise ProtocolAbort("client", "the round's config names no model layout")
        layout = ParamSpec.from_json(str(record.get(r.LAYOUT)))
        layout.check_round(config.layout_digest)
        if layout.size != config.vector_length:
            raise ProtocolAbort("client", f"the model layout holds {layout.size} values; the "
                                f"round's config encrypts {config.vector_length}")
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
        bound = float(config.value_bound)
        vector = np.clip(r.vector_of(arrays, layout).astype(np.float64), -bound, bound)
        weight = r.weight_of(content, weight_key, int(config.weight_bound))
        # the session re-checks the config against the pinned roster (whole roster, policy)
        session = ClientSession(config, creds.client_id, vector, weight=float(weight),
                                identity=creds.identity, roster=creds.roster)
        advert = session.start()
        state.save(session)
        del content.array_records[arrays_key]  # the model never leaves in the clear
        content.config_records[r.PROTOCOL_RECORD] = ConfigRecord(
            {r.PAYLOAD: advert, r.ARRAYS_KEY: arrays_key})
        return Message(content, reply_to=msg)


#: The mod with credentials from the SuperNode's node_config (see :mod:`.credentials`); build
#: a :class:`ThresholdCKKSMod` with another ``credentials`` source otherwise.
threshold_ckks_mod = ThresholdCKKSMod()
