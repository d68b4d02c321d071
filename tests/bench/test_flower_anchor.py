"""The Flower anchor drives Flower's real SecAgg+ and measures it (needs the [bench] extra)."""

from __future__ import annotations

import importlib.util
import logging
import random
import sys

import numpy as np
import pytest

from secagg_benchmarks.flower_anchor import FlowerResult, run_flower_secaggplus

needs_flwr = pytest.mark.skipif(
    importlib.util.find_spec("flwr") is None,
    reason="needs the optional flwr extra: pip install 'secagg[bench]'",
)


def test_missing_flwr_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flwr", None)  # makes `import flwr` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'secagg\[bench\]'"):
        run_flower_secaggplus(
            num_clients=5, num_params=10, dropout=0.2, num_shares=5, reconstruction_threshold=3
        )


def _check_plausible(result: FlowerResult, *, num_clients: int, num_params: int) -> None:
    assert result.correct
    assert result.client_ms > 0
    assert result.server_ms > 0
    # Flower uploads np.save'd int64 arrays (plus the weight factor and .npy headers).
    assert 8.0 <= result.upload_bytes_per_param < 8.0 + 400 / num_params
    assert result.details["upload_message_bytes_per_param"] >= result.upload_bytes_per_param
    assert result.details["max_abs_error"] <= result.details["error_tolerance"]
    # Stage times add up to the reported client time.
    stages = ("setup", "share_keys", "collect_masked_vectors")
    assert sum(result.details[f"client_{s}_ms"] for s in stages) == pytest.approx(result.client_ms, rel=1e-9)
    # server_ms is the unmask stage minus the simulated network and the Strategy plumbing.
    assert result.server_ms < result.details["server_unmask_wall_ms"]
    assert 0 < result.survivors <= num_clients


@pytest.mark.flower
@needs_flwr
def test_small_round_unmask_drop_is_correct() -> None:
    result = run_flower_secaggplus(
        num_clients=5, num_params=1000, dropout=0.2, num_shares=5, reconstruction_threshold=3
    )
    _check_plausible(result, num_clients=5, num_params=1000)
    # The dropped client vanished after uploading, so its input is in the sum.
    assert result.details["dropped"] == 1
    assert result.survivors == 5
    assert (result.num_shares, result.reconstruction_threshold) == (5, 3)


@pytest.mark.flower
@needs_flwr
def test_masked_input_drop_forces_pairwise_reconstruction() -> None:
    result = run_flower_secaggplus(
        num_clients=5,
        num_params=1000,
        dropout=0.2,
        num_shares=5,
        reconstruction_threshold=3,
        drop_stage="masked-input",
    )
    _check_plausible(result, num_clients=5, num_params=1000)
    assert result.survivors == 4
    assert result.details["server_unmask_key_agreement_ms"] > 0  # pairwise keys rebuilt


@pytest.mark.flower
@needs_flwr
def test_even_sparse_num_shares_runs_as_next_odd() -> None:
    # Flower's workflow crashes its clients with an even num_shares below num_clients.
    result = run_flower_secaggplus(
        num_clients=8, num_params=200, dropout=0.0, num_shares=4, reconstruction_threshold=3
    )
    assert result.correct
    assert result.num_shares == 5
    assert result.details["requested_num_shares"] == 4


@pytest.mark.flower
@needs_flwr
def test_global_state_is_restored() -> None:
    from flwr.client.mod.secure_aggregation import secaggplus_mod as mod_function
    from flwr.supercore.task_identity import TaskIdentity

    mod_module = sys.modules["flwr.client.mod.secure_aggregation.secaggplus_mod"]
    stages = ("setup", "share_keys", "collect_masked_vectors", "unmask")
    handlers = [getattr(mod_module, f"_{s}") for s in stages]
    logger = logging.getLogger("flwr")
    level = logger.level
    random.seed(123)
    np.random.seed(456)
    identity = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)

    run_flower_secaggplus(num_clients=4, num_params=50, dropout=0.0, num_shares=4, reconstruction_threshold=2)

    assert logger.level == level
    # The global generators continue exactly where the caller left them.
    assert random.random() == random.Random(123).random()
    assert np.random.random_sample() == np.random.RandomState(456).random_sample()
    assert (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id) == identity
    assert [getattr(mod_module, f"_{s}") for s in stages] == handlers
    assert mod_function is mod_module.secaggplus_mod
    wf_module = sys.modules["flwr.server.workflow.secure_aggregation.secaggplus_workflow"]
    assert wf_module.combine_shares.__module__.startswith("flwr.")


@pytest.mark.flower
@needs_flwr
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_clients": 2}, "at least 3"),
        ({"dropout": 1.0}, "dropout"),
        ({"num_shares": 9}, "num_shares"),
        ({"reconstruction_threshold": 5}, "reconstruction_threshold"),
        ({"drop_stage": "setup"}, "drop_stage"),
    ],
)
def test_rejects_parameters_flower_cannot_run(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "num_clients": 5,
        "num_params": 10,
        "dropout": 0.2,
        "num_shares": 5,
        "reconstruction_threshold": 3,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        run_flower_secaggplus(**args)  # type: ignore[arg-type]
