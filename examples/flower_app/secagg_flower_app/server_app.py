"""ServerApp: FedAvg over ArrayRecord, every training round aggregated by secagg's workflow
(active mode, the roster named in the run config); evaluation metrics stay plain."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from secagg.identity import Roster
from secagg.integrations.flower import SecAggPlusWorkflow

from .plaintext_check import write_released
from .task import initial_arrays

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n = len(Roster.load(str(cfg["secagg-roster"])))
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n,
                      min_evaluate_nodes=n, min_available_nodes=n)
    secure = SecAggPlusWorkflow(timeout=float(cfg["stage-timeout"]))
    sgrid = secure.secure_grid(grid, context)

    def released(server_round: int, _arrays: ArrayRecord) -> MetricRecord | None:
        """After each round: record what it released, for the plaintext check (test runs)."""
        last = sgrid.last_result
        if cfg["check-dir"] and server_round >= 1 and last is not None:
            agg = last.aggregate
            write_released(str(cfg["check-dir"]), server_round, agg.mean(), agg.survivors,
                           agg.total_weight, agg.config.fixed_point.step)
        return None

    result = strategy.start(grid=sgrid, initial_arrays=initial_arrays(cfg),
                            num_rounds=int(cfg["num-server-rounds"]), evaluate_fn=released)
    last = sgrid.last_result
    if last is not None:
        print(f"secure rounds done: last round survivors {list(last.aggregate.survivors)}, "
              f"dropped {list(last.aggregate.dropped)}, total weight "
              f"{last.aggregate.total_weight}")
    print(f"final evaluate metrics: {result.evaluate_metrics_clientapp}")
