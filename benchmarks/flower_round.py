"""One SecAgg+ round of Flower 1.41's real code in this process, recorded for measurement.

:func:`run_round` drives Flower's ``SecAggPlusWorkflow`` against ``ClientApp``\\ s wrapped in
``secaggplus_mod`` over an in-memory grid that carries every message through Flower's protobuf
serde and can make chosen clients vanish at a chosen stage, and it wraps Flower's stage functions
(for the duration of the call) to time them. :mod:`.flower_anchor` turns the record into the
published numbers; read its :func:`~.flower_anchor.run_flower_secaggplus` for the definitions.
Flower is imported inside :func:`run_round` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

__all__ = ["RoundRecord", "run_round"]


@dataclass
class RoundRecord:
    """What one round did: the inputs, who dropped, what was uploaded, and the timers."""

    node_ids: list[int]
    inputs: dict[int, np.ndarray]
    num_examples: dict[int, int]
    dropped: set[int]
    max_weight: float
    upload_bytes: dict[int, tuple[int, int]]  # node -> (masked bytes, whole message bytes)
    aggregate: Any  # Flower's NDArrays
    timer: Timer  # server side: "stage:<s>", "grid:<s>", "plumbing:<s>", "strategy:...", ...
    client_timer: Timer  # "<node id>:<stage>"
    round_s: float


@contextmanager
def _task_identity(run_id: int, node_id: int) -> Iterator[None]:
    """Set Flower's process-wide task identity (as its simulation does) and restore it after."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = node_id
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def _clock() -> tuple[float, float]:
    """(wall, CPU of this whole process) in seconds."""
    return time.perf_counter(), time.process_time()


