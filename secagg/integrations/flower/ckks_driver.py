"""The server side of one threshold-CKKS round over a Flower ``Grid``: secagg's
:class:`secagg.ckks.threshold.session.ServerSession`, with Flower messages as its transport.

Stage by stage, as the session runs them: the setup message (the strategy's content plus the
round's :class:`~secagg.ckks.threshold.session.ThresholdRoundConfig` and model layout) goes to
every sampled node; each reply carries the ClientApp's metrics and the node's signed key advert,
which maps the node to the roster id it signed as. Then each
:meth:`~secagg.ckks.threshold.session.ServerSession.advance` yields the next message (key
request, share delivery, statement request, partial request, and at most one retry of the
partial request) for every client that goes on, sent to its node in one exchange. A node that
does not answer within ``timeout``, answers with an error, or sends a message the session
rejects is a dropout, and the round goes on while the policy's thresholds hold. The result is
the weighted mean of the uploaders' models as an ``ArrayRecord``: the server decrypts only the
sum the enterprises' statements allow and never holds an individual model or a key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from flwr.app import RecordDict
from flwr.serverapp import Grid

from secagg.ckks.threshold.session import ServerResult, ServerSession, ServerStage, ThresholdRoundConfig
from secagg.ckks.threshold.session import peek as peek_client_message
from secagg.encoding.paramspec import ParamSpec
from secagg.identity import Roster

from . import records as r
from .driver import RoundRelease, RoundTransport

__all__ = ["ThresholdRound", "ThresholdRoundResult"]

_log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ThresholdRoundResult(RoundRelease):
    """What a completed threshold round released: the decrypted sum (uploaders, signers,
    decryptors, total weight) and the round's config, besides the mean and the uploaders'
    replies."""

    config: ThresholdRoundConfig  # the round's parameters and policy (max_error among them)
    result: ServerResult  # weighted sum, total weight, uploaders, signers, decryptors, ...

    @property
    def total_weight(self) -> int:
        """The uploaders' total weight, decrypted with the sum (integer weights, so rounded)."""
        return round(self.result.total_weight)


class ThresholdRound:
    """Run one threshold-CKKS round with the nodes of ``contents`` (node id -> strategy content)."""

    def __init__(self, grid: Grid, *, config: ThresholdRoundConfig, roster: Roster,
                 layout: ParamSpec, timeout: float | None) -> None:
        self._config = config
        self._roster = roster
        self._layout = layout
        self._transport = RoundTransport(grid, timeout=timeout)
        #: roster id -> node id, from the setup replies
        self.node_of = self._transport.node_of

    def run(self, contents: Mapping[int, RecordDict], *,
            group_id: str = "") -> ThresholdRoundResult:
        config = self._config
        server = ServerSession(config, roster=self._roster)
        transport = self._transport

        def advance() -> Mapping[int, bytes] | None:
            outgoing = server.advance()  # NotEnoughParticipants / ProtocolAbort end the round
            return None if server.stage is ServerStage.DONE else outgoing

        transport.setup(r.setup_messages(contents, config_json=json.dumps(config.to_dict()),
                                         layout=self._layout, group_id=group_id),
                        party_of=_party, admit=lambda _party, payload: server.receive(payload))
        transport.stages(advance=advance, party_of=_party, receive=server.receive,
                         training=lambda: server.stage is ServerStage.UPLOAD, contents=contents,
                         group_id=group_id)
        result = server.result
        uploading = {self.node_of[c] for c in result.uploaders}
        mean = r.to_arrayrecord(result.mean(), self._layout)
        return ThresholdRoundResult(
            config=config, result=result, arrays=mean,
            replies={n: m for n, m in transport.train_replies.items() if n in uploading},
            arrays_keys=transport.arrays_keys, client_ids={n: c for c, n in self.node_of.items()},
            failures=transport.failures, exchange_s=transport.exchange_s)


def _party(payload: bytes) -> int | None:
    """The sender a client message claims (the session checks the claim)."""
    return peek_client_message(payload)[1]
