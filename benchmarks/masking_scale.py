"""How the masking round's cost grows with the number of clients (``secagg bench masking-scale``).

Three kinds of figures, kept apart in every output:

* **measured**: for each n, rounds of :func:`benchmarks.masking.run_masking_bench` (the real
  state machines and wire bytes, active mode, on the sparse graph the parameter finder picks);
* **fitted**: ``cost = prefactor * n ** exponent``, least squares on (log n, log cost) over the
  measured sizes, and that curve read off at larger n (a projection);
* **modelled**: the server work the protocol requires, counted per n, times unit costs measured
  in the same process at the same vector size. The components: adding one masked vector into the
  packed sum (``sum_upload_ms``, collect stage); rebuilding one owner's secret from t revealed
  shares, checked against its commitment and turned into a mask key (``rebuild_ms``, with its
  Lagrange coefficients already known), and computing the coefficients for one set of t holders
  (``lagrange_ms``, once per distinct set: owners close on the graph's ring share one, see
  :func:`secagg.masking.recovery.shared_subsets`); expanding one mask over the vector and
  removing it (``expand_ms``, once per surviving client's self mask and once per surviving
  neighbour of each client that dropped before uploading); agreeing on that pairwise key
  (``pairwise_key_ms``); and, the one term that grows as n^2, putting one advert hash into one
  client's key directory (``directory_entry_ms``: in active mode every directory lists the hash
  of every advert; the list is encoded once a round and copied into each directory). The model
  leaves out the rest of the per-message work (parsing, signature checks, bookkeeping): at
  measured sizes that remainder is shown as ``other_ms``,
  so the model reads as a floor, not a forecast.

The graph's degree k and threshold t at a projected n come from the same parameter finder with
the policy the simulated roster pins (5 % corrupt, 40-bit security).
"""

from __future__ import annotations

import math
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from secagg.encoding.packing import PackedSum, packed_size
from secagg.errors import InvalidParameter
from secagg.hazmat import shamir
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.prg import MaskExpander
from secagg.masking import MaskingConfig, Stage, wire
from secagg.masking import keys as mkeys
from secagg.masking import messages as m
from secagg.masking.graph import holders_of, roster_neighbours
from secagg.masking.params import choose_parameters
from secagg.masking.recovery import shared_subsets
from secagg.masking.simulate import simulated_federation_for

from .masking import MaskingBenchResult, run_masking_bench

__all__ = ["PROJECT_AT", "PowerLaw", "UnitCosts", "WorkCounts", "expected_counts",
           "expected_lagrange_sets", "fit_power_law",
           "measure_unit_costs", "measured_counts", "run_scale_study", "write_markdown",
           "write_plot"]

#: Sizes the study projects to by default (past what one machine simulates in minutes).
PROJECT_AT = (10_000, 100_000)
#: The policy of the simulated roster (:func:`secagg.masking.simulate.insecure_simulated_federation`).
CORRUPT_RATE, SECURITY_BITS, FAILURE_PROBABILITY = 0.05, 40, 2.0**-20
#: The cost columns that are fitted against n.
FITTED = ("client_ms", "server_ms", "server_total_ms", "round_s")


@dataclass(frozen=True)
class WorkCounts:
    """The server's countable work in one round."""

    uploads: int  # masked vectors added into the sum
    self_masks: int  # survivors whose self mask is rebuilt and removed
    pairwise_masks: int  # (survivor, early dropout) pairs whose pairwise mask is removed
    rebuilds: int  # owners whose secret is rebuilt from t shares
    directory_entries: int  # advert hashes over all key directories (|advertised|^2)
    lagrange_sets: int = 0  # distinct sets of t holders the rebuilds use (coefficients each)


@dataclass(frozen=True)
class UnitCosts:
    """Milliseconds per unit of work, measured in this process."""

    sum_upload_ms: float
    expand_ms: float
    pairwise_key_ms: float
    rebuild_ms: float
    directory_entry_ms: float
    lagrange_ms: float = 0.0

    def directory_ms(self, c: WorkCounts) -> float:
        return c.directory_entries * self.directory_entry_ms

    def collect_ms(self, c: WorkCounts) -> float:
        return c.uploads * self.sum_upload_ms

    def unmask_ms(self, c: WorkCounts) -> float:
        return (c.rebuilds * self.rebuild_ms + c.lagrange_sets * self.lagrange_ms
                + (c.self_masks + c.pairwise_masks) * self.expand_ms
                + c.pairwise_masks * self.pairwise_key_ms)


