"""``secagg bench masking-scale`` at tiny sizes: its outputs exist and agree with one another, and
``secagg bench masking`` reports the round's wall time. No assertion depends on how fast anything
ran; only on how the reported figures relate."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from secagg.cli import main
from secagg.errors import InvalidParameter
from secagg_benchmarks.masking import run_masking_bench
from secagg_benchmarks.masking_scale import (
    FITTED,
    PowerLaw,
    UnitCosts,
    WorkCounts,
    expected_counts,
    fit_power_law,
    measured_counts,
)

SIZES = (8, 12)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("scale")
    code = main(["bench", "masking-scale", "--clients", ",".join(map(str, SIZES)), "--params",
                 "200", "--project", "50,400", "--out", str(out)])
    return code, out, json.loads((out / "scale.json").read_text())


def test_every_output_is_written(study: tuple[int, Path, dict[str, Any]]) -> None:
    code, out, report = study
    assert code == 0 and report["correct"] is True
    assert (out / "scale.md").read_text().startswith("# Masking round vs number of clients")
    assert (out / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["n"] for r in report["rows"]] == list(SIZES)
    assert [p["n"] for p in report["projections"]] == [50, 400]
    assert report["labels"]["rows"] == "measured"
    assert report["labels"]["projections"].startswith("projected, not measured")


def test_the_fitted_exponents_follow_from_the_measured_rows(
        study: tuple[int, Path, dict[str, Any]]) -> None:
    _, _, report = study
    (lo, hi) = report["rows"]
    for col in FITTED:
        fit = report["fits"][col]
        # two points: the least-squares line passes through both
        want = math.log(hi[col] / lo[col]) / math.log(hi["n"] / lo["n"])
        assert fit["exponent"] == pytest.approx(want, rel=1e-9)
        assert PowerLaw(**fit).at(lo["n"]) == pytest.approx(lo[col], rel=1e-9)
    for p in report["projections"]:
        for col in FITTED:
            assert p[f"{col}_fit"] == pytest.approx(PowerLaw(**report["fits"][col]).at(p["n"]))


def test_model_columns_are_counts_times_unit_costs(study: tuple[int, Path, dict[str, Any]]) -> None:
    _, _, report = study
    for r in [*report["rows"], *report["projections"]]:
        units, counts = UnitCosts(**r["unit_costs"]), WorkCounts(**r["counts"])
        assert r["model_collect_ms"] == pytest.approx(counts.uploads * units.sum_upload_ms)
        assert r["model_directory_ms"] == pytest.approx(r["n"] ** 2 * units.directory_entry_ms)
        assert r["model_ms"] == pytest.approx(units.directory_ms(counts) + units.collect_ms(counts)
                                              + units.unmask_ms(counts))
        assert all(v > 0 for v in r["unit_costs"].values())
    for r in report["rows"]:
        assert r["other_ms"] == pytest.approx(r["server_total_ms"] - r["model_ms"])
        # dropouts vanish after uploading (the default): every upload's self mask is rebuilt
        assert r["counts"] == vars(expected_counts(r["n"], r["k"], 0.1, "unmask", r["t"]))
        assert r["survivors"] == r["n"]
        assert r["server_ms"] == r["server_stage_ms"]["unmask"]
        assert r["server_total_ms"] == pytest.approx(sum(r["server_stage_ms"].values()))


def test_the_markdown_table_is_the_json(study: tuple[int, Path, dict[str, Any]]) -> None:
    _, out, report = study
    text = (out / "scale.md").read_text()
    measured, projected = text.split("## Projected (not measured)")
    cells = [[c.strip() for c in line.strip("|").split("|")]
             for line in measured.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [(int(c[0]), int(c[1]), int(c[2])) for c in cells] == \
        [(r["n"], r["k"], r["t"]) for r in report["rows"]]
    assert [c[3] for c in cells] == [f"{r['client_ms']:.1f}" for r in report["rows"]]
    assert [c[7] for c in cells] == [f"{r['upload_bytes_per_param']:.3f}" for r in report["rows"]]
    for col, fit in report["fits"].items():
        assert f"- {col} ∝ n^{fit['exponent']:.3f}" in measured
    rows = [line for line in projected.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(r.split("|")[1].replace(",", "")) for r in rows] == [50, 400]


def test_early_dropouts_are_counted_on_the_graph() -> None:
    res = run_masking_bench(clients=12, params=50, dropout=0.25, full_graph=False, repeats=1,
                            drop_stage="masked-input", active=True)
    counts = measured_counts(res)
    dropped = 12 - res.survivors
    assert res.correct and dropped == 3
    assert counts.uploads == counts.self_masks == res.survivors
    assert counts.rebuilds == 12  # every survivor's seed, every dropout's mask key
    assert counts.directory_entries == 12 * 12  # all advertised: each directory lists every hash
    # each dropout's k neighbours, less those that dropped too, masked with it
    assert dropped * (res.neighbours - (dropped - 1)) <= counts.pairwise_masks \
        <= dropped * res.neighbours
    assert expected_counts(12, res.neighbours, 0.25, "masked-input").uploads == res.survivors


def test_passive_rounds_cannot_be_counted() -> None:
    res = run_masking_bench(clients=6, params=20, dropout=0.0, full_graph=False, repeats=1,
                            active=False)
    with pytest.raises(InvalidParameter, match="active mode"):
        measured_counts(res)


def test_the_fit_recovers_a_known_power_law() -> None:
    fit = fit_power_law([10, 100, 1000], [3 * n**1.5 for n in (10, 100, 1000)])
    assert fit.exponent == pytest.approx(1.5) and fit.prefactor == pytest.approx(3)
    with pytest.raises(InvalidParameter, match="two distinct sizes"):
        fit_power_law([10, 10], [1, 2])
    with pytest.raises(InvalidParameter, match="positive"):
        fit_power_law([10, 20], [1, 0])


@pytest.mark.parametrize("sizes", ["8", "8,8", "2,8", "8,x"])
def test_bad_sizes_are_refused_by_their_flag(sizes: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "masking-scale", "--clients", sizes, "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "--clients" in capsys.readouterr().err
    assert not (tmp_path / "scale.json").exists()


def test_without_matplotlib_the_reports_are_kept_and_the_error_is_clear(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # `import` raises ImportError
    code = main(["bench", "masking-scale", "--clients", "6,8", "--params", "50", "--out",
                 str(tmp_path)])
    assert code == 1
    assert "needs matplotlib (pip install matplotlib)" in capsys.readouterr().err
    assert (tmp_path / "scale.json").exists() and (tmp_path / "scale.md").exists()
    assert not (tmp_path / "scale.png").exists()


def test_bench_masking_reports_the_round_wall_time(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    code = main(["bench", "masking", "--clients", "6", "--params", "2000", "--graph", "sparse",
                 "--dropout", "0.2", "--compare", "none", "--repeats", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0 and report["correct"] is True
    for key in ("server_ms", "server_total_ms", "client_ms", "round_s", "upload_bytes_per_param"):
        assert report[key] > 0, key
    # one round: its wall time holds every client's compute and the server's, which never overlap
    assert 1e3 * report["round_s"] >= report["clients"] * report["client_ms"] + \
        report["server_total_ms"]


def test_the_expected_holder_sets_are_close_to_the_ones_the_server_picks() -> None:
    from secagg.masking.graph import roster_neighbours
    from secagg_benchmarks.masking_scale import _holder_sets, expected_lagrange_sets

    n, k, t = 600, 60, 40
    graph = roster_neighbours(range(n), degree=k, roster_digest=b"holder-sets")
    answered = {i for i in range(n) if i % 10}  # 10 % never answered
    picked = _holder_sets(graph, range(n), answered, t)
    assert picked < n / 10  # shared, not one per owner
    assert expected_lagrange_sets(n, k, t, 0.9) == pytest.approx(picked, rel=0.5)
    assert expected_lagrange_sets(n, n - 1, t, 0.9) == 1
