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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import InvalidParameter, RejectedMessage
from secagg.identity import Roster
from secagg.masking import Aggregate, MaskingConfig, ServerSession, wire
from secagg.masking.config import Stage

from . import records as r

__all__ = ["RoundRelease", "RoundTransport", "SecureRound", "SecureRoundResult", "exchange"]

_log = logging.getLogger(__name__)
_FIRST_POLL_S = 0.002
_FAST_POLL_S = 0.005
_FAST_PHASE_S = 1.0
_LAST_POLL_S = 0.05


@dataclass(kw_only=True)
class RoundRelease:
    """What any completed round hands the workflow: the mean and the contributors' replies."""

    arrays: ArrayRecord  # the weighted mean of the contributors' models
    replies: dict[int, Message]  # contributing node -> its training reply (metrics; no model)
    arrays_keys: dict[int, str]  # node id -> the name its ClientApp gave its ArrayRecord
    client_ids: dict[int, int]  # node id -> roster id
    failures: list[str] = field(default_factory=list)
    #: wall seconds of each message exchange (push to last reply or timeout), setup first
    exchange_s: list[float] = field(default_factory=list)


@dataclass(kw_only=True)
class SecureRoundResult(RoundRelease):
    """What a completed masking round released: the aggregate (survivors, dropouts, total
    weight) besides the mean and the survivors' replies."""

    aggregate: Aggregate

    @property
    def total_weight(self) -> int:
        """The survivors' total weight, as released with the sum."""
        return self.aggregate.total_weight


class RoundTransport:
    """The Flower side of one protocol round, whatever the protocol: the setup exchange (each
    reply's protocol message maps its node to the roster id it claims, once), then one exchange
    per stage the server session yields, each reply accepted only from the node that answered
    the setup for that client id. At the training stage each message also carries its node's
    strategy content, and the replies' ClientApp metrics are kept for the strategy. Dropouts
    (no answer in time, an error, a message the session rejects) are noted in
    :attr:`failures`; the session's thresholds decide whether the round goes on."""

    def __init__(self, grid: Grid, *, timeout: float | None) -> None:
        self._grid = grid
        self._timeout = timeout
        #: roster id -> node id, from the setup replies
        self.node_of: dict[int, int] = {}
        self.failures: list[str] = []
        #: wall seconds of each message exchange (push to last reply or timeout), setup first
        self.exchange_s: list[float] = []
        #: node -> its reply at the training stage (protocol record removed: metrics only)
        self.train_replies: dict[int, Message] = {}
        #: node -> the name its ClientApp gave its ArrayRecord
        self.arrays_keys: dict[int, str] = {}

    def setup(self, messages: list[Message], *, party_of: Callable[[bytes], int | None],
              admit: Callable[[int, bytes], None]) -> None:
        """Send the setup messages; ``admit(party, payload)`` checks and takes each reply's
        protocol message and :attr:`node_of` maps the node to that party."""
        for reply in self._exchange(messages):
            node = reply.metadata.src_node_id
            try:
                payload, _ = r.payload_of(reply)
                party = party_of(payload)
                if party is None:
                    raise InvalidParameter("the setup reply carries no client id")
                if party in self.node_of:
                    raise RejectedMessage(party, "a second node claims this client id")
                admit(party, payload)
            except (RejectedMessage, InvalidParameter) as exc:
                self.failures.append(f"node {node}: {exc}")
                continue
            self.node_of[party] = node

    def stages(self, *, advance: Callable[[], Mapping[int, bytes] | None],
               party_of: Callable[[bytes], int | None], receive: Callable[[bytes], None],
               training: Callable[[], bool], contents: Mapping[int, RecordDict],
               group_id: str) -> None:
        """Until ``advance()`` returns None (the session is done): send each client its message
        and hand the replies to ``receive``; where ``training()`` says the stage is the one at
        which clients train, the messages carry ``contents`` (node -> strategy content). A
        session's abort ends the round (it propagates)."""
        while (outgoing := advance()) is not None:
            train = training()
            step = r.step_messages(outgoing, self.node_of, group_id=group_id,
                                   contents=contents if train else None)
            for reply in self._exchange(step):
                node = reply.metadata.src_node_id
                try:
                    payload, record = r.payload_of(reply)
                    party = party_of(payload)
                    if party is None or self.node_of.get(party) != node:
                        raise RejectedMessage(party, f"sent by node {node}, not by the node that "
                                              "answered the setup for this client id")
                    receive(payload)
                except (RejectedMessage, InvalidParameter) as exc:
                    self.failures.append(f"node {node}: {exc}")
                    continue
                if train:
                    self.arrays_keys[node] = str(record.get(r.ARRAYS_KEY, "arrays"))
                    del reply.content.config_records[r.PROTOCOL_RECORD]
                    self.train_replies[node] = reply

    def _exchange(self, messages: list[Message]) -> Iterable[Message]:
        """Send ``messages``; yield the replies without errors (the rest are dropouts)."""
        replies, spent = exchange(self._grid, messages, timeout=self._timeout)
        self.exchange_s.append(spent)
        for reply in replies:
            if reply.has_error():
                self.failures.append(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
                _log.info("secure round: node %d dropped out: %s", reply.metadata.src_node_id,
                          reply.error.reason)
                continue
            yield reply


class SecureRound:
    """Run one masking round with the nodes of ``contents`` (node id -> strategy content)."""

    def __init__(self, grid: Grid, *, config: MaskingConfig, roster: Roster, layout: ParamSpec,
                 timeout: float | None,
                 excluded: frozenset[int] = frozenset()) -> None:
        self._config = config
        self._roster = roster
        self._layout = layout
        self._excluded = excluded
        self._transport = RoundTransport(grid, timeout=timeout)
        #: roster id -> node id, from the setup replies (kept to name a culprit's node)
        self.node_of = self._transport.node_of

    def run(self, contents: Mapping[int, RecordDict], *, group_id: str = "") -> SecureRoundResult:
        config = self._config
        server = ServerSession(config, roster=self._roster)
        transport = self._transport

        def admit(party: int, payload: bytes) -> None:
            if party in self._excluded:
                raise RejectedMessage(party, "named as the culprit of an earlier round; left "
                                      "out of this workflow's rounds")
            server.receive(payload)

        def advance() -> Mapping[int, bytes] | None:
            outgoing = server.advance_bytes()  # ProtocolAbort ends the round
            return None if server.stage is Stage.DONE else outgoing

        transport.setup(r.setup_messages(contents, config_json=json.dumps(config.to_dict()),
                                         layout=self._layout, group_id=group_id),
                        party_of=_party, admit=admit)
        transport.stages(advance=advance, party_of=_party, receive=server.receive,
                         training=lambda: server.stage is Stage.MASKED_INPUT, contents=contents,
                         group_id=group_id)
        aggregate = server.result
        survivors = {self.node_of[c] for c in aggregate.survivors}
        mean = r.to_arrayrecord(aggregate.mean(), self._layout)
        return SecureRoundResult(
            aggregate=aggregate, arrays=mean,
            replies={n: m for n, m in transport.train_replies.items() if n in survivors},
            arrays_keys=transport.arrays_keys, client_ids={n: c for c, n in self.node_of.items()},
            failures=transport.failures, exchange_s=transport.exchange_s)


def _party(payload: bytes) -> int:
    return wire.peek_header(payload).party


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
