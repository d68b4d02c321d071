"""A small Flower federation for the integration tests: five enterprises with identities on
disk, a ClientApp whose model update is known in advance, and a fault mod that makes one node
vanish at a chosen protocol stage (its ClientApp fails, as a crashed SuperNode's would)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from secagg.identity import Identity, Roster
from secagg.integrations.flower import Credentials, SecAggPlusMod, ThresholdCKKSMod
from secagg.integrations.flower import records as r
from secagg.masking import wire

SHAPES = {"w": (6, 4), "b": (4,)}
#: Flower's Ray backend for the tests: one ClientApp actor per core
BACKEND = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
           "init_args": {"num_cpus": 2, "include_dashboard": False}}


def initial_arrays() -> ArrayRecord:
    return ArrayRecord({k: Array(np.zeros(s, dtype=np.float32)) for k, s in SHAPES.items()})


def client_model(partition: int) -> dict[str, np.ndarray]:
    """What partition ``partition``'s ClientApp returns: known in advance, so the test can
    compute the plaintext mean."""
    rng = np.random.default_rng(100 + partition)
    return {k: rng.uniform(-2, 2, size=s).astype(np.float32) for k, s in SHAPES.items()}


def client_examples(partition: int) -> int:
    return 10 + 7 * partition


def plaintext_mean(partitions: list[int]) -> dict[str, np.ndarray]:
    """The weighted mean of ``partitions``' models, in float64: what a round must release."""
    weights = {p: client_examples(p) for p in partitions}
    total = sum(weights.values())
    return {k: sum(weights[p] * client_model(p)[k].astype(np.float64) for p in partitions) / total
            for k in SHAPES}


def run_modern_round(directory: Path, n: int, workflow: Callable[[Roster], Any], fault: Any,
                     *, protocol: str = "masking") -> dict[str, Any]:
    """One FedAvg round over ``n`` simulated SuperNodes, on the grid of ``workflow(roster)``
    (a secagg workflow); returns the strategy's result, the round's result and the replies the
    server saw."""
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    roster_path = make_federation(directory, n)
    captured: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        recorder = RecordingGrid(grid)
        sgrid = workflow(Roster.load(roster_path)).secure_grid(recorder, context)
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                          min_available_nodes=n)
        result = strategy.start(grid=sgrid, initial_arrays=initial_arrays(), num_rounds=1)
        captured.update(result=result, secure=sgrid.last_result, replies=recorder.replies,
                        metric_names=recorder.metric_names)

    run_simulation(server_app=server_app,
                   client_app=make_client_app(directory, fault, protocol=protocol),
                   num_supernodes=n, backend_config=BACKEND)
    return captured


def make_federation(directory: Path, n: int) -> Path:
    """Identity files id-<i>.json (mode 0600) and roster.json; returns the roster's path."""
    identities = [Identity.create(directory / f"id-{i}.json", name=f"enterprise-{i}")
                  for i in range(n)]
    Roster.of("flower-test", identities).save(directory / "roster.json")
    return directory / "roster.json"


@dataclass
class PartitionCredentials:
    """Credentials by simulation partition: identity ``id-<partition>.json`` in ``directory``."""

    directory: str

    def __call__(self, context: Context) -> Credentials:
        partition = int(context.node_config["partition-id"])
        base = Path(self.directory)
        return Credentials(Identity.load(base / f"id-{partition}.json"),
                           Roster.load(base / "roster.json"))


def masking_kind(payload: bytes) -> str:
    """A masking server message's class name, e.g. "ShareDelivery"."""
    return wire.peek_type(payload).__name__


def threshold_kind(payload: bytes) -> str:
    """A threshold-CKKS server message's name: "key request", "delivery", "statement request",
    "partial request"."""
    from secagg.ckks.threshold.session import peek_server

    return peek_server(payload) or ""


def _protocol_payload(msg: Message) -> bytes | None:
    rec = msg.content.config_records.get(r.PROTOCOL_RECORD) if msg.has_content() else None
    payload = rec.get(r.PAYLOAD) if rec is not None else None
    return payload if isinstance(payload, bytes) else None


@dataclass
class FaultMod:
    """Makes partition ``partition`` fail when it receives a protocol message of ``kind`` (as
    ``kind_of`` names it), as a crashed SuperNode would."""

    partition: int
    kind: str  # e.g. "ShareDelivery" (masking) or "delivery" (threshold_kind)
    kind_of: Callable[[bytes], str] = masking_kind

    def __call__(self, msg: Message, ctxt: Context, call_next: Any) -> Message:
        payload = _protocol_payload(msg)
        if payload is not None and int(ctxt.node_config["partition-id"]) == self.partition \
                and self.kind_of(payload) == self.kind:
            raise RuntimeError(f"partition {self.partition} vanished at the {self.kind}")
        return call_next(msg, ctxt)