@dataclass(frozen=True)
class PowerLaw:
    """``y = prefactor * n ** exponent``."""

    exponent: float
    prefactor: float

    def at(self, n: float) -> float:
        return float(self.prefactor * n**self.exponent)


def fit_power_law(ns: Sequence[float], ys: Sequence[float]) -> PowerLaw:
    """Least squares on (log n, log y); needs two distinct n and positive y."""
    if len(set(ns)) < 2:
        raise InvalidParameter(f"a fit needs at least two distinct sizes, found {sorted(set(ns))}")
    if min(ys) <= 0:
        raise InvalidParameter(f"a log-log fit needs positive costs, found {min(ys)}")
    slope, intercept = np.polyfit(np.log(np.asarray(ns, float)), np.log(np.asarray(ys, float)), 1)
    return PowerLaw(exponent=float(slope), prefactor=float(np.exp(intercept)))


def measured_counts(result: MaskingBenchResult) -> WorkCounts:
    """The work the server of ``result``'s rounds did, counted on the round's own graph."""
    config = result.config
    if config is None or not config.active:
        raise InvalidParameter("work is counted on the roster's graph: run the rounds in active mode")
    roster = simulated_federation_for(config)[0]
    graph = roster_neighbours(roster.ids, degree=config.neighbours,
                              roster_digest=config.roster_digest)
    advertised = [i for i in roster.ids if result.dropouts.get(i) is not Stage.ADVERTISE]
    shared = {i for i in advertised if result.dropouts.get(i) is not Stage.SHARE}
    survivors = set(result.survivor_ids)
    reach = {d: len(graph[d] & survivors) for d in sorted(shared - survivors)}
    answered = {i for i in survivors
                if result.dropouts.get(i) not in (Stage.CONSISTENCY, Stage.UNMASK)}
    owners = sorted(survivors | {d for d, r in reach.items() if r > 0})
    return WorkCounts(uploads=len(survivors), self_masks=len(survivors),
                      pairwise_masks=sum(reach.values()), rebuilds=len(owners),
                      directory_entries=len(advertised) ** 2,
                      lagrange_sets=_holder_sets(graph, owners, answered, config.threshold))


def _holder_sets(graph: Mapping[int, frozenset[int]], owners: Iterable[int],
                 answered: set[int], threshold: int) -> int:
    """How many distinct sets of t holders the server's rebuilds use (honest holders)."""
    eligible = {o: frozenset(holders_of(graph, o) & answered) for o in owners}
    chosen = shared_subsets(graph, eligible, threshold)
    return len({chosen.get(o) or frozenset(sorted(e)[:threshold]) for o, e in eligible.items()})


def expected_lagrange_sets(n: int, neighbours: int, threshold: int, answering: float) -> int:
    """About how many holder sets :func:`secagg.masking.recovery.shared_subsets` picks at n:
    a set of t answering holders spans about t / answering places of the ring and serves the
    owners whose k + 1 holders still contain it."""
    if neighbours >= n - 1:
        return 1
    serves = max(1.0, neighbours + 2 - threshold / answering)
    return math.ceil(n / serves)


def expected_counts(n: int, neighbours: int, dropout: float, drop_stage: str,
                    threshold: int | None = None) -> WorkCounts:
    """The same counts, expected at size n (clients dropping at ``drop_stage``); with the
    ``threshold``, also the holder sets (estimated, see :func:`expected_lagrange_sets`)."""
    dropped = round(dropout * n)
    sets = 0 if threshold is None else expected_lagrange_sets(n, neighbours, threshold,
                                                              1 - dropped / n)
    if drop_stage == "unmask":  # they uploaded: every upload's self mask is rebuilt
        return WorkCounts(uploads=n, self_masks=n, pairwise_masks=0, rebuilds=n,
                          directory_entries=n * n, lagrange_sets=sets)
    alive = n - dropped  # masked-input: each dropout's k neighbours survive w.p. alive / (n - 1)
    pairs = round(dropped * neighbours * alive / (n - 1))
    return WorkCounts(uploads=alive, self_masks=alive, pairwise_masks=pairs, rebuilds=n,
                      directory_entries=n * n, lagrange_sets=sets)


