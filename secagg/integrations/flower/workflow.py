"""The server side: a Flower workflow that aggregates training results with secagg's masking
protocol, for modern strategies (``FedAvg`` over ``ArrayRecord``) and the legacy ``DefaultWorkflow``.

Drop-in where Flower's ``SecAggPlusWorkflow`` goes (legacy strategies)::

    from secagg.integrations.flower import SecAggPlusWorkflow

    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow())
    workflow(grid, LegacyContext(context, config=ServerConfig(num_rounds=3), strategy=strategy))

and around the grid a modern strategy talks to::

    strategy.start(grid=SecAggPlusWorkflow().secure_grid(grid, context), initial_arrays=...)

The roster (public) comes from ``roster=`` or the run config key ``secagg-roster`` (a path). Every
round runs over the whole roster in active mode: members the strategy did not sample count as
dropouts. The graph degree and threshold come from the parameter finder (for the roster's size,
``dropout_rate`` and the roster's policy) unless ``num_shares`` (k + 1) and
``reconstruction_threshold`` (t) are given; both are then validated against the roster's policy
like any other round, so a weaker graph is refused rather than used.

A client named as the culprit of a round (``ProtocolAbort.culprit``: its own signed or committed
messages prove it broke the protocol, e.g. a dealer whose shares do not rebuild its committed
secret) ends that round and is left out of every later round this workflow runs: its node gets
no train message and a setup reply signed with its identity is refused (``exclude_culprits``).

What the strategy sees: one reply per surviving node, carrying that node's metrics and the
weighted mean of the survivors' models (so FedAvg's weighted average of them is that mean). The
server never holds an individual model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any, Final, cast

from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp import Grid

from secagg.encoding.paramspec import ParamSpec
from secagg.encoding.quantize import MAX_MOD_BITS
from secagg.errors import InvalidParameter, ProtocolAbort
from secagg.identity import Roster
from secagg.masking import MaskingConfig

from . import records as r
from .driver import SecureRound, SecureRoundResult

__all__ = ["ROSTER_RUN_CONFIG_KEY", "SecAggPlusWorkflow", "SecureGrid"]

ROSTER_RUN_CONFIG_KEY: Final = "secagg-roster"
_log = logging.getLogger(__name__)


class SecAggPlusWorkflow:
    """Secure aggregation of every training round with secagg's masking protocol.

    ``max_weight`` bounds a client's weight (its ``num-examples``; larger ones are capped by the
    client); ``clipping_range`` clips every model value to [-c, c] before quantisation, as in
    Flower's workflow; ``value_bits`` is the quantisation precision (by default the finest of at
    most 22 bits that cannot overflow for the roster's size and ``max_weight``). ``timeout``
    (seconds) bounds each stage's wait for replies (None: the strategy's, or Flower's default).
    ``exclude_culprits`` leaves a client named as a round's culprit out of later rounds (see
    the module); :attr:`excluded_clients` lists their roster ids.
    """

    def __init__(self, num_shares: int | None = None, reconstruction_threshold: int | None = None,
                 *, roster: Roster | str | os.PathLike[str] | None = None,
                 max_weight: int | float = 1000, clipping_range: float = 8.0,
                 value_bits: int | None = None, dropout_rate: float = 0.1,
                 timeout: float | None = None, exclude_culprits: bool = True) -> None:
        for name, value in (("num_shares", num_shares),
                            ("reconstruction_threshold", reconstruction_threshold)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidParameter(
                    f"{name} must be an int or None (let the parameter finder choose), found "
                    f"{value!r}; a proportion of the clients is not accepted")
        if isinstance(max_weight, float) and max_weight.is_integer():
            max_weight = int(max_weight)  # Flower's default is the float 1000.0
        if isinstance(max_weight, bool) or not isinstance(max_weight, int) or max_weight < 1:
            raise InvalidParameter(f"max_weight must be a whole number >= 1, found {max_weight!r}")
        self.max_weight: int = max_weight
        self.neighbours = None if num_shares is None else num_shares - 1
        self.threshold = reconstruction_threshold
        self.roster = roster
        self.exclude_culprits = exclude_culprits
        #: roster ids named as the culprit of an earlier round (left out while exclude_culprits)
        self.excluded_clients: set[int] = set()
        self._excluded_nodes: set[int] = set()
        #: the last round this workflow completed (legacy and modern paths alike)
        self.last_result: SecureRoundResult | None = None
        self.clipping_range = clipping_range
        self.value_bits = value_bits
        self.dropout_rate = dropout_rate
        self.timeout = timeout

    # ---- the round ------------------------------------------------------------------------------

    def _roster(self, context: Context | None) -> Roster:
        source: Any = self.roster
        if source is None and context is not None:
            source = context.run_config.get(ROSTER_RUN_CONFIG_KEY)
        if source is None:
            raise InvalidParameter(f"SecAggPlusWorkflow needs the federation's roster: pass "
                                   f"roster= or set the run config key '{ROSTER_RUN_CONFIG_KEY}' "
                                   "to the roster file's path")
        return source if isinstance(source, Roster) else Roster.load(str(source))

    def config_for(self, roster: Roster, layout: ParamSpec, *, server_round: int) -> MaskingConfig:
        """The round's config (fresh session nonce), validated against the roster's policy."""
        n = len(roster)
        value_bits = self.value_bits
        if value_bits is None:
            value_bits = min(22, MAX_MOD_BITS - (n * self.max_weight).bit_length())
            if value_bits < 8:
                raise InvalidParameter(
                    f"{n} clients of weight up to max_weight={self.max_weight} leave fewer than "
                    "8 bits per value in a 32-bit sum; lower max_weight")
        return MaskingConfig.create(
            num_clients=n, vector_length=layout.size, clip=self.clipping_range,
            value_bits=value_bits, max_weight=self.max_weight, dropout_rate=self.dropout_rate,
            roster=roster, neighbours=self.neighbours, threshold=self.threshold,
            round=server_round, layout=layout)

    def run_round(self, grid: Grid, contents: dict[int, RecordDict], *, roster: Roster,
                  server_round: int, weight_key: str, timeout: float | None,
                  group_id: str = "") -> SecureRoundResult:
        """One secure round with the nodes of ``contents`` (node id -> the strategy's content,
        holding the global model as its one ArrayRecord)."""
        if not contents:
            raise InvalidParameter("no nodes to run a secure round with")
        layout = None
        for content in contents.values():
            if len(content.array_records) != 1:
                raise InvalidParameter("each train message must carry exactly one ArrayRecord "
                                       "(the global model)")
            (model,) = content.array_records.values()
            spec = r.layout_of(model)
            if layout is not None and spec != layout:
                raise InvalidParameter("the train messages carry models of different layouts")
            layout = spec
        assert layout is not None
        if self.exclude_culprits:
            left_out = sorted(set(contents) & self._excluded_nodes)
            if left_out:
                _log.warning("secure round %d: leaving out node(s) %s, named as the culprit of "
                             "an earlier round", server_round, left_out)
            contents = {n: c for n, c in contents.items() if n not in self._excluded_nodes}
        config = self.config_for(roster, layout, server_round=server_round)
        remaining = len(roster) - len(self.excluded_clients)
        if self.exclude_culprits and remaining < config.threshold:
            raise ProtocolAbort("setup", f"clients {sorted(self.excluded_clients)} are left out "
                                f"as culprits of earlier rounds; the {remaining} remaining "
                                f"member(s) cannot reach the threshold {config.threshold}")
        secure = SecureRound(grid, config=config, roster=roster, layout=layout,
                             weight_key=weight_key, timeout=timeout,
                             excluded=frozenset(self.excluded_clients if self.exclude_culprits
                                                else ()))
        try:
            self.last_result = secure.run(contents, group_id=group_id)
            return self.last_result
        except ProtocolAbort as exc:
            if exc.culprit is not None and self.exclude_culprits:
                self.excluded_clients.add(exc.culprit)
                node = secure.node_of.get(exc.culprit)
                if node is not None:
                    self._excluded_nodes.add(node)
            raise

    # ---- modern strategies ------------------------------------------------------------------

    def secure_grid(self, grid: Grid, context: Context | None = None) -> SecureGrid:
        """``grid`` with every ``train`` exchange run as a secure round (for ``strategy.start``)."""
        return SecureGrid(grid, self, self._roster(context))

    # ---- legacy strategies (DefaultWorkflow's fit_workflow) -----------------------------------

    def __call__(self, grid: Grid, context: Context) -> None:
        """One legacy fit round: ``configure_fit``, a secure round, ``aggregate_fit``."""
        import flwr.compat.common.recorddict_compat as compat
        from flwr.server.compat.legacy_context import LegacyContext
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
        from flwr.server.workflow.constant import Key as WorkflowKey

        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected a LegacyContext, found {type(context).__name__}")
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        current_round = cast(int, cfg[WorkflowKey.CURRENT_ROUND])
        parameters = compat.arrayrecord_to_parameters(
            context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        selected = context.strategy.configure_fit(current_round, parameters,
                                                  context.client_manager)
        if not selected:
            _log.info("configure_fit: no clients selected, cancel")
            return
        proxies = {proxy.node_id: proxy for proxy, _ in selected}
        contents = {proxy.node_id: compat.fitins_to_recorddict(fitins, True)
                    for proxy, fitins in selected}
        try:
            result = self.run_round(grid, contents, roster=self._roster(context),
                                    server_round=current_round, weight_key="num_examples",
                                    timeout=self.timeout, group_id=str(current_round))
        except ProtocolAbort as exc:  # too few clients, or a client named as the culprit
            _log.error("secure aggregation halted: %s%s", exc, _culprit(exc))
            return
        results = []
        for node, reply in result.replies.items():
            content = reply.content
            content.array_records[result.arrays_keys[node]] = result.arrays
            results.append((proxies[node], compat.recorddict_to_fitres(content, keep_input=True)))
        failures: list[Any] = [Exception(f) for f in result.failures]
        params, metrics = context.strategy.aggregate_fit(current_round, results, failures)
        if params is not None:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                params, True)
            context.history.add_metrics_distributed_fit(server_round=current_round,
                                                        metrics=metrics)


class SecureGrid(Grid):
    """A ``Grid`` whose ``train`` exchanges are secure rounds; everything else passes through."""

    def __init__(self, grid: Grid, workflow: SecAggPlusWorkflow, roster: Roster,
                 *, weight_key: str = "num-examples") -> None:
        self._inner = grid
        self._workflow = workflow
        self._roster = roster
        self._weight_key = weight_key
        self._rounds = 0
        #: the last secure round's result (its aggregate names survivors and dropouts)
        self.last_result: SecureRoundResult | None = None

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        batch = list(messages)
        train = [m for m in batch if m.metadata.message_type == MessageType.TRAIN]
        if not train:
            return self._inner.send_and_receive(batch, timeout=timeout)
        if len(train) != len(batch):
            raise InvalidParameter("a batch mixing train and other messages cannot be run as one "
                                   "secure round; send them separately")
        self._rounds += 1
        server_round = self._rounds
        for m in train:
            for rec in m.content.config_records.values():
                value = rec.get("server-round")
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    server_round = value
        by_node = {m.metadata.dst_node_id: m.content for m in train}
        if len(by_node) != len(train):
            raise InvalidParameter("two train messages for the same node in one round")
        wait = self._workflow.timeout if self._workflow.timeout is not None else timeout
        try:
            result = self._workflow.run_round(self._inner, by_node, roster=self._roster,
                                              server_round=server_round,
                                              weight_key=self._weight_key, timeout=wait,
                                              group_id=train[0].metadata.group_id)
        except ProtocolAbort as exc:  # too few clients, or a client named as the culprit
            _log.error("secure aggregation halted in round %d: %s%s", server_round, exc,
                       _culprit(exc))
            return []
        self.last_result = result
        for node, reply in result.replies.items():
            reply.content.array_records[result.arrays_keys[node]] = result.arrays
        return list(result.replies.values())

    # ---- everything else is the wrapped grid's -------------------------------------------------

    def set_run(self, run: Any) -> None:
        self._inner.set_run(run)

    @property
    def run(self) -> Any:
        return self._inner.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self._inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._inner.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:
        return self._inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._inner.pull_messages(message_ids)


def _culprit(exc: ProtocolAbort) -> str:
    return "" if exc.culprit is None else f" (culprit: client {exc.culprit}, left out of later " \
        "rounds)"
