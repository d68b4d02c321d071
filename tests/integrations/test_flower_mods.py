"""secagg's Flower mods called as Flower's ClientApp calls them (no engine): what a malicious
server's messages get out of a client. Findings of an attacker's review, each with a positive
control that shows the harness would see the leak."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from secagg.ckks.threshold.session import ThresholdRoundConfig
from secagg.errors import AlreadyUsed, ProtocolAbort
from secagg.identity import Identity, Roster
from secagg.integrations.flower import records as r
from secagg.integrations.flower.client_state import THRESHOLD_STATE_RECORD

from .flower_apps import (
    client_examples,
    client_model,
    initial_arrays,
    make_client_app,
    make_federation,
    train,
)

N = 5
PROTOCOLS = ("masking", "ckks-threshold")


@pytest.fixture(autouse=True)
def _task_identity() -> Iterator[None]:
    """Flower checks a reply's run against the process's task identity, as its engines set it."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 0, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def _context() -> Context:
    return Context(run_id=1, node_id=10, node_config={"partition-id": 0}, state=RecordDict(),
                   run_config={})


def _message(content: RecordDict, message_type: str = "train") -> Message:
    msg = Message(content, dst_node_id=10, message_type=message_type, group_id="1")
    msg.metadata._message_id = secrets.token_hex(8)  # as delivered to a SuperNode
    return msg


def _threshold_setup(roster: Roster, *, round_index: int = 1) -> Message:
    layout = r.layout_of(initial_arrays())
    config = ThresholdRoundConfig.for_roster(
        roster, round=round_index, vector_length=layout.size, session=secrets.token_bytes(32),
        weight_bound=1000.0, value_bound=8.0, layout_digest=layout.digest())
    (msg,) = r.setup_messages([10], config_json=json.dumps(config.to_dict()), layout=layout,
                              group_id="1")
    msg.metadata._message_id = secrets.token_hex(8)
    return msg


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("message_type", ["train", "train.default", "train.finetune"])
def test_every_train_action_without_the_protocol_is_refused(
        tmp_path: Path, protocol: str, message_type: str) -> None:
    """Flower routes 'train.<action>' to the ClientApp's train functions, so the mod must treat
    it as 'train': a plain one is refused and no model comes back. Positive control: the same
    ClientApp without the mod returns its model for that very message."""
    from secagg.integrations.flower import SecAggPlusMod, ThresholdCKKSMod

    from .flower_apps import PartitionCredentials

    make_federation(tmp_path, N)
    creds = PartitionCredentials(str(tmp_path))
    mod = SecAggPlusMod(credentials=creds) if protocol == "masking" else \
        ThresholdCKKSMod(credentials=creds)
    plain = RecordDict({"arrays": initial_arrays(), "config": ConfigRecord({"lr": 0.1})})
    guarded, bare = ClientApp(mods=[mod]), ClientApp()
    for app in (guarded, bare):
        app.train()(train)
        app.train("finetune")(train)
    with pytest.raises(ProtocolAbort, match="outside a secure round"):
        guarded(_message(plain, message_type), _context())
    out = bare(_message(plain, message_type), _context())
    got = out.content.array_records["arrays"]["w"].numpy()
    assert np.array_equal(got, client_model(0)["w"])  # the leak the mod prevents


def test_a_server_alternating_two_setups_gets_no_second_advert(tmp_path: Path) -> None:
    """Setups A, B, then A again: the third is refused (every round begun in the run is
    remembered, not only the last). Positive control: with that memory erased, A is accepted
    a second time and the client trains and advertises again."""
    roster = Roster.load(make_federation(tmp_path, N))
    app = make_client_app(tmp_path, protocol="ckks-threshold")
    ctx = _context()
    a, b = _threshold_setup(roster, round_index=1), _threshold_setup(roster, round_index=2)
    a_record = a.content.config_records[r.PROTOCOL_RECORD]
    assert not app(a, ctx).has_error()
    assert not app(b, ctx).has_error()
    with pytest.raises(AlreadyUsed, match="refusing to set it up twice"):
        app(_setup_with(a_record), ctx)
    del ctx.state.config_records[THRESHOLD_STATE_RECORD + ".begun"]
    out = app(_setup_with(a_record), ctx)
    assert not out.has_error() and r.PROTOCOL_RECORD in out.content.config_records