def _median_ms(run: Callable[[], object], reps: int, per: int = 1) -> float:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) / per)
    return 1e3 * statistics.median(samples)


def _lagrange_ms(threshold: int, reps: int) -> float:
    """The Lagrange coefficients for one fresh set of t x-coordinates (uncached)."""
    rng = np.random.default_rng()
    sets = [tuple(sorted(int(x) + 1 for x in rng.choice(1 << 24, size=threshold, replace=False)))
            for _ in range(reps)]
    uncached = shamir._lagrange_at_zero.__wrapped__
    samples = []
    for xs in sets:
        t0 = time.perf_counter()
        uncached(xs)
        samples.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(samples)


def _rebuild_ms(threshold: int, reps: int) -> float:
    """One owner's rebuild as the server does it (:class:`secagg.masking.recovery.SecretRecovery`
    with honest shares): combine t shares, check the seed commitment, derive the mask key. The
    holder ids are the same in every sample, so the coefficients are cached (they are counted
    apart, per holder set: :func:`_lagrange_ms`)."""
    digest, rng, samples = os.urandom(32), np.random.default_rng(), []
    xs = [int(x) + 1 for x in rng.choice(1 << 24, size=threshold, replace=False)]
    for _ in range(reps):
        seed = SecretBytes(os.urandom(32))
        shares = shamir.split(seed, threshold=threshold, xs=xs)
        want = mkeys.seed_commitment(seed, 0, digest, 1)
        t0 = time.perf_counter()
        secret = shamir.combine(shares, threshold=threshold, secret_bytes=32)
        if mkeys.seed_commitment(secret, 0, digest, 1) != want:
            raise AssertionError("the timed rebuild did not rebuild the seed")
        mkeys.self_mask_key(secret, 0, digest, 1)
        samples.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(samples)


def measure_unit_costs(*, wire_length: int, mod_bits: int, threshold: int,
                       reps: int = 9) -> UnitCosts:
    """Unit costs at this vector size and threshold (medians of ``reps`` timings)."""
    packed = PackedSum(wire_length, mod_bits)
    payload = os.urandom(packed_size(wire_length, mod_bits))
    sum_upload = _median_ms(lambda: packed.add(payload), reps)
    masks = [(SecretBytes(os.urandom(mkeys.MASK_KEY_BYTES)), True) for _ in range(8)]
    acc = np.zeros(wire_length, dtype=np.uint32)
    expander = MaskExpander()
    expand = _median_ms(lambda: expander.apply_many(acc, masks), reps, per=len(masks))
    own, peer, digest = X25519KeyPair.generate(), X25519KeyPair.generate().public_bytes, bytes(32)
    pairwise = _median_ms(lambda: mkeys.pairwise_mask_key(own, peer, 1, 2, digest, 1), 4 * reps)
    # the server's key directories share one map of advert hashes (encoded once per round by
    # wire.encode_all); each directory still carries, and so copies, all of it
    entries, directories = 2000, 50
    hashes = {q: os.urandom(32) for q in range(entries)}
    batch = {p: m.KeyDirectory(digest=digest, round=1, party=p, adverts={}, advert_hashes=hashes)
             for p in range(directories)}
    return UnitCosts(sum_upload_ms=sum_upload, expand_ms=expand, pairwise_key_ms=pairwise,
                     rebuild_ms=_rebuild_ms(threshold, 3 * reps),
                     lagrange_ms=_lagrange_ms(threshold, 3 * reps),
                     directory_entry_ms=_median_ms(lambda: wire.encode_all(batch), reps,
                                                   entries * directories))


