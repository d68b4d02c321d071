"""Flower's Ray engine writes PYTHONPATH, RAY_* and other variables into this process's
environment; put it back after each test so later tests' subprocesses see the environment
the suite started with."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
