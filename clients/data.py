"""Enterprise records: free text + sensor readings + label, from CSV or JSONL.

The shipped datasets (``clients/datasets/*.csv``, package data of ``secagg_clients``, made by
``scripts/make_enterprise_data.py``) go through the same :func:`load_records` a user's own file
does. Sensor features are normalised with fixed, public constants (:data:`SENSOR_SCALING`),
never with statistics of the private data: a mean/std computed locally would leave the
enterprise outside DP-SGD's guarantee.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secagg.errors import InvalidParameter

__all__ = [
    "ENTERPRISES",
    "LABELS",
    "SENSOR_FIELDS",
    "Record",
    "enterprise_path",
    "load_enterprise",
    "load_records",
    "sensor_features",
    "split_records",
]

LABELS: tuple[str, ...] = ("equipment_fault", "intrusion", "hazard", "false_alarm")
SENSOR_FIELDS: tuple[str, ...] = (
    "temperature_c", "vibration_mm_s", "power_kw", "motion_count", "smoke_ppm", "sound_db",
)
#: public (centre, scale) per sensor after the transform in :func:`sensor_features`
SENSOR_SCALING: dict[str, tuple[float, float]] = {
    "temperature_c": (25.0, 8.0),
    "vibration_mm_s": (1.0, 1.5),
    "power_kw": (3.5, 2.0),  # log1p(kW): spans households to substations
    "motion_count": (3.0, 4.0),
    "smoke_ppm": (4.0, 4.0),
    "sound_db": (50.0, 10.0),
}
ENTERPRISES: tuple[str, ...] = ("energy_utility", "residential_security", "city_operations")
_DATA_DIR = Path(__file__).resolve().parent / "datasets"  # installed with the package


@dataclass(frozen=True, slots=True)
class Record:
    """One labelled incident report."""

    text: str
    sensors: tuple[float, ...]
    label: int


def enterprise_path(name: str) -> Path:
    """Path of a shipped enterprise dataset."""
    if name not in ENTERPRISES:
        raise InvalidParameter(
            f"enterprise must be one of {list(ENTERPRISES)}, found {name!r}; or load your own "
            "file with load_records(path)"
        )
    return _DATA_DIR / f"{name}.csv"


def _parse(row: dict[str, Any], where: str) -> Record:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InvalidParameter(f"{where}: field 'text' must be a non-empty string, found {text!r}")
    label = row.get("label")
    if label not in LABELS:
        raise InvalidParameter(f"{where}: field 'label' must be one of {list(LABELS)}, found {label!r}")
    values = []
    for name in SENSOR_FIELDS:
        try:
            value = float(row[name])
        except KeyError:
            raise InvalidParameter(f"{where}: sensor field '{name}' is missing") from None
        except (TypeError, ValueError):
            raise InvalidParameter(f"{where}: sensor '{name}' is not a number: {row[name]!r}") from None
        if not math.isfinite(value):
            raise InvalidParameter(f"{where}: sensor '{name}' is not finite: {value}")
        values.append(value)
    return Record(text=text.strip(), sensors=tuple(values), label=LABELS.index(label))


def _read_jsonl(p: Path) -> list[Record]:
    records = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InvalidParameter(f"{p.name} line {n}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise InvalidParameter(f"{p.name} line {n}: expected a JSON object")
        records.append(_parse(row, f"{p.name} line {n}"))
    return records


def _read_csv(p: Path) -> list[Record]:
    with open(p, newline="", encoding="utf-8") as fh:
        return [_parse(row, f"{p.name} line {n}")
                for n, row in enumerate(csv.DictReader(fh), start=2)]


def load_records(path: str | Path) -> list[Record]:
    """Records from a CSV (header row) or JSONL file with ``text``, the sensor fields and ``label``."""
    p = Path(path)
    if not p.is_file():
        raise InvalidParameter(f"data file {str(p)!r} does not exist")
    if p.suffix not in (".csv", ".jsonl"):
        raise InvalidParameter(f"data file must end in .csv or .jsonl, found {p.name!r}")
    try:
        records = _read_jsonl(p) if p.suffix == ".jsonl" else _read_csv(p)
    except UnicodeDecodeError as exc:
        raise InvalidParameter(f"{p.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InvalidParameter(f"{p.name} is not valid CSV ({exc})") from None
    if not records:
        raise InvalidParameter(f"data file {p.name!r} holds no records")
    return records


def load_enterprise(name: str) -> list[Record]:
    """The shipped dataset of one enterprise."""
    return load_records(enterprise_path(name))


def split_records(
    records: Sequence[Record], *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[list[Record], list[Record]]:
    """A reproducible train/test split (shuffled with ``seed``; not a secret, just a split)."""
    if not 0 < test_fraction < 1:
        raise InvalidParameter(f"test_fraction must be in (0, 1), found {test_fraction}")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    cut = round(len(records) * test_fraction)
    return [records[i] for i in order[cut:]], [records[i] for i in order[:cut]]


def sensor_features(sensors: Sequence[float]) -> list[float]:
    """Public, data-independent normalisation of one record's readings."""
    out = []
    for name, value in zip(SENSOR_FIELDS, sensors, strict=True):
        centre, scale = SENSOR_SCALING[name]
        v = math.log1p(max(value, 0.0)) if name == "power_kw" else value
        out.append(max(-5.0, min(5.0, (v - centre) / scale)))
    return out
