"""What every secagg workflow shares: the roster lookup, the modern strategies' grid and the
legacy ``DefaultWorkflow`` fit round, around one protocol's :meth:`SecureWorkflow.run_round`.

A protocol's workflow (:class:`~secagg.integrations.flower.SecAggPlusWorkflow` for masking,
:class:`~secagg.integrations.flower.ThresholdCKKSWorkflow` for threshold CKKS) implements
``run_round``: one secure round with the nodes the strategy sampled, returning the weighted
mean of the survivors' models and each survivor's setup reply (its metrics, no model). This
module turns that into what a strategy expects: one reply per surviving node carrying the mean,
so FedAvg's weighted average of identical models is that mean. The clients' mods drop their
weight metric (the protocol protects it like the model); each reply carries the round's released
total weight in its place, so the strategy's weighted averages of the other metrics (the loss)
become plain averages over the contributors.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, Final, Protocol, cast

from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.serverapp import Grid

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import InvalidParameter, ProtocolAbort
from secagg.identity import Roster

from . import records as r
from .secure_mod import is_train

__all__ = ["ROSTER_RUN_CONFIG_KEY", "RoundOutcome", "SecureGrid", "SecureWorkflow",
           "model_layout"]

ROSTER_RUN_CONFIG_KEY: Final = "secagg-roster"
_log = logging.getLogger(__name__)


class RoundOutcome(Protocol):
    """What a completed secure round hands the strategy (masking's and CKKS's results both)."""

    @property
    def arrays(self) -> ArrayRecord: ...  # the weighted mean of the survivors' models

    @property
    def replies(self) -> dict[int, Message]: ...  # surviving node -> its setup reply

    @property
    def arrays_keys(self) -> dict[int, str]: ...  # node -> its ClientApp's ArrayRecord name

    @property
    def failures(self) -> list[str]: ...  # one line per dropout or refused message

    @property
    def total_weight(self) -> int: ...  # the released total weight of the contributors


class SecureWorkflow(ABC):
    """The plumbing around one protocol's :meth:`run_round` (see the module)."""

    def __init__(self, *, roster: Roster | str | os.PathLike[str] | None,
                 timeout: float | None) -> None:
        self.roster = roster
        self.timeout = timeout
        #: the last round this workflow completed (legacy and modern paths alike)
        self.last_result: Any = None

    @abstractmethod
    def run_round(self, grid: Grid, contents: dict[int, RecordDict], *, roster: Roster,
                  server_round: int, timeout: float | None,
                  group_id: str = "") -> RoundOutcome:
        """One secure round with the nodes of ``contents`` (node id -> the strategy's content,
        holding the global model as its one ArrayRecord); :class:`ProtocolAbort` when it
        cannot complete."""

    def _roster(self, context: Context | None) -> Roster:
        source: Any = self.roster
        if source is None and context is not None:
            source = context.run_config.get(ROSTER_RUN_CONFIG_KEY)
        if source is None:
            raise InvalidParameter(f"{type(self).__name__} needs the federation's roster: pass "
                                   f"roster= or set the run config key '{ROSTER_RUN_CONFIG_KEY}' "
                                   "to the roster file's path")
        return source if isinstance(source, Roster) else Roster.load(str(source))

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
                                    server_round=current_round, timeout=self.timeout,
                                    group_id=str(current_round))
        except ProtocolAbort as exc:  # too few clients, or a client named as the culprit
            _log.error("secure aggregation halted: %s%s", exc, culprit_note(exc))
            return
        results = []
        for node, reply in result.replies.items():
            content = reply.content
            content.array_records[result.arrays_keys[node]] = result.arrays
            r.set_weight(content, "num_examples", result.total_weight)
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

    def __init__(self, grid: Grid, workflow: SecureWorkflow, roster: Roster,
                 *, weight_key: str = "num-examples") -> None:
        self._inner = grid
        self._workflow = workflow
        self._roster = roster
        self._weight_key = weight_key
        self._rounds = 0
        #: the last secure round's result (it names survivors and dropouts)
        self.last_result: Any = None

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        batch = list(messages)
        train = [m for m in batch if is_train(m.metadata.message_type)]
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
                                              timeout=wait,
                                              group_id=train[0].metadata.group_id)
        except ProtocolAbort as exc:  # too few clients, or a client named as the culprit
            _log.error("secure aggregation halted in round %d: %s%s", server_round, exc,
                       culprit_note(exc))
            return []
        self.last_result = result
        for node, reply in result.replies.items():
            reply.content.array_records[result.arrays_keys[node]] = result.arrays
            r.set_weight(reply.content, self._weight_key, result.total_weight)
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


def culprit_note(exc: ProtocolAbort) -> str:
    """The log suffix naming a round's culprit (left out of later rounds), if any."""
    return "" if exc.culprit is None else f" (culprit: client {exc.culprit}, left out of later " \
        "rounds)"


def model_layout(contents: dict[int, RecordDict]) -> ParamSpec:
    """The layout of the global model every train message carries (one ArrayRecord each, the
    same layout in all); refuses anything else by name."""
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
    return layout