def _projected_config(n: int, *, params: int, dropout: float) -> dict[str, Any]:
    """k, t and mod_bits the finder and the config would pick at n (or why it is refused)."""
    chosen = choose_parameters(num_clients=n, dropout_rate=max(dropout, 0.01),
                               corrupt_rate=CORRUPT_RATE, failure_probability=FAILURE_PROBABILITY,
                               security_bits=SECURITY_BITS, active=True)
    out: dict[str, Any] = {"n": n, "k": chosen.neighbours, "t": chosen.threshold}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = MaskingConfig.create(
                num_clients=n, vector_length=params, clip=8.0, value_bits=16, dropout_rate=dropout,
                corrupt_rate=CORRUPT_RATE, security_bits=SECURITY_BITS, active=False,
                neighbours=chosen.neighbours, threshold=chosen.threshold)
        out.update(mod_bits=config.mod_bits, refused=None)
    except InvalidParameter as exc:  # e.g. 16-bit values overflow a 32-bit sum past ~65k clients
        out.update(mod_bits=32, refused=f"{exc} (at value_bits=16; fewer value bits would run)")
    return out


def run_scale_study(*, clients: Sequence[int], params: int, dropout: float,
                    drop_stage: str = "unmask", repeats: int = 1, seed: int = 0,
                    project_at: Sequence[int] = PROJECT_AT,
                    progress: Callable[[Iterable[int]], Iterable[int]] = iter) -> dict[str, Any]:
    """Measure every size in ``clients``, fit, and project to ``project_at``: the report."""
    rows: list[dict[str, Any]] = []
    for n in progress(sorted(clients)):
        res = run_masking_bench(clients=n, params=params, dropout=dropout, full_graph=False,
                                repeats=repeats, seed=seed, drop_stage=drop_stage, active=True)
        assert res.config is not None
        units = measure_unit_costs(wire_length=res.config.wire_length,
                                   mod_bits=res.config.mod_bits, threshold=res.threshold)
        counts = measured_counts(res)
        model = {"model_directory_ms": units.directory_ms(counts),
                 "model_collect_ms": units.collect_ms(counts),
                 "model_unmask_ms": units.unmask_ms(counts)}
        rows.append({
            "n": n, "k": res.neighbours, "t": res.threshold, "correct": res.correct,
            "survivors": res.survivors, "mod_bits": res.mod_bits,
            "client_ms": res.client_ms, "server_ms": res.server_ms,
            "server_total_ms": res.server_total_ms,
            "server_total_ms_first": res.server_total_ms_first, "round_s": res.round_s,
            "upload_bytes_per_param": res.upload_bytes_per_param,
            "server_stage_ms": res.server_stage_ms, "counts": asdict(counts),
            "unit_costs": asdict(units), **model, "model_ms": sum(model.values()),
            "other_ms": res.server_total_ms - sum(model.values()),
        })
    ns = [r["n"] for r in rows]
    fits = {col: asdict(fit_power_law(ns, [r[col] for r in rows])) for col in FITTED}
    projections = []
    for n in project_at:
        p = _projected_config(n, params=params, dropout=dropout)
        counts = expected_counts(n, p["k"], dropout, drop_stage, threshold=p["t"])
        at = measure_unit_costs(wire_length=params + 1, mod_bits=p["mod_bits"], threshold=p["t"])
        p.update({f"{col}_fit": PowerLaw(**fits[col]).at(n) for col in FITTED})
        model = {"model_directory_ms": at.directory_ms(counts),
                 "model_collect_ms": at.collect_ms(counts), "model_unmask_ms": at.unmask_ms(counts)}
        p.update(counts=asdict(counts), unit_costs=asdict(at), **model,
                 model_ms=sum(model.values()))
        projections.append(p)
    return {
        "params": params, "dropout": dropout, "drop_stage": drop_stage, "repeats": repeats,
        "seed": seed, "mode": "active", "graph": "sparse",
        "correct": all(r["correct"] for r in rows),
        "labels": {"rows": "measured", "fits": "least squares on log n, log cost (measured rows)",
                   "projections": "projected, not measured: *_fit from the fits, model_* from "
                   "counted work x unit costs measured in this run"},
        "rows": rows, "fits": fits, "projections": projections,
    }


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def write_markdown(report: Mapping[str, Any], path: Path) -> None:
    """The measured table, the fitted exponents and the projections, labelled as such."""
    lines = [
        f"# Masking round vs number of clients ({report['params']:,} params, "
        f"{report['dropout']:.0%} dropout at '{report['drop_stage']}', sparse graph, active mode)",
        "", f"## Measured (median of {report['repeats']} round(s) per size)", "",
        "| n | k | t | client_ms | server_ms | server_total_ms | round_s | bytes/param "
        "| model_ms | other_ms | first round server_total_ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['n']} | {r['k']} | {r['t']} | {r['client_ms']:.1f} | "
                     f"{_ms(r['server_ms'])} | {_ms(r['server_total_ms'])} | {r['round_s']:.2f} | "
                     f"{r['upload_bytes_per_param']:.3f} | {_ms(r['model_ms'])} | "
                     f"{_ms(r['other_ms'])} | {_ms(r['server_total_ms_first'])} |")
    lines += ["", "server_ms is the unmask stage; server_total_ms every server stage (collect + "
              "unmask); model_ms the modelled components at the measured counts; other_ms = "
              "server_total_ms - model_ms (per-message work the model leaves out). A size's first "
              "round has cold Lagrange coefficients; later repeats reuse them.", "",
              "## Fitted (least squares on log n, log cost)", ""]
    lines += [f"- {col} ∝ n^{f['exponent']:.3f} (prefactor {f['prefactor']:.4g})"
              for col, f in report["fits"].items()]
    lines += ["", "## Projected (not measured)", "",
              "| n | k | t | server_total_ms (fit) | server_ms (fit) | model_ms | model_unmask_ms "
              "| model_directory_ms | note |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in report["projections"]:
        lines.append(f"| {p['n']:,} | {p['k']} | {p['t']} | {_ms(p['server_total_ms_fit'])} | "
                     f"{_ms(p['server_ms_fit'])} | {_ms(p['model_ms'])} | "
                     f"{_ms(p['model_unmask_ms'])} | {_ms(p['model_directory_ms'])} | "
                     f"{p['refused'] or ''} |")
    lines += ["", "model_ms counts only the sum of uploads, secret rebuilds, Lagrange "
              "coefficients (once per distinct set of t holders; at projected sizes the number "
              "of sets is estimated), mask expansions, pairwise keys and the advert hashes of "
              "every key directory (n^2 of them), with unit costs measured in this run; it is a "
              "floor under the server's cost, not a forecast of it."]
    path.write_text("\n".join(lines) + "\n")


def write_plot(report: Mapping[str, Any], path: Path) -> None:
    """Log-log plot: measured points, fitted lines carried to the projected sizes, model points."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"{path.name} needs matplotlib (pip install matplotlib); the JSON and "
                          "markdown reports were written") from exc
    rows, projections = report["rows"], report["projections"]
    ns = [r["n"] for r in rows]
    far = max([*ns, *(p["n"] for p in projections)])
    grid = np.geomspace(min(ns), far, 50)
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    for col, colour in (("server_total_ms", "C0"), ("server_ms", "C1"), ("client_ms", "C2")):
        fit = PowerLaw(**report["fits"][col])
        ax.plot(ns, [r[col] for r in rows], "o", color=colour, label=f"{col} (measured)")
        ax.plot(grid, [fit.at(x) for x in grid], "--", color=colour, alpha=0.6,
                label=f"{col} fit n^{fit.exponent:.2f} (projected past n={max(ns)})")
    ax.plot([p["n"] for p in projections], [p["model_ms"] for p in projections], "x", color="C3",
            markersize=9, label="server model floor (projected)")
    ax.plot(ns, [r["model_ms"] for r in rows], "+", color="C3", label="server model floor "
            "at measured n")
    ax.axvspan(max(ns), far, color="0.9", zorder=0)
    ax.set(xscale="log", yscale="log", xlabel="clients n",
           ylabel="compute per round, ms (client_ms: one client's)",
           title=f"Masking round, {report['params']:,} params, {report['dropout']:.0%} dropout "
           "(shaded: projected)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.savefig(path, dpi=120)
