"""The server side of one secure round over a Flower ``Grid``: secagg's :class:`ServerSession`,
with Flower messages as its transport.

Stage by stage: the setup message (the strategy's content plus the round's config and model
layout) goes to every sampled node; the replies' key advertisements map each node to the roster
id it signed as. Then each :meth:`~secagg.masking.ServerSession.advance` yields the next message
for every remaining client, sent to its node in one ``send_and_receive``; a node that does not
answer within ``timeout``, answers with an error, or sends a message the session rejects is a
dropout, and the round goes on while the protocol's thresholds hold. A setup reply from a client
in ``excluded`` (a culprit of an earlier round) is refused, so it is a dropout too. The result is
the weighted mean of the survivors' models as an ``ArrayRecord``; no individual model is ever
received.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import InvalidParameter, RejectedMessage
from secagg.identity import Roster
from secagg.masking import Aggregate, MaskingConfig, ServerSession, wire
from secagg.masking.config import Stage

from . import records as r

__all__ = ["SecureRound", "SecureRoundResult", "exchange"]

_log = logging.getLogger(__name__)
_FIRST_POLL_S = 0.002
_FAST_POLL_S = 0.005
_FAST_PHASE_S = 1.0
_LAST_POLL_S = 0.05


@dataclass
class SecureRoundResult:
    """What a completed round released: the aggregate and the survivors' setup replies."""

    aggregate: Aggregate
    arrays: ArrayRecord  # the weighted mean of the survivors' models
    replies: dict[int, Message]  # node id -> its setup reply (metrics; no model)
    arrays_keys: dict[int, str]  # node id -> the name its ClientApp gave its ArrayRecord
    client_ids: dict[int, int]  # node id -> roster id
    failures: list[str] = field(default_factory=list)
    #: wall seconds of each message exchange (push to last reply or timeout), setup first
    exchange_s: list[float] = field(default_factory=list)


class SecureRound:
    """Run one masking round with the nodes of ``contents`` (node id -> strategy content)."""

    def __init__(self, grid: Grid, *, config: MaskingConfig, roster: Roster, layout: ParamSpec,
                 weight_key: str, timeout: float | None,
                 excluded: frozenset[int] = frozenset()) -> None:
        self._grid = grid
        self._config = config
        self._roster = roster
        self._layout = layout
        self._weight_key = weight_key
        self._timeout = timeout
        self._excluded = excluded
        #: roster id -> node id, from the setup replies (kept to name a culprit's node)
        self.node_of: dict[int, int] = {}
        self._exchange_s: list[float] = []

    def run(self, contents: Mapping[int, RecordDict], *, group_id: str = "") -> SecureRoundResult:
        config = self._config
        server = ServerSession(config, roster=self._roster)
        messages = r.setup_messages(contents, config_json=json.dumps(config.to_dict()),
                                    layout=self._layout, weight_key=self._weight_key,
                                    group_id=group_id)
        failures: list[str] = []
        node_of = self.node_of  # roster id -> node id
        setup_replies: dict[int, Message] = {}
        arrays_keys: dict[int, str] = {}
        for reply in self._exchange(messages, failures):
            node = reply.metadata.src_node_id
            try:
                payload, record = r.payload_of(reply)
                party = wire.peek_header(payload).party
                if party in node_of:
                    raise RejectedMessage(party, "a second node claims this client id")
                if party in self._excluded:
                    raise RejectedMessage(party, "named as the culprit of an earlier round; left "
                                          "out of this workflow's rounds")
                server.receive(payload)
            except (RejectedMessage, InvalidParameter) as exc:
                failures.append(f"node {node}: {exc}")
                continue
            node_of[party] = node
            del reply.content.config_records[r.PROTOCOL_RECORD]
            setup_replies[node] = reply
            arrays_keys[node] = str(record.get(r.ARRAYS_KEY, "arrays"))
        while True:
            outgoing = server.advance_bytes()  # ProtocolAbort ends the round
            if server.stage is Stage.DONE:
                break
            step = r.step_messages(outgoing, node_of, group_id=group_id)
            for reply in self._exchange(step, failures):
                node = reply.metadata.src_node_id
                try:
                    payload, _ = r.payload_of(reply)
                    party = wire.peek_header(payload).party
                    if node_of.get(party) != node:
                        raise RejectedMessage(party, f"sent by node {node}, not by the node that "
                                              "advertised this client's keys")
                    server.receive(payload)
                except (RejectedMessage, InvalidParameter) as exc:
                    failures.append(f"node {node}: {exc}")
        aggregate = server.result
        survivors = {node_of[c] for c in aggregate.survivors}
        mean = r.to_arrayrecord(aggregate.mean(), self._layout)
        return SecureRoundResult(
            aggregate=aggregate, arrays=mean,
            replies={n: m for n, m in setup_replies.items() if n in survivors},
            arrays_keys=arrays_keys, client_ids={n: c for c, n in node_of.items()},
            failures=failures, exchange_s=self._exchange_s)

    def _exchange(self, messages: list[Message], failures: list[str]) -> Iterable[Message]:
        """Send ``messages``; yield the replies without errors (the rest are dropouts)."""
        replies, spent = exchange(self._grid, messages, timeout=self._timeout)
        self._exchange_s.append(spent)
        for reply in replies:
            if reply.has_error():
                failures.append(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
                _log.info("secure round: node %d dropped out: %s", reply.metadata.src_node_id,
                          reply.error.reason)
                continue
            yield reply


def exchange(grid: Grid, messages: list[Message], *,
             timeout: float | None) -> tuple[list[Message], float]:
    """Push ``messages`` and pull their replies until all are in or ``timeout`` passes; return
    the replies (errors included) and the wall seconds spent.

    Pulls through the grid itself instead of ``Grid.send_and_receive``, whose fixed pull interval
    (3 s on the deployment engine, 0.1 s in simulation) would be paid once per protocol stage: the
    interval here starts at 2 ms, stays at most 5 ms for the first second (a protocol stage's
    replies usually arrive within it) and then backs off to 50 ms, so a long wait (training on
    the deployment engine) does not keep the SuperLink busy.
    """
    started = time.perf_counter()
    waiting = set(grid.push_messages(messages))
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    delay = _FIRST_POLL_S
    while waiting:
        for reply in grid.pull_messages(list(waiting)):
            waiting.discard(reply.metadata.reply_to_message_id)
            replies.append(reply)
        if not waiting:
            break
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        time.sleep(delay if left is None else min(delay, left))
        cap = _FAST_POLL_S if time.perf_counter() - started < _FAST_PHASE_S else _LAST_POLL_S
        delay = min(2 * delay, cap)
    return replies, time.perf_counter() - started
