"""A client the protocol names as a round's culprit is left out of later rounds, on Flower's real
simulation engine: partition 3 deals shares of a seed other than the one it committed to, in
every round. Round 1 ends naming it; round 2 runs without it and releases the others' mean.
Positive control: with ``exclude_culprits=False`` round 2 ends the same way."""

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

from secagg.identity import Roster
from secagg.integrations.flower import SecAggPlusWorkflow

from .flower_apps import (
    BACKEND,
    SHAPES,
    InconsistentDealerMod,
    client_examples,
    client_model,
    initial_arrays,
    make_client_app,
    make_federation,
)

pytestmark = [pytest.mark.flower, pytest.mark.slow]
N = 5
CHEAT = 3


def _two_rounds(tmp_path: Path, *, exclude: bool) -> dict[str, Any]:
    roster_path = make_federation(tmp_path, N)
    captured: dict[str, Any] = {"rounds": []}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        secure = SecAggPlusWorkflow(roster=Roster.load(roster_path), timeout=120,
                                    exclude_culprits=exclude)
        sgrid = secure.secure_grid(grid, context)
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=N,
                          min_available_nodes=N)

        def after(server_round: int, _arrays: Any) -> None:
            if server_round >= 1:
                captured["rounds"].append(sgrid.last_result)
                sgrid.last_result = None

        strategy.start(grid=sgrid, initial_arrays=initial_arrays(), num_rounds=2,
                       evaluate_fn=after)
        captured["excluded"] = set(secure.excluded_clients)

    run_simulation(server_app=server_app,
                   client_app=make_client_app(tmp_path, InconsistentDealerMod(CHEAT,
                                                                              str(tmp_path))),
                   num_supernodes=N, backend_config=BACKEND)
    return captured


def test_a_named_culprit_is_left_out_of_the_next_round(tmp_path: Path) -> None:
    out = _two_rounds(tmp_path, exclude=True)
    first, second = out["rounds"]
    assert first is None, "round 1 should end, naming the inconsistent dealer"
    assert out["excluded"] == {CHEAT}
    assert second is not None, "round 2 should complete without the culprit"
    honest = [p for p in range(N) if p != CHEAT]
    assert second.aggregate.survivors == tuple(honest)
    weights = {p: client_examples(p) for p in honest}
    step = 2 * 8.0 / ((1 << second.aggregate.config.fixed_point.value_bits) - 1)
    got = second.arrays.to_numpy_ndarrays()
    for k, arr in zip(SHAPES, got, strict=True):
        want = sum(weights[p] * client_model(p)[k].astype(np.float64) for p in honest) \
            / sum(weights.values())
        assert np.max(np.abs(arr - want)) <= step, k


def test_without_exclusion_the_culprit_stops_every_round(tmp_path: Path) -> None:
    out = _two_rounds(tmp_path, exclude=False)
    assert out["rounds"] == [None, None]
    assert out["excluded"] == set()