def test_a_config_the_client_refuses_costs_no_training(tmp_path: Path) -> None:
    """A config over part of the roster is refused, and the round the client is in keeps its
    sealed session; no setup runs the ClientApp (it trains only at the share delivery)."""
    roster = Roster.load(make_federation(tmp_path, N))
    app, trained = _counting_app(tmp_path)
    ctx = _context()
    assert not app(_threshold_setup(roster), ctx).has_error()
    before = dict(ctx.state.config_records[THRESHOLD_STATE_RECORD])
    layout = r.layout_of(initial_arrays())
    part = ThresholdRoundConfig(client_ids=(0, 1, 2), round=9, session=secrets.token_bytes(32),
                                roster_digest=roster.digest(), vector_length=layout.size,
                                weight_bound=1000.0, value_bound=8.0,
                                layout_digest=layout.digest())
    (msg,) = r.setup_messages([10], config_json=json.dumps(part.to_dict()), layout=layout,
                              group_id="1")
    msg.metadata._message_id = secrets.token_hex(8)
    with pytest.raises(ProtocolAbort, match="pinned roster has 5 members"):
        app(msg, ctx)
    assert trained == []
    assert dict(ctx.state.config_records[THRESHOLD_STATE_RECORD]) == before


def _counting_app(directory: Path) -> tuple[ClientApp, list[int]]:
    """A ClientApp behind the threshold mod whose train function counts its calls."""
    from secagg.integrations.flower import ThresholdCKKSMod

    from .flower_apps import PartitionCredentials

    trained: list[int] = []

    def counting_train(msg: Message, context: Context) -> Message:
        trained.append(1)
        return train(msg, context)

    app = ClientApp(mods=[ThresholdCKKSMod(credentials=PartitionCredentials(str(directory)))])
    app.train()(counting_train)
    return app, trained


def _setup_with(record: ConfigRecord) -> Message:
    """A fresh delivery of a setup whose protocol record is ``record``."""
    body = RecordDict({r.PROTOCOL_RECORD: record})
    out = Message(body, dst_node_id=10, message_type="train", group_id="1")
    out.metadata._message_id = secrets.token_hex(8)
    return out


class _Round:
    """A threshold round with client 0 behind the mod (a real ClientApp and Context) and the
    other four as in-memory sessions, driven up to the share delivery (client 0's training
    stage); :meth:`finish` takes client 0's upload and completes the round."""

    def __init__(self, tmp_path: Path, app: ClientApp) -> None:
        from secagg.ckks.threshold.session import ClientSession as ThresholdClient
        from secagg.ckks.threshold.session import ServerSession

        self.roster = Roster.load(make_federation(tmp_path, N))
        identities = [Identity.load(tmp_path / f"id-{i}.json") for i in range(N)]
        self.app, self.ctx = app, _context()
        setup = _threshold_setup(self.roster)
        self.config = ThresholdRoundConfig.from_dict(
            json.loads(str(setup.content.config_records[r.PROTOCOL_RECORD][r.CONFIG])))
        self.others = {i: ThresholdClient(self.config, i, np.full(self.config.vector_length, 0.5),
                                          weight=2.0, identity=identities[i], roster=self.roster)
                       for i in range(1, N)}
        self.server = ServerSession(self.config, roster=self.roster)
        self.server.receive(self._answer(app(setup, self.ctx)))
        for c in self.others.values():
            self.server.receive(c.start())
        self._step()  # the key request
        self.delivery = self.server.advance()  # client id -> its share delivery

    @staticmethod
    def _answer(reply: Message) -> bytes:
        payload = reply.content.config_records[r.PROTOCOL_RECORD][r.PAYLOAD]
        assert isinstance(payload, bytes)
        return payload

    def _step(self) -> None:
        out = self.server.advance()
        self.key_request = out[0]
        self.server.receive(self._answer(self.app(self.step(out[0]), self.ctx)))
        for i, c in self.others.items():
            reply = c.handle_bytes(out[i])
            assert reply is not None
            self.server.receive(reply)

    @staticmethod
    def step(payload: bytes, *, model: bool = False) -> Message:
        body = RecordDict({"arrays": initial_arrays(),
                           "config": ConfigRecord({"server-round": 1})}) if model else RecordDict()
        body[r.PROTOCOL_RECORD] = ConfigRecord({r.STAGE: r.STEP, r.PAYLOAD: payload})
        return _message(body)

    def finish(self, upload: Message) -> Any:
        from secagg.ckks.threshold.session import ServerStage

        self.server.receive(self._answer(upload))
        for i, c in self.others.items():
            reply = c.handle_bytes(self.delivery[i])
            assert reply is not None
            self.server.receive(reply)
        while self.server.stage is not ServerStage.DONE:
            out = self.server.advance()
            for i, data in out.items():
                reply_bytes = self._answer(self.app(self.step(data), self.ctx)) if i == 0 \
                    else self.others[i].handle_bytes(data)
                assert reply_bytes is not None
                self.server.receive(reply_bytes)
        return self.server.result


