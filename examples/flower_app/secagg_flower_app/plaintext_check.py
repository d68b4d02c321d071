"""An out-of-band check that a secure round released the plaintext weighted mean, for demos.

With the run config ``check-dir`` set, every enterprise writes the model it handed to secagg's mod
(and its weight) to ``check-dir/round-<r>/client-<id>.npz`` on its own machine, and the ServerApp
writes what the round released (the mean, the survivors, the fixed-point step) to
``check-dir/round-<r>/released.npz``. ``python check_plaintext.py check-dir`` then recomputes the
survivors' weighted mean from the enterprises' files and compares. The secure round itself never
reads these files: they stand in for each enterprise showing an auditor its own update, which is
only sensible on a test federation. Leave ``check-dir`` empty (the default) in real use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["RoundCheck", "check_round", "write_client", "write_released"]


def _round_dir(check_dir: str | Path, server_round: int) -> Path:
    path = Path(check_dir) / f"round-{server_round}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_client(check_dir: str | Path, server_round: int, client_id: int,
                 model: npt.NDArray[np.float32], weight: int) -> None:
    """Record the model enterprise ``client_id`` sent into round ``server_round`` (client side)."""
    np.savez(_round_dir(check_dir, server_round) / f"client-{client_id}.npz",
             model=model, weight=np.int64(weight))


def write_released(check_dir: str | Path, server_round: int, mean: npt.NDArray[np.float64],
                   survivors: tuple[int, ...], total_weight: int, step: float) -> None:
    """Record what the secure round released (server side)."""
    np.savez(_round_dir(check_dir, server_round) / "released.npz", mean=mean,
             meta=json.dumps({"survivors": list(survivors), "total_weight": total_weight,
                              "step": step}))


@dataclass(frozen=True)
class RoundCheck:
    server_round: int
    survivors: tuple[int, ...]
    max_abs_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= self.tolerance


def check_round(round_dir: Path) -> RoundCheck:
    """Compare one round's released mean with the survivors' plaintext weighted mean.

    The tolerance is the protocol's worst case, as the ServerApp recorded it (``step``): for
    masking, each survivor's coordinates are rounded to the fixed-point grid (at most one step),
    so the weighted mean is off by at most one step; for threshold CKKS, the round's promised
    bound on the sum and on the total weight, carried through the division.
    """
    released = np.load(round_dir / "released.npz")
    meta = json.loads(str(released["meta"]))
    survivors = tuple(int(c) for c in meta["survivors"])
    missing = [c for c in survivors if not (round_dir / f"client-{c}.npz").exists()]
    if missing:
        raise FileNotFoundError(f"{round_dir}: no plaintext record of survivor(s) {missing}; run "
                                "the clients with the same check-dir")
    models, weights = [], []
    for c in survivors:
        rec = np.load(round_dir / f"client-{c}.npz")
        models.append(rec["model"].astype(np.float64))
        weights.append(int(rec["weight"]))
    if sum(weights) != int(meta["total_weight"]):
        raise ValueError(f"{round_dir}: the survivors' weights add up to {sum(weights)}, but the "
                         f"round released a total weight of {meta['total_weight']}")
    plain = sum(w * m for w, m in zip(weights, models, strict=True)) / sum(weights)
    error = float(np.max(np.abs(released["mean"] - plain)))
    return RoundCheck(int(round_dir.name.split("-")[1]), survivors, error, float(meta["step"]))
