"""The client side of threshold CKKS in Flower: a mod that sends the ClientApp's training result
only as a threshold-CKKS upload (no enterprise, and not the server, holds a decryption key)::

    from secagg.integrations.flower import threshold_ckks_mod

    app = ClientApp(mods=[threshold_ckks_mod])

Every ``train`` message must belong to a threshold round run by
:class:`~secagg.integrations.flower.ThresholdCKKSWorkflow` (:mod:`.secure_mod`). The first one
carries the round's :class:`~secagg.ckks.threshold.session.ThresholdRoundConfig`; the mod checks
it (bound to the roster this enterprise pinned, covering all of it, with a threshold and
decryption policy no weaker than the roster's, and to the model layout) and answers with the
signed advert of this round's fresh box key. The share delivery also carries the strategy's
model: the mod runs the ClientApp on it, clips the returned ``ArrayRecord`` to the round's
``value_bound``, takes its weight from the reply's ``num-examples`` metric (capped at
``weight_bound``) and answers with the encrypted upload. The model never leaves: that reply drops
its arrays and its weight metric and keeps the ClientApp's other metrics. The other messages
(key request, statement request, partial requests) are answered by the restored session
(:class:`.client_state.ThresholdRoundState`). A ``train`` message of any action outside a
threshold round is refused; other message types pass through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from flwr.app import Context

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import ProtocolAbort

from .client_state import ThresholdRoundState
from .credentials import Credentials
from .secure_mod import SecureMod

if TYPE_CHECKING:
    from secagg.ckks.threshold.session import ClientSession, ThresholdRoundConfig

__all__ = ["ThresholdCKKSMod", "threshold_ckks_mod"]


class ThresholdCKKSMod(SecureMod):
    """A Flower mod running the client side of secagg's threshold-CKKS protocol."""

    WORKFLOW = "ThresholdCKKSWorkflow"
    CONFIG = "ThresholdRoundConfig.to_dict"

    def _state(self, ctxt: Context, creds: Credentials) -> ThresholdRoundState:
        return ThresholdRoundState(ctxt, creds)

    def _load(self, state: ThresholdRoundState, payload: bytes) -> ClientSession:
        return state.load()  # the session refuses a message of another round's config

    def _config(self, fields: dict[str, Any], layout: ParamSpec,
                creds: Credentials) -> ThresholdRoundConfig:
        from secagg.ckks.threshold.session import ThresholdRoundConfig

        config = ThresholdRoundConfig.from_dict(fields)
        config.check_roster(creds.roster)  # whole roster, policy no weaker than the roster's
        if layout.size != config.vector_length:
            raise ProtocolAbort("client", f"the model layout holds {layout.size} values; the "
                                f"round's config encrypts {config.vector_length}")
        if config.weight_bound < 1:
            raise ProtocolAbort("client", f"the round's weight_bound {config.weight_bound} is "
                                "below 1: a client's weight (its number of examples) is >= 1")
        return config

    def _start(self, config: ThresholdRoundConfig,
               creds: Credentials) -> tuple[ClientSession, bytes]:
        from secagg.ckks.threshold.session import ClientSession

        session = ClientSession(config, creds.client_id, None, identity=creds.identity,
                                roster=creds.roster)
        return session, session.start()

    def _is_training_stage(self, payload: bytes) -> bool:
        from secagg.ckks.threshold.session import peek_server

        return peek_server(payload) == "delivery"

    def _max_weight(self, session: ClientSession) -> int:
        return int(session.config.weight_bound)

    def _provide(self, session: ClientSession, vector: npt.NDArray[np.float32],
                 weight: int) -> None:
        bound = float(session.config.value_bound)
        clipped = np.clip(vector.astype(np.float64), -bound, bound)
        session.provide_update(clipped, weight=float(weight))


#: The mod with credentials from the SuperNode's node_config (see :mod:`.credentials`); build
#: a :class:`ThresholdCKKSMod` with another ``credentials`` source otherwise.
threshold_ckks_mod = ThresholdCKKSMod()
