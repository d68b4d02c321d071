"""``secagg bench dp`` itself: the published report contract, on the tiny test-only encoder.

The real run (MiniLM, the tuned 10-epoch recipe) takes minutes; this one runs the same code path
(interleaved step timing in the secure-noise mode, a non-private baseline and DP-SGD at epsilon 1,
3, 8, the table, the JSON and the PNG) with the random 2-layer BERT and one epoch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from secagg.cli import main
from secagg.errors import InvalidParameter
from secagg_benchmarks.dp import DPBenchConfig

CONTRACT = ("accuracy.nonprivate", "accuracy.eps1", "accuracy.eps3", "accuracy.eps8",
            "private_step_s", "nonprivate_step_s", "ratio", "mode", "peak_memory_mb", "plot")


@pytest.mark.slow
def test_bench_dp_writes_every_contract_key_and_the_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "dp.json"
    assert main(["bench", "dp", "--json", str(out), "--encoder", "test_only_tiny", "--epochs", "1",
                 "--timing-steps", "2", "--seq-len", "16", "--no-progress"]) == 0
    report = json.loads(out.read_text())
    missing = [k for k in CONTRACT if k not in report]
    assert not missing, f"contract keys missing: {missing}"
    assert report["mode"] == "secure"
    for key in ("private_step_s", "nonprivate_step_s", "ratio", "peak_memory_mb"):
        value = report[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert report["ratio"] == pytest.approx(report["private_step_s"] / report["nonprivate_step_s"])
    for key in ("nonprivate", "eps1", "eps3", "eps8"):
        assert 0.0 <= report["accuracy"][key] <= 1.0
        assert report[f"accuracy.{key}"] == report["accuracy"][key]  # nested and dotted agree
        if key != "nonprivate":
            assert report["noise_multiplier"][key] > 0
            assert report["accuracy_retained"][key] == pytest.approx(
                report["accuracy"][key] / report["accuracy"]["nonprivate"])
    assert report["train_records"] > report["test_records"] > 0
    assert report["recipe"]["epochs"] == 1
    plot = Path(report["plot"])
    assert plot == out.with_suffix(".png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "ratio" in printed and "accuracy eps8" in printed


@pytest.mark.parametrize(
    ("kw", "field"),
    [(dict(epochs=0), "epochs"), (dict(learning_rate=0.0), "learning_rate"),
     (dict(adapter_lr_scale=float("nan")), "adapter_lr_scale"), (dict(epsilons=()), "epsilons"),
     (dict(encoder="bert-large"), "encoder"), (dict(nonprivate_batch=0), "nonprivate_batch")],
)
def test_bad_bench_config_names_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidParameter, match=field):
        DPBenchConfig(**kw)  # type: ignore[arg-type]


def test_bench_defaults_are_the_tuned_recipe() -> None:
    from secagg_clients.trainer import DPConfig

    cfg = DPBenchConfig()
    assert cfg.encoder == "minilm" and cfg.epsilons == (1.0, 3.0, 8.0)
    # large expected DP batches (sample rate >= 1/4 on the ~810 pooled training records), a lower
    # rate for the adapters than for the head; DPConfig accepts the recipe's fields as they are
    assert 810 / math.ceil(810 / cfg.train_batch) >= 0.25 * 810
    assert cfg.adapter_lr_scale < 1
    DPConfig(epochs=cfg.epochs, batch_size=cfg.train_batch, learning_rate=cfg.learning_rate,
             adapter_lr_scale=cfg.adapter_lr_scale, max_grad_norm=cfg.max_grad_norm,
             target_epsilon=8.0)
