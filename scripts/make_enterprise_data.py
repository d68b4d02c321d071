"""Generate the three shipped enterprise datasets of the smart-city demo (fixed seed).

Each record is an incident report: free text, six sensor readings and one of four categories
shared by all three enterprises (equipment_fault, intrusion, hazard, false_alarm). The enterprises
differ in what they see most (label priors), how they write (their own vocabulary on top of a shared
one) and their sensors' baselines; 8 % of labels are flipped and a third of the texts carry no
category cue, so no model is perfect and each enterprise gains from the others' common classes.

    python scripts/make_enterprise_data.py            # rewrites clients/datasets/*.csv
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from secagg_clients.data import LABELS
from secagg_clients.data import SENSOR_FIELDS as SENSORS  # the loader's columns, in the loader's order

SEED = 20240611
LABEL_NOISE = 0.08
NO_CUE = 0.33

CUES = {
    "equipment_fault": ["bearing noise reported", "breaker tripped twice", "pump seized",
                        "transformer overheating", "motor drawing excess current",
                        "relay failure suspected", "worn coupling found", "inverter fault code"],
    "intrusion": ["gate forced open", "unknown person on site", "window sensor breached",
                  "door left ajar after hours", "fence cut near", "badge reader tampered",
                  "suspicious vehicle loitering", "glass break detected"],
    "hazard": ["smoke seen near", "strong gas smell", "water rising in", "small fire at",
               "fumes reported by staff", "burning odour around", "flooding spreading across",
               "sparks observed at"],
    "false_alarm": ["sensor test by technician", "alarm cleared on inspection", "cat triggered",
                    "scheduled maintenance window", "no issue found on arrival",
                    "user entered wrong code", "routine check complete", "duplicate ticket"],
}
SHARED = ["checked by crew", "follow up tomorrow", "logged at control room", "site visited",
          "photos attached", "customer called", "priority under review", "shift handover note"]

ENTERPRISES = {
    "energy_utility": {
        "n": 400, "priors": (0.50, 0.10, 0.20, 0.20),
        "places": ["substation 4", "feeder line B", "turbine hall", "pumping station",
                   "solar farm east", "meter cabinet"],
        "words": ["grid", "feeder", "kV", "outage crew", "SCADA"],
        "base": (35.0, 2.0, 420.0, 1.0, 5.0, 55.0),
    },
    "residential_security": {
        "n": 360, "priors": (0.10, 0.45, 0.15, 0.30),
        "places": ["front porch", "garage", "back garden", "apartment 12B", "side entrance",
                   "basement"],
        "words": ["homeowner", "keypad", "monitoring centre", "patrol", "camera"],
        "base": (21.0, 0.3, 3.0, 2.0, 3.0, 40.0),
    },
    "city_operations": {
        "n": 320, "priors": (0.20, 0.15, 0.45, 0.20),
        "places": ["metro platform 2", "city hall", "underpass on 5th", "library",
                   "bus depot", "park fountain"],
        "words": ["311 ticket", "traffic control", "public works", "dispatcher", "CCTV"],
        "base": (24.0, 0.8, 60.0, 6.0, 4.0, 62.0),
    },
}

# how each category moves the six sensors, in units of the sensor's spread
EFFECT = {
    "equipment_fault": (0.8, 2.2, 1.6, 0.0, 0.3, 0.6),
    "intrusion": (0.0, 0.2, 0.0, 2.2, 0.0, 1.4),
    "hazard": (2.0, 0.0, 0.4, 0.6, 2.4, 0.8),
    "false_alarm": (0.0, 0.0, 0.0, 0.3, 0.0, 0.0),
}
SPREAD = (4.0, 1.0, 0.25, 2.5, 3.0, 6.0)  # relative for power_kw, absolute for the rest


def _sensors(rng: random.Random, base: tuple[float, ...], label: str) -> list[float]:
    out = []
    for i, (b, eff, spread) in enumerate(zip(base, EFFECT[label], SPREAD, strict=True)):
        s = spread * b if i == 2 else spread
        value = b + eff * s + rng.gauss(0.0, s)
        if SENSORS[i] in ("motion_count",):
            value = max(0.0, round(value))
        out.append(round(max(value, 0.0), 2))
    return out


def _text(rng: random.Random, spec: dict, label: str) -> str:
    place = rng.choice(spec["places"])
    parts = []
    if rng.random() >= NO_CUE:
        parts.append(f"{rng.choice(CUES[label])} {place}")
    else:
        parts.append(f"report from {place}")
    parts.append(rng.choice(spec["words"]))
    parts.append(rng.choice(SHARED))
    if rng.random() < 0.3:  # a cue from another class: overlapping vocabulary
        parts.append(rng.choice(CUES[rng.choice(LABELS)]).split()[0])
    rng.shuffle(parts[1:])
    return ", ".join(parts)


def generate(out_dir: Path, seed: int = SEED) -> None:
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, spec in ENTERPRISES.items():
        rows = []
        for i in range(spec["n"]):
            label = rng.choices(LABELS, weights=spec["priors"])[0]
            text = _text(rng, spec, label)
            sensors = _sensors(rng, spec["base"], label)
            shown = rng.choice(LABELS) if rng.random() < LABEL_NOISE else label
            rows.append([f"{name[:3]}-{i:04d}", text, *sensors, shown])
        with open(out_dir / f"{name}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["record_id", "text", *SENSORS, "label"])
            writer.writerows(rows)


if __name__ == "__main__":
    generate(Path(__file__).resolve().parent.parent / "clients" / "datasets")