def test_the_model_only_trains_with_the_share_delivery(tmp_path: Path) -> None:
    """The model sent with any other message (the key request again, a garbage payload) is
    refused before the ClientApp runs; with the delivery it trains once, and the
    reply carries the encrypted upload and the other metrics, not the model nor the weight."""
    app, trained = _counting_app(tmp_path)
    rnd = _Round(tmp_path, app)
    for payload in (b"not a protocol message", rnd.key_request):
        with pytest.raises(ProtocolAbort, match="other than this session's share delivery"):
            app(rnd.step(payload, model=True), rnd.ctx)
    assert trained == []
    upload = app(rnd.step(rnd.delivery[0], model=True), rnd.ctx)
    assert trained == [1] and not upload.has_error()
    assert not upload.content.array_records
    metrics = {k: v for rec in upload.content.metric_records.values() for k, v in rec.items()}
    assert metrics == {"loss": 0.0}
    result = rnd.finish(upload)
    assert round(result.total_weight) == client_examples(0) + 2 * (N - 1)
    with pytest.raises(ProtocolAbort, match="refusing to train"):  # never a second time
        app(rnd.step(rnd.delivery[0], model=True), rnd.ctx)
    assert trained == [1]


def test_the_server_cannot_choose_which_metric_is_the_weight(tmp_path: Path) -> None:
    """The weight's metric names are the client's (the mod's ``weight_keys``), not the
    server's: a key the server slips into the delivery changes nothing. Positive control: a mod
    configured with other names counts weight 1 and leaves num-examples in the clear, which the
    harness sees."""
    from secagg.integrations.flower import ThresholdCKKSMod

    from .flower_apps import PartitionCredentials

    app, _ = _counting_app(tmp_path)
    rnd = _Round(tmp_path, app)
    msg = rnd.step(rnd.delivery[0], model=True)
    msg.content.config_records[r.PROTOCOL_RECORD]["weight-key"] = "no-such-metric"
    upload = app(msg, rnd.ctx)
    metrics = {k for rec in upload.content.metric_records.values() for k in rec}
    assert "num-examples" not in metrics
    assert round(rnd.finish(upload).total_weight) == client_examples(0) + 2 * (N - 1)

    other = tmp_path / "control"
    other.mkdir()
    control = ClientApp(mods=[ThresholdCKKSMod(credentials=PartitionCredentials(str(other)),
                                               weight_keys=("other",))])
    control.train()(train)
    rnd = _Round(other, control)
    upload = control(rnd.step(rnd.delivery[0], model=True), rnd.ctx)
    metrics = {k for rec in upload.content.metric_records.values() for k in rec}
    assert "num-examples" in metrics
    assert round(rnd.finish(upload).total_weight) == 1 + 2 * (N - 1)


@pytest.mark.parametrize("failure", ["raises", "nan-model", "two-arrays"])
def test_a_training_that_fails_is_a_dropout_and_never_runs_again(
        tmp_path: Path, failure: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ClientApp trains and then it, or what it returned, fails: the client answers with an
    error (a dropout) and its session is over, so the same delivery sent again does not train
    again. Positive control: with the session not abandoned, the resent delivery trains a
    second time (a DP client would spend its budget twice)."""
    from secagg.ckks.threshold.session import ClientSession as ThresholdClient
    from secagg.integrations.flower import ThresholdCKKSMod

    from .flower_apps import PartitionCredentials

    def run(directory: Path) -> list[int]:
        trained: list[int] = []

        def flaky(msg: Message, context: Context) -> Message:
            trained.append(1)
            out = train(msg, context)
            if len(trained) == 1:
                if failure == "raises":
                    raise RuntimeError("out of memory")
                arrays = out.content.array_records["arrays"]
                if failure == "nan-model":
                    out.content["arrays"] = type(arrays)({k: Array(np.full_like(v.numpy(), np.nan))
                                                          for k, v in arrays.items()})
                else:
                    out.content["extra"] = arrays
            return out

        directory.mkdir(exist_ok=True)
        app = ClientApp(mods=[ThresholdCKKSMod(credentials=PartitionCredentials(str(directory)))])
        app.train()(flaky)
        rnd = _Round(directory, app)
        first = app(rnd.step(rnd.delivery[0], model=True), rnd.ctx)
        assert first.has_error() and "dropout" in first.error.reason
        with contextlib.suppress(ProtocolAbort, AlreadyUsed):
            app(rnd.step(rnd.delivery[0], model=True), rnd.ctx)
        return trained

    assert run(tmp_path / "defended") == [1]
    monkeypatch.setattr(ThresholdClient, "abandon", lambda self, reason: None)
    assert run(tmp_path / "undefended") == [1, 1]
