from __future__ import annotations

import warnings

import numpy as np
import pytest

from secagg.masking import MaskingConfig
from secagg.masking.simulate import insecure_simulated_federation


def make_config(n: int, length: int = 64, **kw: object) -> MaskingConfig:
    """A config; ``active=True`` binds it to the insecure simulated roster of size n (with a
    permissive policy when the test picks neighbours/threshold by hand)."""
    if kw.get("active") and "roster" not in kw:
        by_hand = kw.get("neighbours") is not None or kw.get("threshold") is not None
        kw["roster"] = insecure_simulated_federation(n, corrupt_rate=0.0 if by_hand else 0.05)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-federation dropout notes
        return MaskingConfig.create(num_clients=n, vector_length=length, round=7, **kw)  # type: ignore[arg-type]


def random_updates(n: int, length: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, length).astype(np.float32) for _ in range(n)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
