"""Shared fixtures: the tiny test-only BERT (built in code), small enterprise slices, and
``fed3`` (tests.server.conftest: a real server with a federation of three enterprises)."""

from __future__ import annotations

import pytest

from secagg_clients.data import Record, load_enterprise, split_records
from tests.server.conftest import fed3  # noqa: F401  (a real server of three enterprises)


@pytest.fixture(scope="session")
def tokenizer():  # type: ignore[no-untyped-def]
    from secagg_clients.model import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def small_records() -> list[Record]:
    train, _ = split_records(load_enterprise("energy_utility"), seed=0)
    return train[:96]