class Timer:
    """Accumulates wall and process-CPU time per key."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def add_since(self, key: str, start: tuple[float, float]) -> None:
        wall, cpu = _clock()
        self.wall[key] = self.wall.get(key, 0.0) + (wall - start[0])
        self.cpu[key] = self.cpu.get(key, 0.0) + (cpu - start[1])

    def get(self, key: str) -> float:
        return self.wall.get(key, 0.0)

    def get_cpu(self, key: str) -> float:
        return self.cpu.get(key, 0.0)


@contextmanager
def _patched(obj: Any, name: str, wrapper_factory: Callable[[Any], Any]) -> Iterator[None]:
    """Replace ``obj.name`` by ``wrapper_factory(original)`` for the duration of the block."""
    original = getattr(obj, name)
    setattr(obj, name, wrapper_factory(original))
    try:
        yield
    finally:
        setattr(obj, name, original)


def run_round(
    *,
    num_clients: int,
    num_params: int,
    dropout: float,
    num_shares: int,
    threshold: int,
    clipping_range: float,
    quantization_range: int,
    modulus_range: int,
    seed: int,
    drop_stage: str,
) -> RoundRecord:
    """Run one round of Flower's SecAgg+ workflow against its clients over :class:`_InProcessGrid`
    (defined inside, it closes over the round's nodes) and record what happened."""
    from contextlib import ExitStack
    from importlib import import_module

    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.client import NumPyClient
    from flwr.clientapp import ClientApp
    from flwr.common import (
        FitRes,
        NDArrays,
        Parameters,
        Scalar,
        parameters_to_ndarrays,
    )
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.common.secure_aggregation.secaggplus_constants import (
        RECORD_KEY_CONFIGS,
        Key,
        Stage,
    )
    from flwr.common.serde import message_from_proto, message_to_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage
    from flwr.server import ServerConfig
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.serverapp.grid import Grid
    from flwr.supercore.run import Run

    # The packages re-export functions under the modules' names, so fetch the modules themselves.
    mod_module = import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    wf_module = import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow")

    rng = np.random.default_rng(seed)
    run_id = int(rng.integers(1, 2**62))
    node_ids = [int(x) for x in rng.choice(2**62, size=num_clients, replace=False) + 1]
    inputs = {nid: rng.uniform(-1.0, 1.0, size=num_params).astype(np.float32) for nid in node_ids}
    num_examples = {nid: int(rng.integers(100, 1001)) for nid in node_ids}
    num_dropped = round(dropout * num_clients)
    dropped = {node_ids[int(i)] for i in rng.choice(num_clients, size=num_dropped, replace=False)}
    drop_at = Stage.UNMASK if drop_stage == "unmask" else Stage.COLLECT_MASKED_VECTORS
    max_weight = 1000.0

    timer = Timer()
    client_timer = Timer()  # keys "<node id>:<stage>"
    upload_bytes: dict[int, tuple[int, int]] = {}  # nid -> (masked bytes, whole message bytes)
    captured: dict[str, NDArrays] = {}

    # ---------------------------------------------------------------- clients
    class _BenchClient(NumPyClient):
        def __init__(self, nid: int) -> None:
            self.nid = nid

        def fit(
            self, parameters: NDArrays, config: dict[str, Scalar]
        ) -> tuple[NDArrays, int, dict[str, Scalar]]:
            return [inputs[self.nid]], num_examples[self.nid], {}

    def client_fn(context: Context) -> Any:
        return _BenchClient(context.node_id).to_client()

    client_app = ClientApp(client_fn=client_fn, mods=[mod_module.secaggplus_mod])
    client_contexts = {
        nid: Context(run_id=run_id, node_id=nid, node_config={}, state=RecordDict(), run_config={})
        for nid in node_ids
    }

    def time_client_stage(stage: str) -> Callable[[Any], Any]:
        def factory(original: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(state: Any, *args: Any, **kwargs: Any) -> Any:
                t0 = _clock()
                try:
                    return original(state, *args, **kwargs)
                finally:
                    client_timer.add_since(f"{int(state.nid)}:{stage}", t0)

            return wrapper

        return factory

    # ---------------------------------------------------------------- grid
    current_stage = ["none"]
    in_grid = [False]

    class _InProcessGrid(Grid):
        """Delivers each message to its node's ClientApp over a simulated (protobuf) wire."""

        def __init__(self) -> None:
            self._run = Run.create_empty(run_id)
            self._replies: dict[str, Message] = {}

        def set_run(self, run: Run) -> None:
            self._run = run

        @property
        def run(self) -> Run:
            return self._run

        def create_message(
            self,
            content: RecordDict,
            message_type: str,
            dst_node_id: int,
            group_id: str,
            ttl: float | None = None,
        ) -> Message:
            return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

        def get_node_ids(self) -> Iterable[int]:
            return list(node_ids)

        def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
            ids: list[str] = []
            for msg in messages:
                msg_id = f"m{len(self._replies)}-{len(ids)}-{time.perf_counter_ns()}"
                msg.metadata.__dict__["_message_id"] = msg_id
                msg.metadata.__dict__["_run_id"] = run_id
                reply = self._deliver(msg)
                if reply is not None:
                    self._replies[msg_id] = reply
                ids.append(msg_id)
            return ids

        def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
            return [self._replies.pop(i) for i in message_ids if i in self._replies]

        def send_and_receive(
            self, messages: Iterable[Message], *, timeout: float | None = None
        ) -> Iterable[Message]:
            t0 = _clock()
            in_grid[0] = True
            try:
                # A client that vanished never answers: returning without its reply is what
                # Flower's own grids do once the timeout expires.
                return self.pull_messages(self.push_messages(messages))
            finally:
                in_grid[0] = False
                timer.add_since(f"grid:{current_stage[0]}", t0)

        def _deliver(self, msg: Message) -> Message | None:
            wire_in = message_to_proto(msg).SerializeToString()
            proto_in = ProtoMessage()
            proto_in.ParseFromString(wire_in)
            received = message_from_proto(proto_in)
            nid = int(received.metadata.dst_node_id)
            stage = str(received.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
            if nid in dropped and stage == drop_at:
                return None
            try:
                reply = client_app(received, client_contexts[nid])
            except Exception as exc:
                raise RuntimeError(f"Flower client {nid} failed in stage {stage!r}") from exc
            if reply.has_error():
                raise RuntimeError(f"Flower client {nid} failed in stage {stage!r}: {reply.error}")
            wire_out = message_to_proto(reply).SerializeToString()
            proto_out = ProtoMessage()
            proto_out.ParseFromString(wire_out)
            answer = message_from_proto(proto_out)
            if stage == Stage.COLLECT_MASKED_VECTORS:
                configs = answer.content.config_records[RECORD_KEY_CONFIGS]
                masked = cast(list[bytes], configs[Key.MASKED_PARAMETERS])
                upload_bytes[nid] = (sum(len(b) for b in masked), len(wire_out))
            return answer

    # ---------------------------------------------------------------- server
    class _BenchFedAvg(FedAvg):
        """FedAvg sampling every client; aggregate_fit passes SecAgg+'s result through.

        After SecAgg+ every FitRes carries the same (already averaged) parameters, so FedAvg's
        weighted average of them is that vector; passing it through skips n pointless copies.
        """

        def aggregate_fit(
            self,
            server_round: int,
            results: list[tuple[ClientProxy, FitRes]],
            failures: list[Any],
        ) -> tuple[Parameters | None, dict[str, Scalar]]:
            t0 = _clock()
            params = results[0][1].parameters
            captured["aggregate"] = parameters_to_ndarrays(params)
            timer.add_since("strategy:aggregate_fit", t0)
            return params, {}

    strategy = _BenchFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=num_clients,
        min_available_clients=num_clients,
    )
    grid = _InProcessGrid()
    client_manager = SimpleClientManager()
    for nid in node_ids:
        client_manager.register(GridClientProxy(nid, grid, run_id))
    server_context = LegacyContext(
        Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
        client_manager=client_manager,
    )
    server_context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: 1, WorkflowKey.START_TIME: time.time()}
    )
    server_context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()

    workflow = SecAggPlusWorkflow(
        num_shares=num_shares,
        reconstruction_threshold=threshold,
        clipping_range=clipping_range,
        quantization_range=quantization_range,
        modulus_range=modulus_range,
        max_weight=max_weight,
    )

    completed: list[str] = []

    def time_server_stage(name: str) -> Callable[[Any], Any]:
        def factory(original: Callable[..., bool]) -> Callable[..., bool]:
            def wrapper(*args: Any, **kwargs: Any) -> bool:
                current_stage[0] = name
                t0 = _clock()
                ok = original(*args, **kwargs)
                timer.add_since(f"stage:{name}", t0)
                current_stage[0] = "none"
                if ok:
                    completed.append(name)
                return ok

            return wrapper

        return factory

    def time_plumbing(key: str) -> Callable[[Any], Any]:
        def factory(original: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if in_grid[0]:  # inside a client: already counted as grid time
                    return original(*args, **kwargs)
                t0 = _clock()
                try:
                    return original(*args, **kwargs)
                finally:
                    timer.add_since(f"{key}:{current_stage[0]}", t0)

            return wrapper

        return factory

    server_stages = ("setup", "share_keys", "collect_masked_vectors", "unmask")
    with ExitStack() as stack:
        stack.enter_context(_task_identity(run_id, SUPERLINK_NODE_ID))
        for stage_name in ("setup", "share_keys", "collect_masked_vectors", "unmask"):
            stack.enter_context(_patched(mod_module, f"_{stage_name}", time_client_stage(stage_name)))
        for stage_name in server_stages:
            stack.enter_context(_patched(workflow, f"{stage_name}_stage", time_server_stage(stage_name)))
        stack.enter_context(_patched(wf_module, "ndarrays_to_parameters", time_plumbing("plumbing")))
        stack.enter_context(_patched(compat, "parameters_to_arrayrecord", time_plumbing("plumbing")))
        # Breakdown of the server's unmask work (measured only, not subtracted).
        for name in ("combine_shares", "pseudo_rand_gen", "generate_shared_key"):
            stack.enter_context(_patched(wf_module, name, time_plumbing(f"server:{name}")))
        t_round = time.perf_counter()
        workflow(grid, server_context)
        round_s = time.perf_counter() - t_round

    if completed != list(server_stages) or "aggregate" not in captured:
        raise RuntimeError(
            f"Flower's SecAggPlusWorkflow halted after stages {completed} "
            "(too few participants for its threshold?)"
        )

    return RoundRecord(
        node_ids=node_ids, inputs=inputs, num_examples=num_examples, dropped=dropped,
        max_weight=max_weight, upload_bytes=upload_bytes, aggregate=captured["aggregate"],
        timer=timer, client_timer=client_timer, round_s=round_s,
    )