def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    model = client_model(partition)
    return Message(RecordDict({
        "arrays": ArrayRecord({k: Array(v) for k, v in model.items()}),
        "metrics": MetricRecord({"num-examples": client_examples(partition),
                                 "loss": float(partition)}),
    }), reply_to=msg)


def make_client_app(directory: Path, fault: Any = None, *, legacy: bool = False,
                    protocol: str = "masking") -> ClientApp:
    """The test ClientApp behind secagg's mod for ``protocol`` ("masking" or "ckks-threshold")
    and ``fault``, a mod run before it."""
    creds = PartitionCredentials(str(directory))
    mods: list[Any] = [SecAggPlusMod(credentials=creds) if protocol == "masking"
                       else ThresholdCKKSMod(credentials=creds)]
    if fault is not None:
        mods.insert(0, fault)
    if legacy:
        return ClientApp(client_fn=_legacy_client, mods=mods)
    app = ClientApp(mods=mods)
    app.train()(train)
    return app


def _legacy_client(context: Context) -> Any:
    from flwr.client import NumPyClient

    partition = int(context.node_config["partition-id"])

    class Legacy(NumPyClient):
        def fit(self, parameters: Any, config: Any) -> Any:
            model = client_model(partition)
            return [model[k] for k in SHAPES], client_examples(partition), {"loss": 1.0}

    return Legacy().to_client()


@dataclass
class RecordingGrid(Grid):
    """A pass-through Grid that notes, for every reply the server receives, the names of the
    ArrayRecords it carried on arrival (to check that no client model ever reached it)."""

    inner: Grid
    replies: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: every metric name any reply carried on arrival
    metric_names: set[str] = field(default_factory=set)

    def _note(self, messages: Any) -> list[Message]:
        out = list(messages)
        self.errors += [msg.error.reason for msg in out if msg.has_error()]
        self.replies += [(msg.metadata.src_node_id,
                          tuple(msg.content.array_records) if msg.has_content() else ())
                         for msg in out]
        self.metric_names.update(name for msg in out if msg.has_content()
                                 for rec in msg.content.metric_records.values() for name in rec)
        return out

    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Any:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Any) -> Any:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Any) -> Any:
        return self._note(self.inner.pull_messages(message_ids))

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        return self._note(self.inner.send_and_receive(messages, timeout=timeout))


@dataclass
class ReplayMod:
    """Writes partition ``partition``'s session blob from the ``save_at`` stage back into its
    Context.state (record ``record``) when the ``kind`` message arrives (the stage mark is left
    as it is): the replay of an older state the client must refuse."""

    partition: int
    kind: str
    save_at: str = "KeyDirectory"
    kind_of: Callable[[bytes], str] = masking_kind
    record: str = "secagg-session"

    def __call__(self, msg: Message, ctxt: Context, call_next: Any) -> Message:
        payload = _protocol_payload(msg)
        if int(ctxt.node_config["partition-id"]) != self.partition or payload is None:
            return call_next(msg, ctxt)
        kind = self.kind_of(payload)
        state = ctxt.state.config_records[self.record]
        if kind == self.save_at:  # kept in the state too: the mod object is not persistent
            ctxt.state.config_records["test-saved"] = ConfigRecord({"blob": state["blob"]})
        elif kind == self.kind:
            state["blob"] = ctxt.state.config_records["test-saved"]["blob"]
        return call_next(msg, ctxt)


@dataclass
class InconsistentDealerMod:
    """Partition ``partition`` deals (and masks with) a self-mask seed other than the one its
    advertisement committed to, in every round: the server's unmask then names it as the
    round's culprit. Runs around secagg's mod; rewrites the client's own sealed session."""

    partition: int
    directory: str

    def __call__(self, msg: Message, ctxt: Context, call_next: Any) -> Message:
        import os

        from secagg.hazmat.handles import SecretBytes
        from secagg.integrations.flower.client_state import STATE_RECORD, RoundState

        rec = msg.content.config_records.get(r.PROTOCOL_RECORD) if msg.has_content() else None
        setup = rec is not None and rec.get(r.STAGE) == r.SETUP
        out = call_next(msg, ctxt)
        if (setup and int(ctxt.node_config["partition-id"]) == self.partition
                and not out.has_error() and STATE_RECORD in ctxt.state.config_records):
            state = RoundState(ctxt, PartitionCredentials(self.directory)(ctxt))
            digest = bytes.fromhex(str(ctxt.state.config_records[STATE_RECORD]["digest"]))
            session = state.load(digest)
            session._seed = SecretBytes(os.urandom(32), label="self-mask-seed")
            state.save(session)
        return out
