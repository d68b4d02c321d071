"""Shipped data, the loaders a user's files go through, the CLI, and no downloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from secagg.cli import main
from secagg.errors import InvalidParameter
from secagg_clients.data import ENTERPRISES, LABELS, enterprise_path, load_records, sensor_features

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_data_is_small_reproducible_and_differently_distributed(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_enterprise_data
    finally:
        sys.path.pop(0)
    make_enterprise_data.generate(tmp_path)
    total = 0
    priors = {}
    for name in ENTERPRISES:
        shipped = enterprise_path(name).read_bytes()
        assert (tmp_path / f"{name}.csv").read_bytes() == shipped  # fixed seed
        total += len(shipped)
        labels = [r.label for r in load_records(enterprise_path(name))]
        priors[name] = max(range(len(LABELS)), key=labels.count)
        assert set(labels) == set(range(len(LABELS)))
    assert total < 1_000_000
    assert len(set(priors.values())) == 3  # each enterprise's most common category differs


def test_csv_and_jsonl_load_the_same(tmp_path: Path) -> None:
    records = load_records(enterprise_path("city_operations"))[:5]
    path = tmp_path / "own.jsonl"
    from secagg_clients.data import SENSOR_FIELDS

    path.write_text("\n".join(json.dumps(
        {"text": r.text, "label": LABELS[r.label], **dict(zip(SENSOR_FIELDS, r.sensors, strict=True))}
    ) for r in records) + "\n")
    assert load_records(path) == records
    assert all(-5 <= v <= 5 for r in records for v in sensor_features(r.sensors))


@pytest.mark.parametrize(
    ("line", "field"),
    [('{"text": "x", "label": "fire"}', "label"), ('{"text": "", "label": "hazard"}', "text"),
     ('{"text": "x", "label": "hazard"}', "temperature_c"), ("[1]", "JSON object")],
)
def test_bad_records_are_named(tmp_path: Path, line: str, field: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InvalidParameter, match=field):
        load_records(path)


def test_privacy_cli_contracts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eps.json"
    assert main(["privacy", "epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1",
                 "--steps", "1000", "--delta", "1e-5", "--accountant", "rdp",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["epsilon"] == pytest.approx(2.1014, abs=1e-4)
    out2 = tmp_path / "noise.json"
    assert main(["privacy", "noise", "--target-epsilon", "2.1014", "--sample-rate", "0.01",
                 "--steps", "1000", "--delta", "1e-5", "--json", str(out2)]) == 0
    assert json.loads(out2.read_text())["noise_multiplier"] == pytest.approx(1.0, abs=0.01)
    assert main(["privacy", "epsilon", "--sample-rate", "2", "--noise-multiplier", "1",
                 "--steps", "10", "--delta", "1e-5"]) == 2
    assert "sample_rate" in capsys.readouterr().err


OFFLINE = """
import socket
def refuse(*a, **k):
    raise AssertionError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
import torch
from secagg_clients.model import build_model, load_tokenizer, make_dataset
from secagg_clients.data import load_enterprise
tok = load_tokenizer()
model = build_model()
ds = make_dataset(load_enterprise("energy_utility")[:2], tok)
assert model(*ds.tensors[:3]).shape == (2, 4)
print("offline-ok", sum(p.numel() for p in model.parameters() if p.requires_grad))
"""


@pytest.mark.slow
def test_default_model_loads_without_network(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf")}  # an empty cache: nothing to fall back on
    proc = subprocess.run([sys.executable, "-c", OFFLINE], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "offline-ok" in proc.stdout
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.safetensors"))
