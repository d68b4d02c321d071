"""``secagg bench dp``: DP-SGD step cost and the accuracy price of privacy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "DP-SGD step vs non-private step on MiniLM + LoRA, and accuracy at epsilon 1, 3, 8"
DESCRIPTION = """\
Times interleaved non-private and DP-SGD steps (secure-noise production mode, Opacus hooks) on the
same batch, then trains the shared incident-category task (three enterprises pooled) non-privately
and at epsilon 1, 3 and 8 (10 epochs each, the recipe tuned on a validation split: DP-SGD with
expected batches of a third of the data, head rate 3e-2 and adapters at 0.3 of it), and reports test
accuracy. Takes about 6 to 15 minutes on 2 cores.

  secagg bench dp --json out/dp.json            # also writes out/dp.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="write the report here (nested + dotted keys)")
    parser.add_argument("--plot", metavar="PNG", help="accuracy plot (default: next to --json)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--timing-steps", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs per accuracy run (default: the tuned recipe's, 10)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoder", choices=["minilm", "test_only_tiny"], default="minilm",
                        help="test_only_tiny: a random 2-layer BERT, for the command's own tests")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = report["accuracy"]
    eps_keys = [k for k in acc if k != "nonprivate"]
    xs = [float(k.removeprefix("eps")) for k in eps_keys]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(xs, [acc[k] for k in eps_keys], "o-", label="DP-SGD (secure noise)")
    ax.axhline(acc["nonprivate"], color="grey", ls="--", label="non-private")
    ax.axhline(0.9 * acc["nonprivate"], color="grey", ls=":", label="90 % of non-private")
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()  # no "2 x 10^0" labels between the epsilons
    ax.set_xlabel("epsilon (delta = 1e-5)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Incident category: MiniLM + LoRA + sensors")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from secagg.cli._output import print_table, write_json

    from ..dp import DPBenchConfig, run_dp_bench

    recipe = {} if args.epochs is None else {"epochs": args.epochs}
    cfg = DPBenchConfig(batch_size=args.batch_size, seq_len=args.seq_len,
                        lora_rank=args.lora_rank, timing_steps=args.timing_steps,
                        threads=args.threads, encoder=args.encoder,
                        progress=not args.no_progress, **recipe)
    report = run_dp_bench(cfg)
    acc, retained = report["accuracy"], report["accuracy_retained"]
    print()
    print_table(
        [["step (s)", f"{report['nonprivate_step_s']:.3f}", f"{report['private_step_s']:.3f}",
          f"ratio {report['ratio']:.3f}"]]
        + [[f"accuracy {k}", f"{acc['nonprivate']:.3f}", f"{acc[k]:.3f}",
            "n/a" if r is None else f"{100 * r:.1f} % of non-private"]
           for k, r in retained.items()],
        header=["measure", "non-private", "DP (secure)", ""],
    )
    print(f"peak memory {report['peak_memory_mb']:.0f} MB, wall {report['wall_s']:.0f} s")
    plot = Path(args.plot) if args.plot else (Path(args.json).with_suffix(".png") if args.json
                                               else None)
    if plot is not None:
        _plot(report, plot)
        report["plot"] = str(plot)
        print(f"plot: {plot}")
    if args.json:
        write_json(args.json, report)
    return 0
