"""The client side: a Flower mod that sends the ClientApp's training result only through secagg's
masking protocol (active mode: roster-pinned identities, per-neighbourhood checks).

Drop-in where Flower's ``secaggplus_mod`` goes::

    from secagg.integrations.flower import secaggplus_mod

    app = ClientApp(mods=[secaggplus_mod])

Every ``train`` message must belong to a secure round (:mod:`.secure_mod`): the first one of a
round carries the round's config; the mod checks it (active mode, bound to the roster this
enterprise pinned and to the model layout) and answers with its key advertisement. The share
delivery also carries the strategy's model: the mod runs the ClientApp on it, encodes the
returned ``ArrayRecord`` with its weight (the reply's ``num-examples`` metric, capped at the
round's ``max_weight``) and answers with the masked input. The model never leaves: that reply
drops its arrays and its weight metric and keeps the ClientApp's other metrics (in the clear,
as with Flower's mod). Messages in between are answered by the restored session
(:mod:`.client_state`). A ``train`` message of any action outside a secure round is refused,
so a server cannot ask for a plaintext update; other message types pass through untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import Context

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import ProtocolAbort
from secagg.masking import ClientSession, MaskingConfig, encode_update, wire
from secagg.masking import messages as m

from .client_state import RoundState
from .credentials import Credentials
from .secure_mod import SecureMod

__all__ = ["SecAggPlusMod", "secaggplus_mod"]


class SecAggPlusMod(SecureMod):
    """A Flower mod running the client side of secagg's masking protocol."""

    WORKFLOW = "SecAggPlusWorkflow"
    CONFIG = "MaskingConfig.to_dict"

    def _state(self, ctxt: Context, creds: Credentials) -> RoundState:
        return RoundState(ctxt, creds)

    def _load(self, state: RoundState, payload: bytes) -> ClientSession:
        return state.load(wire.peek_header(payload).digest)

    def _config(self, fields: dict[str, Any], layout: ParamSpec,
                creds: Credentials) -> MaskingConfig:
        config = MaskingConfig.from_dict(fields)
        if not config.active:
            raise ProtocolAbort("client", "the server asked for an honest-but-curious (passive) "
                                "round; this client takes part only in active rounds")
        config.check_roster(creds.roster)
        return config

    def _start(self, config: MaskingConfig, creds: Credentials) -> tuple[ClientSession, bytes]:
        session = ClientSession(config, creds.client_id, None, identity=creds.identity,
                                roster=creds.roster)
        return session, wire.encode(session.start())

    def _is_training_stage(self, payload: bytes) -> bool:
        return wire.peek_type(payload) is m.ShareDelivery

    def _max_weight(self, session: ClientSession) -> int:
        return session.config.max_weight

    def _provide(self, session: ClientSession, vector: npt.NDArray[np.float32],
                 weight: int) -> None:
        session.provide_update(encode_update(session.config, vector, weight=weight))


#: The mod with credentials from the SuperNode's node_config (see :mod:`.credentials`); build
#: a :class:`SecAggPlusMod` with another ``credentials`` source otherwise.
secaggplus_mod = SecAggPlusMod()
