"""A Flower round through secagg's mod and workflow on Flower's real simulation engine (Ray):
five enterprises, one vanishing mid-round, the released mean checked against plaintext."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from secagg.integrations.flower import SecAggPlusWorkflow

from .flower_apps import (
    BACKEND,
    SHAPES,
    FaultMod,
    RecordingGrid,
    client_examples,
    initial_arrays,
    make_client_app,
    make_federation,
    plaintext_mean,
    run_modern_round,
)

pytestmark = [pytest.mark.flower, pytest.mark.slow]
N = 5


def _run(tmp_path: Path, fault: FaultMod | None) -> dict[str, Any]:
    return run_modern_round(tmp_path, N,
                            lambda roster: SecAggPlusWorkflow(roster=roster, timeout=120), fault)


def test_a_round_with_a_dropout_mid_round_releases_the_survivors_mean(tmp_path: Path) -> None:
    # partition 2 shares its keys, then vanishes before uploading its masked model: the server
    # must rebuild its pairwise masks from the neighbours' shares
    out = _run(tmp_path, FaultMod(partition=2, kind="ShareDelivery"))
    secure = out["secure"]
    assert secure is not None, "the secure round did not complete"
    assert secure.aggregate.survivors == (0, 1, 3, 4)
    assert secure.aggregate.dropped == (2,)
    assert secure.aggregate.total_weight == sum(client_examples(p) for p in (0, 1, 3, 4))
    want = plaintext_mean([0, 1, 3, 4])
    got = out["result"].arrays.to_numpy_ndarrays()
    step = 2 * 8.0 / ((1 << secure.aggregate.config.fixed_point.value_bits) - 1)
    for k, arr in zip(SHAPES, got, strict=True):
        assert arr.shape == want[k].shape
        assert np.max(np.abs(arr - want[k])) <= step, k
    # the mean differs from the mean with the dropped client's model: the dropout is real
    assert np.max(np.abs(got[0] - plaintext_mean(list(range(N)))["w"])) > 100 * step
    # no client ever sent its model: every reply the server received has no ArrayRecord
    assert len(out["replies"]) >= 4 * N - 1
    assert all(names == () for _, names in out["replies"])
    # nor its weight (the masked input carries it); the ClientApp's other metrics did arrive
    assert "loss" in out["metric_names"] and "num-examples" not in out["metric_names"]
    # FedAvg saw the survivors' metrics; their weights stayed protected (each reply carries the
    # released total instead), so the loss is their plain mean, not the example-weighted one
    assert out["result"].train_metrics_clientapp[1]["loss"] == pytest.approx(
        sum((0, 1, 3, 4)) / 4)


def test_an_older_session_state_written_back_is_refused(tmp_path: Path) -> None:
    """Partition 1's Context.state gets its key-directory blob back when the share delivery
    arrives: the client refuses it (the stage is sealed into the blob) and drops out; the others
    finish without it."""
    from .flower_apps import ReplayMod

    out = _run(tmp_path, ReplayMod(partition=1, kind="ShareDelivery"))
    secure = out["secure"]
    assert secure is not None
    assert secure.aggregate.survivors == (0, 2, 3, 4)
    assert any("authentication failed for session state" in f for f in secure.failures)
    got = out["result"].arrays.to_numpy_ndarrays()
    assert np.allclose(got[0], plaintext_mean([0, 2, 3, 4])["w"], atol=1e-3)


def test_a_plaintext_train_message_is_refused(tmp_path: Path) -> None:
    """A server that skips secure aggregation gets no model: every client refuses."""
    make_federation(tmp_path, N)
    captured: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        recorder = RecordingGrid(grid)
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=N,
                          min_available_nodes=N)
        captured["result"] = strategy.start(grid=recorder, initial_arrays=initial_arrays(),
                                            num_rounds=1)
        captured["replies"] = recorder.replies
        captured["errors"] = recorder.errors

    run_simulation(server_app=server_app, client_app=make_client_app(tmp_path),
                   num_supernodes=N, backend_config=BACKEND)
    assert len(captured["replies"]) == N
    assert all(names == () for _, names in captured["replies"])
    assert len(captured["errors"]) == N
    assert all("outside a secure round" in e for e in captured["errors"]), captured["errors"][0]
    assert not captured["result"].train_metrics_clientapp  # nothing aggregated
    assert len(captured["result"].arrays) == 0  # the model was never updated


def test_the_legacy_default_workflow_takes_it_as_its_fit_workflow(tmp_path: Path) -> None:
    """Flower's legacy path: DefaultWorkflow(fit_workflow=SecAggPlusWorkflow()), a legacy
    FedAvg and NumPyClients, the roster from the run config's key; one dropout at unmask."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    roster_path = make_federation(tmp_path, N)
    captured: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        context.run_config["secagg-roster"] = str(roster_path)
        strategy = LegacyFedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=N,
                                min_available_clients=N, initial_parameters=ndarrays_to_parameters(
                                    [np.zeros(s, np.float32) for s in SHAPES.values()]))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=1),
                               strategy=strategy)
        DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(timeout=120))(grid, legacy)
        captured["params"] = parameters_to_ndarrays(compat.arrayrecord_to_parameters(
            legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True))

    run_simulation(server_app=server_app,
                   client_app=make_client_app(tmp_path, FaultMod(partition=4, kind="UnmaskRequest"),
                                              legacy=True),
                   num_supernodes=N, backend_config=BACKEND)
    # partition 4 uploaded, then vanished: its model is in the sum (its self mask is rebuilt)
    want = plaintext_mean(list(range(N)))
    for k, arr in zip(SHAPES, captured["params"], strict=True):
        assert np.allclose(arr, want[k], atol=1e-3), k
