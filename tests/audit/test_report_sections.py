"""The audit's server view, configuration checklist and released-model sections.

Every attack claim has its positive control: the masking attack recovers the update exactly once
t holders collude, the CKKS attack does with the round's key, the plaintext round gives a
membership AUC well above chance; every checklist row fails on a bad configuration; the
released-model AUC is computed from real losses (an overfit model is clearly attackable).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from secagg.ckks.presets import Preset
from secagg.masking.config import MaskingConfig
from secagg_clients.audit.checklist import (
    FAIL,
    NOT_CHECKED,
    PASS,
    ckks_row,
    headroom_row,
    key_rows,
    library_prg,
    noise_row,
    prg_row,
    threshold_row,
    tls_row,
)
from secagg_clients.audit.released import advantage, released_model_mia
from secagg_clients.audit.server_view import AttackResult, ServerView, auc, server_view
from secagg_clients.data import Record, load_enterprise
from secagg_clients.trainer import DPConfig, NoiseMode


@pytest.fixture(scope="module")
def energy() -> list[Record]:
    records: list[Record] = load_enterprise("energy_utility")
    return records


@pytest.fixture(scope="module")
def view(energy: list[Record]) -> ServerView:
    return server_view(energy, seed=0)


# ---- server view ----------------------------------------------------------------------------------

def test_no_individual_update_recovered_from_the_server_transcript(view: ServerView) -> None:
    protected = [r for r in view.results if r.protection != "plaintext" and not r.positive_control]
    assert {r.protection for r in protected} == {"masking", "ckks"} and len(protected) == 3
    for r in protected:
        assert not r.recovered, r
        assert abs(r.correlation) < view.chance_band, r  # chance: |corr| ~ 1/sqrt(d)
        assert r.relative_error > 10, r  # the estimate is noise, far larger than the update
        assert abs(r.mia_auc - 0.5) < 4 * view.auc_sd, r
    server_alone = view.get("masking")[0]
    assert "server alone" in server_alone.attacker
    # what the transcript held: the self-mask seed (revealed for survivors), no mask-key share
    assert f"0 of the mask key (t = {view.threshold})" in server_alone.detail
    assert f"{view.neighbours} of {view.neighbours} pairwise masks left" in server_alone.detail
    assert not view.protected_leak


def test_positive_controls_and_the_unprotected_contrast(view: ServerView) -> None:
    (t_holders,) = view.get("masking", control=True)
    assert f"{view.threshold} colluding" in t_holders.attacker
    assert t_holders.recovered and t_holders.correlation > 0.9999  # exact up to quantisation
    (key,) = view.get("ckks", control=True)
    assert key.recovered and key.relative_error < 1e-5
    (plain,) = view.get("plaintext")
    assert plain.recovered and plain.relative_error == 0.0
    # gradient membership inference on the plaintext update: well above chance
    assert plain.mia_auc > 0.5 + 3 * view.auc_sd and plain.mia_auc > 0.7
    assert view.controls_ok


def test_the_section_flags_a_leak() -> None:
    leak = AttackResult("masking", "server alone", 0.8, 0.2, 0.9, False)
    ok = AttackResult("plaintext", "server", 1.0, 0.0, 0.9, True)
    base = dict(clients=3, vector_length=100, members=16, nonmembers=64, threshold=2,
                neighbours=2, seed=0, ckks_preset="x", aggregate_auc=0.5, chance_band=0.49)
    assert ServerView(results=(leak, ok), **base).protected_leak
    inferred = AttackResult("ckks", "server", 0.01, 50.0, 0.95, False)  # membership leaks
    assert ServerView(results=(inferred, ok), **base).protected_leak
    quiet = AttackResult("ckks", "server", 0.01, 50.0, 0.55, False)
    assert not ServerView(results=(quiet, ok), **base).protected_leak
    missed = AttackResult("ckks", "key holder", 0.1, 1.0, 0.5, False, positive_control=True)
    assert not ServerView(results=(ok, missed), **base).controls_ok


def test_server_view_is_seeded(energy: list[Record]) -> None:
    a, b = server_view(energy, seed=3), server_view(energy, seed=3)
    assert a.get("plaintext")[0].mia_auc == b.get("plaintext")[0].mia_auc
    assert a.aggregate_auc == b.aggregate_auc


def test_auc_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 50), rng.normal(0, 1, 70)
    pairs = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc(pos, neg) == pytest.approx(pairs)
    assert auc([1, 2], [1, 2]) == 0.5
    assert advantage(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0


# ---- configuration checklist ----------------------------------------------------------------------

class _Params:
    def __init__(self, name: str, n: int, bits: tuple[int, ...]) -> None:
        self.name, self.poly_modulus_degree, self.coeff_modulus_bits = name, n, bits


def test_ckks_rows() -> None:
    for preset in Preset:
        assert ckks_row(preset.params).status == PASS
    # a hand-made TenSEAL context outside the presets: 200 bits on N=4096 (bound 109)
    bad = ckks_row(_Params("custom", 4096, (60, 40, 40, 60)))
    assert bad.status == FAIL and "109" in bad.found and "8192" in bad.fix
    assert ckks_row(_Params("odd", 3000, (60,))).status == FAIL


def test_key_rows() -> None:
    assert [r.status for r in key_rows()] == [PASS, PASS]
    assert [r.status for r in key_rows([bytes(32), bytes(32)])] == [PASS, PASS]
    bad = key_rows([bytes(32), bytes(31)])[1]
    assert bad.status == FAIL and "[31, 32]" in bad.found and "roster" in bad.fix


def test_prg_row() -> None:
    ok = prg_row()
    assert ok.status == PASS and "AES-128-CTR" in ok.found and "16 bytes" in ok.found

    def flower_like(key: bytes, count: int) -> np.ndarray:  # numpy MT seeded by a folded key
        seed = int.from_bytes(key, "big") % (1 << 32)
        return np.random.RandomState(seed).randint(0, 1 << 32, size=count, dtype=np.uint64
                                                   ).astype(np.uint32)

    bad = prg_row(flower_like)
    assert bad.status == FAIL and "differs" in bad.found and "Mersenne" in bad.fix
    assert prg_row(library_prg, key_bytes=8).status == FAIL  # AES needs 16+; 8 is refused


def test_threshold_row() -> None:
    from secagg.masking.simulate import insecure_simulated_federation

    roster, _ = insecure_simulated_federation(20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        good = MaskingConfig.create(num_clients=20, vector_length=4, roster=roster)
    row = threshold_row(num_clients=20, neighbours=good.neighbours, threshold=good.threshold,
                        corrupt_rate=0.05, security_bits=40, active=True)
    assert row.status == PASS and f"t={good.threshold}" in row.found
    # SECURITY.md's bound: a coalition needs 2t - m corrupt holders in one neighbourhood
    weak = threshold_row(num_clients=20, neighbours=4, threshold=3, corrupt_rate=0.05,
                         security_bits=40, active=True)
    assert weak.status == FAIL and "needs 1 corrupt" in weak.found and "parameter finder" in weak.fix
    # the same graph is fine for an assumed corruption of zero, and the full graph is judged by
    # its worst case: t=11 of 20 in active mode needs 2 corrupt; 10 % of 20 is 2
    assert threshold_row(num_clients=20, neighbours=19, threshold=11, corrupt_rate=0.05,
                         security_bits=40, active=True).status == PASS
    assert threshold_row(num_clients=20, neighbours=19, threshold=11, corrupt_rate=0.1,
                         security_bits=40, active=True).status == FAIL


def test_noise_row() -> None:
    assert noise_row(DPConfig(noise_multiplier=1.0)).status == PASS
    bad = noise_row(DPConfig(noise_multiplier=1.0, noise_mode=NoiseMode.INSECURE_FAST, seed=1))
    assert bad.status == FAIL and "insecure_fast" in bad.found and "SECURE" in bad.fix


def test_headroom_row() -> None:
    assert headroom_row(num_clients=3, value_bits=16, max_weight=1, mod_bits=18).status == PASS
    # Flower's SecAgg+ overflow: n * 2^21 > 2^32 (silent there)
    bad = headroom_row(num_clients=4096, value_bits=21, max_weight=1, mod_bits=32)
    assert bad.status == FAIL and "overflows" in bad.fix and "mod_bits" in bad.fix
    assert headroom_row(num_clients=3, value_bits=16, max_weight=1, mod_bits=18,
                        extra=100_000).status == FAIL  # noise headroom counts


def test_tls_row() -> None:
    assert tls_row(None).status == NOT_CHECKED
    assert tls_row("https://agg.example.com:8443").status == PASS
    assert tls_row("http://127.0.0.1:8080").status == PASS
    bad = tls_row("http://10.0.0.5:8080")
    assert bad.status == FAIL and "--tls-cert" in bad.fix


# ---- released model -------------------------------------------------------------------------------

def test_released_model_mia_on_real_losses(energy: list[Record]) -> None:
    """Overfit without DP: clearly attackable. Heavy noise (epsilon < 1): near chance."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rm = released_model_mia(energy[:96], noise_multiplier=20.0, epochs=15, batch_size=16,
                                learning_rate=5e-2, encoder="test_only_tiny",
                                adapter_lr_scale=1.0, seed=0)
    assert rm.members == rm.nonmembers == 48
    d = rm.to_dict()["mean_loss"]
    assert d["no_dp"]["members"] < 0.5 * d["no_dp"]["nonmembers"]  # memorised
    assert rm.auc_plain == auc(-rm.member_losses_plain, -rm.nonmember_losses_plain)
    assert rm.auc_plain > 0.5 + 3 * rm.auc_sd  # > ~0.68: the attack works on real losses
    assert rm.epsilon < 1.0
    # stated tolerance: within 4 null standard deviations of chance (+-0.24 at 48/48 records;
    # the DP noise is the secure, unseeded one, so this must hold for any draw: 6e-5 to fail)
    assert abs(rm.auc_dp - 0.5) <= 4 * rm.auc_sd
    assert rm.auc_dp < rm.auc_plain and rm.dp_within_bound
    assert math.isfinite(rm.train_loss_dp) and rm.advantage_bound < 0.5


