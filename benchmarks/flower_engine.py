"""Rounds inside Flower's simulation engine: secagg's mod and workflow, Flower's own SecAgg+, and
plain FedAvg, with the same clients, strategy and engine (``secagg bench flower``).

One ``run_simulation`` (Ray backend) hosts all rounds: a ServerApp that runs, per repeat, one
round of each kind through Flower's legacy ``DefaultWorkflow`` with a legacy ``FedAvg`` — only the
fit workflow differs: Flower's default (plain), secagg's :class:`SecAggPlusWorkflow`, or Flower's
``SecAggPlusWorkflow``. Every SuperNode runs one ClientApp (a NumPyClient returning a fixed random
float32 update) behind a mod that hands each message to the protocol it belongs to (secagg's mod,
Flower's ``secaggplus_mod``, or none for plain rounds). A round's time is the fit workflow's wall
time in the ServerApp: sampling, every stage's messages through the engine, the clients' work,
the server's unmasking and FedAvg. Ray's start-up and one warm-up plain round are not counted.

With ``ckks=True`` a fifth kind runs secagg's threshold CKKS
(:class:`~secagg.integrations.flower.ThresholdCKKSWorkflow`, same clip and weight bound) in the
same simulation. A fourth kind measures the engine's floor for any round of three exchanges: a plain round
followed by two exchanges of empty messages (answered by the mod without running the ClientApp),
all three pulled the way secagg's workflow pulls. A round secure against a malicious server with dropout
recovery needs at least these three exchanges (the upload, the consistency check on the survivor
set, the unmasking; see ``docs`` in the README's Flower section), so no such protocol can be
faster than this floor in this engine.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from secagg.identity import Identity, Roster

__all__ = ["FlowerEngineResult", "run_flower_engine_bench"]

FLOOR_RECORD = "secagg-bench-empty"  # an empty exchange of the floor round
EMPTY_EXCHANGES = 2  # the consistency check and the unmasking
WEIGHT = 100  # every client's num_examples (FedAvg weight)
CLIP = 8.0  # both secure workflows clip at Flower's default range


@dataclass(frozen=True)
class FlowerEngineResult:
    secure_rounds_s: list[float]
    plain_rounds_s: list[float]
    flower_rounds_s: list[float]
    secure_error: float  # max |secure mean - plain mean|
    flower_error: float
    neighbours: int
    threshold: int
    value_bits: int
    #: per secure round, the wall seconds of each of its message exchanges (setup first)
    secure_exchanges_s: list[list[float]]
    #: plain round + EMPTY_EXCHANGES empty exchanges (see the module docstring)
    floor_rounds_s: list[float]
    #: threshold-CKKS rounds (only with ckks=True), their max |mean - plain mean| and the
    #: wall seconds of each exchange
    ckks_rounds_s: list[float]
    ckks_error: float | None
    ckks_exchanges_s: list[list[float]]

    @property
    def secure_round_s(self) -> float:
        return statistics.median(self.secure_rounds_s)

    @property
    def plain_round_s(self) -> float:
        return statistics.median(self.plain_rounds_s)

    @property
    def floor_round_s(self) -> float:
        return statistics.median(self.floor_rounds_s)

    @property
    def ckks_round_s(self) -> float | None:
        return statistics.median(self.ckks_rounds_s) if self.ckks_rounds_s else None

    @property
    def flower_round_s(self) -> float:
        return statistics.median(self.flower_rounds_s)


def _is_threshold(record: Any) -> bool:
    """Whether a protocol record belongs to a threshold-CKKS round (its setup's config names the
    protocol; its later messages carry the threshold wire format)."""
    import json

    from secagg.ckks.threshold.session import PROTOCOL, peek_server
    from secagg.integrations.flower import records as r

    if record.get(r.STAGE) == r.SETUP:
        fields = json.loads(str(record.get(r.CONFIG)))
        return isinstance(fields, dict) and fields.get("protocol") == PROTOCOL
    payload = record.get(r.PAYLOAD)
    return isinstance(payload, bytes) and peek_server(payload) is not None


def client_update(partition: int, params: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, partition]).uniform(-1, 1, params).astype(np.float32)


@dataclass
class _Dispatch:
    """Hands a message to the mod of the protocol it belongs to (plain rounds: to no mod)."""

    directory: str

    def __call__(self, msg: Any, ctxt: Any, call_next: Callable[..., Any]) -> Any:
        from flwr.client.mod import secaggplus_mod as flower_mod
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

        from secagg.integrations.flower import Credentials, SecAggPlusMod, ThresholdCKKSMod
        from secagg.integrations.flower.records import PROTOCOL_RECORD

        records = msg.content.config_records if msg.has_content() else {}
        if FLOOR_RECORD in records:
            from flwr.app import ConfigRecord, Message, RecordDict

            return Message(RecordDict({FLOOR_RECORD: ConfigRecord({"ok": True})}), reply_to=msg)
        if PROTOCOL_RECORD in records:
            base = Path(self.directory)
            partition = int(ctxt.node_config["partition-id"])

            def creds(_: Any) -> Credentials:
                return Credentials(Identity.load(base / f"id-{partition}.json"),
                                   Roster.load(base / "roster.json"))

            mod = ThresholdCKKSMod if _is_threshold(records[PROTOCOL_RECORD]) else SecAggPlusMod
            return mod(credentials=creds)(msg, ctxt, call_next)
        if RECORD_KEY_CONFIGS in records:
            return flower_mod(msg, ctxt, call_next)
        return call_next(msg, ctxt)


@dataclass
class _ClientFn:
    params: int
    seed: int

    def __call__(self, context: Any) -> Any:
        from flwr.client import NumPyClient

        update = client_update(int(context.node_config["partition-id"]), self.params, self.seed)

        class _Client(NumPyClient):
            def fit(self, parameters: Any, config: Any) -> Any:
                return [update], WEIGHT, {}

        return _Client().to_client()


def run_flower_engine_bench(*, clients: int, params: int, repeats: int = 1,
                            seed: int = 0, ckks: bool = False) -> FlowerEngineResult:
    """Median over ``repeats`` of each kind of round, in one simulation (see the module)."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.app.message_type import MessageType
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow
    from flwr.server.workflow import SecAggPlusWorkflow as FlowerWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
    from flwr.server.workflow.default_workflows import default_fit_workflow
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from secagg.integrations.flower import SecAggPlusWorkflow, ThresholdCKKSWorkflow
    from secagg.integrations.flower.driver import exchange

    with tempfile.TemporaryDirectory(prefix="secagg-flower-bench-") as tmp:
        identities = [Identity.create(Path(tmp) / f"id-{i}.json", name=f"bench-{i}")
                      for i in range(clients)]
        roster = Roster.of("flower-bench", identities)
        roster.save(Path(tmp) / "roster.json")
        ours = SecAggPlusWorkflow(roster=roster, clipping_range=CLIP, max_weight=WEIGHT)
        probe = ours.config_for(roster, _layout(params), server_round=0)
        flower = FlowerWorkflow(
            num_shares=probe.neighbours + 1,
            reconstruction_threshold=min(probe.threshold, probe.neighbours),
            clipping_range=CLIP, quantization_range=(1 << probe.fixed_point.value_bits) - 1,
            max_weight=float(WEIGHT))
        threshold = ThresholdCKKSWorkflow(roster=roster, value_bound=CLIP, weight_bound=WEIGHT)
        times: dict[str, list[float]] = {"plain": [], "secure": [], "flower": [], "floor": [],
                                         "ckks": []}
        ckks_exchanges: list[list[float]] = []
        exchanges: list[list[float]] = []
        results: dict[str, np.ndarray] = {}
        failures: list[str] = []

        def one_round(kind: str, fit: Callable[..., None], grid: Any, context: Any) -> None:
            strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients,
                              min_available_clients=clients,
                              initial_parameters=ndarrays_to_parameters(
                                  [np.zeros(params, np.float32)]))
            legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=1),
                                   strategy=strategy)
            spent: list[float] = []

            def timed(g: Any, c: Any) -> None:
                t0 = time.perf_counter()
                fit(g, c)
                spent.append(time.perf_counter() - t0)

            DefaultWorkflow(fit_workflow=timed)(grid, legacy)
            (mean,) = parameters_to_ndarrays(compat.arrayrecord_to_parameters(
                legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True))
            if kind != "warmup":
                times[kind] += spent
                results[kind] = np.asarray(mean, dtype=np.float64)
            if kind == "secure" and ours.last_result is not None:
                exchanges.append(list(ours.last_result.exchange_s))
            if kind == "ckks" and threshold.last_result is not None:
                ckks_exchanges.append(list(threshold.last_result.exchange_s))

        def floor_fit(grid: Any, context: Any) -> None:
            fast: Any = _FastPullGrid(grid)  # duck-typed: the Grid calls the workflow makes
            default_fit_workflow(fast, context)
            nodes = list(grid.get_node_ids())
            for stage in range(EMPTY_EXCHANGES):
                empty = [Message(RecordDict({FLOOR_RECORD: ConfigRecord({"stage": stage})}),
                                 dst_node_id=node, message_type=MessageType.TRAIN)
                         for node in nodes]
                replies, _ = exchange(grid, empty, timeout=60.0)
                if len(replies) != len(nodes) or any(m.has_error() for m in replies):
                    raise RuntimeError("an empty exchange of the floor round lost a reply")

        server_app = ServerApp()

        @server_app.main()
        def main(grid: Any, context: Any) -> None:
            try:
                one_round("warmup", default_fit_workflow, grid, context)
                for _ in range(repeats):
                    one_round("plain", default_fit_workflow, grid, context)
                    one_round("secure", ours, grid, context)
                    one_round("flower", flower, grid, context)
                    one_round("floor", floor_fit, grid, context)
                    if ckks:
                        one_round("ckks", threshold, grid, context)
            except Exception as exc:  # reported after the simulation stops
                failures.append(f"{type(exc).__name__}: {exc}")

        cpus = os.cpu_count() or 2
        run_simulation(server_app=server_app,
                       client_app=ClientApp(client_fn=_ClientFn(params, seed),
                                            mods=[_Dispatch(tmp)]),
                       num_supernodes=clients,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": cpus,
                                                     "include_dashboard": False}})
    if failures or len(results) != 4 + ckks:
        raise RuntimeError("the Flower bench did not complete: " + "; ".join(failures))
    plain = results["plain"]
    return FlowerEngineResult(
        secure_rounds_s=times["secure"], plain_rounds_s=times["plain"],
        flower_rounds_s=times["flower"],
        secure_error=float(np.max(np.abs(results["secure"] - plain))),
        flower_error=float(np.max(np.abs(results["flower"] - plain))),
        neighbours=probe.neighbours, threshold=probe.threshold,
        value_bits=probe.fixed_point.value_bits, secure_exchanges_s=exchanges,
        floor_rounds_s=times["floor"], ckks_rounds_s=times["ckks"],
        ckks_error=float(np.max(np.abs(results["ckks"] - plain))) if ckks else None,
        ckks_exchanges_s=ckks_exchanges)


class _FastPullGrid:
    """``grid`` whose ``send_and_receive`` pulls as secagg's workflow does (so the floor round's
    train exchange does not pay Flower's 0.1 s pull interval, which a plain round does)."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        from secagg.integrations.flower.driver import exchange

        return exchange(self._grid, list(messages), timeout=timeout)[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def _layout(params: int) -> Any:
    from secagg.encoding.paramspec import ParamSpec, TensorSpec

    return ParamSpec((TensorSpec("0", (params,), "float32"),))
