"""secagg's Flower mods called as Flower's ClientApp calls them (no engine): what a malicious
server's messages get out of a client. Findings of an attacker's review, each with a positive
control that shows the harness would see the leak."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from secagg.ckks.threshold.session import ThresholdRoundConfig
from secagg.errors import AlreadyUsed, ProtocolAbort
from secagg.identity import Roster
from secagg.integrations.flower import records as r
from secagg.integrations.flower.client_state import THRESHOLD_STATE_RECORD

from .flower_apps import client_model, initial_arrays, make_client_app, make_federation, train

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


def test_the_model_at_a_stage_that_takes_no_update_is_refused_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the session holds its update, a server sending the model again (with any stage's
    message) gets a refusal and the ClientApp does not train again (a DP client would spend
    budget). Positive control: with the check switched off, the ClientApp trains a second time."""
    from secagg.ckks.threshold.session import ClientSession as ThresholdClient

    roster = Roster.load(make_federation(tmp_path, N))
    app, trained = _counting_app(tmp_path)
    ctx = _context()
    assert not app(_threshold_setup(roster), ctx).has_error()

    def with_model() -> Message:
        body = RecordDict({"arrays": initial_arrays()})
        body[r.PROTOCOL_RECORD] = ConfigRecord({r.STAGE: r.STEP, r.PAYLOAD: b"not a key request",
                                                r.WEIGHT_KEY: "num-examples"})
        return _message(body)

    with pytest.raises(AlreadyUsed):  # trained and took the update, then refused the payload
        app(with_model(), ctx)
    assert trained == [1]
    with pytest.raises(ProtocolAbort, match="refusing to train"):
        app(with_model(), ctx)
    assert trained == [1]
    monkeypatch.setattr(ThresholdClient, "awaiting_update", property(lambda self: True))
    with pytest.raises(AlreadyUsed, match="already holds its update"):
        app(with_model(), ctx)
    assert trained == [1, 1]  # the leak of budget the check prevents