# ---- the report -----------------------------------------------------------------------------------

def test_report_has_the_sections(tmp_path: Path, data_file: Path) -> None:
    from importlib.metadata import EntryPoint

    import secagg.cli as cli
    from tests.audit.conftest import make_ledger

    entry = EntryPoint("audit", "secagg_clients.audit.command", cli.ENTRY_POINT_GROUP)
    mp = pytest.MonkeyPatch()
    mp.setattr(cli, "entry_points",
               lambda group: [entry] if group == cli.ENTRY_POINT_GROUP else [])
    try:
        ledger = make_ledger(tmp_path / "l.json", [(0.25, 1.5, 8)])
        out = tmp_path / "out"
        assert cli.main(["audit", "--ledger", str(ledger), "--data", str(data_file), "--out",
                         str(out), "--canaries", "20", "--encoder", "test_only_tiny",
                         "--no-progress", "--server", "http://10.1.2.3:8080"]) == 0
    finally:
        mp.undo()
    doc = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    sections = [r["section"] for r in doc["summary"]]
    assert sections == ["Accounting", "Empirical audit", "Server view", "Configuration",
                        "Released model"]
    # the top of the page: overall verdict, then the summary, before any section
    assert page.index(doc["overall"]["text"]) < page.index('class="summary"') \
        < page.index('<h2>Accounting')
    tls = next(r for r in doc["checklist"]["rows"] if r["item"] == "TLS")
    assert tls["status"] == "fail"  # plain http off the loopback
    assert doc["overall"]["status"] == "fail" and "Configuration" in doc["overall"]["text"]
    assert not doc["server_view"]["protected_leak"] and doc["server_view"]["controls_ok"]
    rm = doc["released_model"]
    assert 0 <= rm["auc_dp"] <= 1 and 0 <= rm["auc_no_dp"] <= 1
    files = [f["file"] for f in doc["figures"]]
    assert {"server_view.png", "released_mia.png"} <= set(files)
    for f in doc["figures"]:
        png = out / f["file"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f["command"].startswith("secagg audit --ledger") and "--server" in f["command"]
    assert page.count("data:image/png;base64,") == len(files) == 5
    for rid in ("server-view", "checklist", "released"):
        assert f'id="{rid}"' in page and f'href="#{rid}"' in page


def test_help_describes_the_new_sections(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import EntryPoint

    import secagg.cli as cli

    entry = EntryPoint("audit", "secagg_clients.audit.command", cli.ENTRY_POINT_GROUP)
    mp = pytest.MonkeyPatch()
    mp.setattr(cli, "entry_points",
               lambda group: [entry] if group == cli.ENTRY_POINT_GROUP else [])
    try:
        with pytest.raises(SystemExit):
            cli.main(["audit", "--help"])
    finally:
        mp.undo()
    text = capsys.readouterr().out
    for needle in ("Server view", "fewer than t shares", "positive controls",
                   "Configuration checklist", "2t - m", '"not checked"', "Released model",
                   "membership-inference", "--server", "--roster", "--skip", "one-screen summary"):
        assert needle in text, needle
