"""Threshold CKKS in Flower, on Flower's real simulation engine (Ray): five enterprises, real
TenSEAL-planned ring parameters, the session carried between ClientApp calls sealed in
``Context.state``, one enterprise vanishing mid-round, the released mean checked against
plaintext within the round's promised worst-case error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

from secagg.integrations.flower import ThresholdCKKSWorkflow
from secagg.integrations.flower.client_state import THRESHOLD_STATE_RECORD

from .flower_apps import (
    SHAPES,
    FaultMod,
    ReplayMod,
    client_examples,
    plaintext_mean,
    run_modern_round,
    threshold_kind,
)

pytestmark = [pytest.mark.flower, pytest.mark.slow]
N = 5


def _fault(partition: int, kind: str) -> FaultMod:
    """Partition ``partition`` vanishes at the threshold server message ``kind``."""
    return FaultMod(partition=partition, kind=kind, kind_of=threshold_kind)


def _run(tmp_path: Path, fault: Any) -> dict[str, Any]:
    return run_modern_round(tmp_path, N,
                            lambda roster: ThresholdCKKSWorkflow(roster=roster, timeout=120),
                            fault, protocol="ckks-threshold")


def _check_mean(out: dict[str, Any], partitions: list[int]) -> None:
    secure = out["secure"]
    assert secure is not None, "the threshold round did not complete"
    released = secure.result
    assert released.uploaders == tuple(partitions)
    weight = sum(client_examples(p) for p in partitions)
    max_error = secure.config.max_error
    assert abs(released.total_weight - weight) <= max_error
    want = plaintext_mean(partitions)
    got = out["result"].arrays.to_numpy_ndarrays()
    # mean = sum / weight, each within max_error of the truth; |values| <= 2 (client_model)
    bound = (max_error + 2 * max_error) / (weight - max_error) + 1e-6  # float32 rounding
    for k, arr in zip(SHAPES, got, strict=True):
        assert arr.shape == want[k].shape
        assert np.max(np.abs(arr - want[k])) <= bound, k
    # no reply ever carried a model to the server, nor a client's weight (the upload carries it
    # encrypted); the ClientApp's other metrics did arrive
    assert all(names == () for _, names in out["replies"])
    assert "loss" in out["metric_names"] and "num-examples" not in out["metric_names"]


def test_a_dropout_after_dealing_leaves_the_others_mean(tmp_path: Path) -> None:
    # partition 2 dealt its secret, then vanished before uploading: the sum is the other four's
    out = _run(tmp_path, _fault(2, "delivery"))
    _check_mean(out, [0, 1, 3, 4])
    assert any("vanished at the delivery" in f for f in out["secure"].failures)


def test_a_decryptor_lost_at_decryption_is_retried_without_it(tmp_path: Path) -> None:
    # partition 4 uploaded and signed, then vanished before its partial decryption: the server
    # retries once with the decryptors who answered, and the sum still holds all five
    out = _run(tmp_path, _fault(4, "partial request"))
    _check_mean(out, [0, 1, 2, 3, 4])
    assert out["secure"].result.attempts == 2
    assert 4 not in out["secure"].result.decryptors


def test_an_older_session_state_written_back_is_refused(tmp_path: Path) -> None:
    """Partition 1's Context.state gets its key-request blob back when the share delivery
    arrives: the client refuses it (the stage is sealed into the blob) and drops out."""
    out = _run(tmp_path, ReplayMod(partition=1, kind="delivery", save_at="key request",
                               kind_of=threshold_kind, record=THRESHOLD_STATE_RECORD))
    _check_mean(out, [0, 2, 3, 4])
    assert any("authentication failed" in f for f in out["secure"].failures), \
        out["secure"].failures


def test_the_positive_control_without_faults_sums_all_five(tmp_path: Path) -> None:
    out = _run(tmp_path, None)
    _check_mean(out, [0, 1, 2, 3, 4])
    assert out["secure"].result.attempts == 1
    assert not out["secure"].failures
