"""``secagg bench masking-scale``: how the masking round's cost grows with the number of clients."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

HELP = "measure the masking round at several federation sizes, fit the growth, project past it"
DESCRIPTION = """\
Runs the masking round of `secagg bench masking` (real state machines, wire bytes, active mode,
the sparse graph the parameter finder picks) at each --clients size, then:

  measured   client_ms (one client, all stages), server_ms (the server's unmask stage),
             server_total_ms (every server stage: collect + unmask), round_s (wall time of the
             whole simulated round), upload bytes/param, k and t, per size;
  fitted     cost = a * n^b by least squares on (log n, log cost), for client_ms, server_ms,
             server_total_ms and round_s: b is the growth exponent (1.0 = linear in n);
  projected  server cost at --project sizes, two ways: the fitted curves read off there, and a
             component model: counted work (one packed-sum add per upload; one secret rebuilt
             from t shares per owner; one mask expanded per survivor and per surviving neighbour
             of an early dropout; one key agreement per such pair) times unit costs measured in
             this run. The model leaves out per-message work (parsing, signatures, bookkeeping),
             shown at measured sizes as other_ms: read it as a floor.

Writes DIR/scale.json (every figure, labelled measured / fitted / projected), DIR/scale.md (the
tables) and DIR/scale.png (log-log plot, projected region shaded).

Rounds run one client after another in this process: n=1000 at 100k params takes minutes and
n=3000 several GB of memory. --repeats > 1 takes medians, but later repeats reuse the Lagrange
coefficients the first round computed (same roster, same graph); server_total_ms_first in the
JSON is the first, cold round.

examples:
  secagg bench masking-scale --clients 100,300 --params 100000 --out scale-small
  secagg bench masking-scale --clients 100,300,1000,3000 --params 100000 --dropout 0.1 --out scale
"""


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part, 10) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, found {text!r}") from None
    if len(sizes) < 2 or sizes[0] < 3:
        raise argparse.ArgumentTypeError(f"must list at least two distinct sizes, each >= 3 (a fit "
                                         f"needs two points), found {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=_sizes, default=_sizes("100,300,1000,3000"),
                        metavar="N,N,...", help="federation sizes to measure (100,300,1000,3000)")
    parser.add_argument("--params", type=int, default=100_000, help="parameters (100000)")
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="fraction of clients that drop (0.1)")
    parser.add_argument("--drop-stage", choices=("unmask", "masked-input"), default="unmask",
                        help="where dropped clients vanish: after uploading (unmask, default) or "
                        "before uploading (masked-input: their pairwise masks are rebuilt)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds per size, median (1)")
    parser.add_argument("--project", type=_sizes, default=_sizes("10000,100000"),
                        metavar="N,N,...", help="sizes to project to (10000,100000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="folder for scale.json, scale.md and scale.png (created)")
    parser.add_argument("--no-plot", action="store_true", help="skip scale.png")


def _progress(sizes: Iterable[int]) -> Iterator[int]:
    """tqdm over the sizes when it is installed, else one line per size on stderr."""
    sizes = list(sizes)
    try:
        from tqdm import tqdm
    except ImportError:
        for i, n in enumerate(sizes):
            print(f"masking-scale: size {i + 1}/{len(sizes)}: n={n}", file=sys.stderr, flush=True)
            yield n
        return
    bar = tqdm(sizes, desc="masking-scale", unit="size", file=sys.stderr)
    for n in bar:
        bar.set_postfix_str(f"n={n}")
        yield n


def run(args: argparse.Namespace) -> int:
    from secagg.cli._checks import check_range
    from secagg.cli._output import print_table, write_json

    from ..masking_scale import run_scale_study, write_markdown, write_plot

    check_range("--params", args.params, low=1)
    check_range("--dropout", args.dropout, low=0, high=0.5, high_inclusive=False)
    check_range("--repeats", args.repeats, low=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = run_scale_study(clients=args.clients, params=args.params, dropout=args.dropout,
                             drop_stage=args.drop_stage, repeats=args.repeats, seed=args.seed,
                             project_at=args.project, progress=_progress)
    write_json(out / "scale.json", report)
    write_markdown(report, out / "scale.md")
    print_table([[r["n"], r["k"], r["t"], f"{r['client_ms']:.1f}", f"{r['server_ms']:.1f}",
                  f"{r['server_total_ms']:.1f}", f"{r['round_s']:.2f}",
                  f"{r['upload_bytes_per_param']:.3f}", r["correct"]] for r in report["rows"]],
                header=["n", "k", "t", "client_ms", "server_ms", "server_total_ms", "round_s",
                        "bytes/param", "correct"])
    fit = report["fits"]["server_total_ms"]
    print(f"server_total_ms ~ n^{fit['exponent']:.2f} (fit over n = "
          f"{', '.join(str(r['n']) for r in report['rows'])})")
    for p in report["projections"]:
        print(f"projected n={p['n']}: server_total_ms {p['server_total_ms_fit']:.0f} (fit), "
              f"model floor {p['model_ms']:.0f} ms (k={p['k']}, t={p['t']})"
              + (f"; {p['refused']}" if p["refused"] else ""))
    written = ["scale.json", "scale.md"]
    if not args.no_plot:
        try:
            write_plot(report, out / "scale.png")
        except ImportError as exc:
            print(f"secagg: error: {exc}", file=sys.stderr)
            return 1
        written.append("scale.png")
    print(f"wrote {', '.join(str(out / name) for name in written)}")
    return 0 if report["correct"] else 1
