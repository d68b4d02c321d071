"""ServerApp: FedAvg over ArrayRecord, every training round aggregated by secagg's workflow
(the roster named in the run config): masking (active mode) or threshold CKKS, as the run
config's ``protection`` says; evaluation metrics stay plain."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from secagg.identity import Roster
from secagg.integrations.flower import SecAggPlusWorkflow, ThresholdCKKSWorkflow

from .plaintext_check import write_released
from .task import initial_arrays

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n = len(Roster.load(str(cfg["secagg-roster"])))
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n,
                      min_evaluate_nodes=n, min_available_nodes=n)
    protection = str(cfg.get("protection", "masking"))
    timeout = float(cfg["stage-timeout"])
    if protection == "masking":
        secure: SecAggPlusWorkflow | ThresholdCKKSWorkflow = SecAggPlusWorkflow(timeout=timeout)
    elif protection == "ckks-threshold":
        secure = ThresholdCKKSWorkflow(timeout=timeout)
    else:
        raise ValueError(f"run config protection={protection!r}: expected 'masking' or "
                         "'ckks-threshold'")
    sgrid = secure.secure_grid(grid, context)

    def summary() -> tuple[np.ndarray, tuple[int, ...], int, float] | None:
        """The last round's release: mean, contributors, total weight, worst-case mean error."""
        last = sgrid.last_result
        if last is None:
            return None
        if protection == "masking":
            agg = last.aggregate
            return agg.mean(), agg.survivors, agg.total_weight, agg.config.fixed_point.step
        res, bound = last.result, last.config.max_error
        weight = round(res.total_weight)  # integer weights, decrypted within bound
        # sum and weight each within `bound`: the mean within bound * (1 + |mean|) / (W - bound)
        error = bound * (1 + float(np.max(np.abs(res.mean())))) / (weight - bound)
        return res.mean(), res.uploaders, weight, error

    def released(server_round: int, _arrays: ArrayRecord) -> MetricRecord | None:
        """After each round: record what it released, for the plaintext check (test runs)."""
        found = summary()
        if cfg["check-dir"] and server_round >= 1 and found is not None:
            write_released(str(cfg["check-dir"]), server_round, *found)
        return None

    result = strategy.start(grid=sgrid, initial_arrays=initial_arrays(cfg),
                            num_rounds=int(cfg["num-server-rounds"]), evaluate_fn=released)
    found = summary()
    if found is not None:
        print(f"secure rounds done ({protection}): last round summed {list(found[1])} of "
              f"{n}, total weight {found[2]}")
    print(f"final evaluate metrics: {result.evaluate_metrics_clientapp}")
