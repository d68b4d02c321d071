"""Frozen protocol formats: config digests and the masking wire encoding.

A failure means a config field or a message layout changed, which makes every deployed client
refuse (or misread) the new server's messages: bump the protocol version and regenerate on purpose
(`.venv/bin/python tests/vectors/make_vectors.py --force --only protocol_formats.json`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from secagg.ckks import CKKSRoundConfig
from secagg.masking import MaskingConfig, wire
from tests.vectors.make_vectors import _masking_messages

VECTORS = json.loads((Path(__file__).parent / "vectors" / "protocol_formats.json").read_text())


@pytest.mark.parametrize("case", VECTORS["masking_configs"], ids=lambda c: str(c["config"]["active"]))
def test_masking_config_digest_is_frozen(case: dict[str, Any]) -> None:
    config = MaskingConfig.from_dict(case["config"])
    assert config.to_dict() == case["config"]
    assert config.digest().hex() == case["digest"]


def test_ckks_config_digest_is_frozen() -> None:
    case = VECTORS["ckks_config"]
    config = CKKSRoundConfig.from_dict(case["config"])
    assert config.digest().hex() == case["digest"]


@pytest.mark.parametrize("index", range(len(VECTORS["masking_wire"])))
def test_masking_wire_encoding_is_frozen(index: int) -> None:
    case = VECTORS["masking_wire"][index]
    msg = _masking_messages()[index]
    assert type(msg).__name__ == case["type"]
    assert wire.encode(msg).hex() == case["hex"]  # type: ignore[arg-type]
    assert wire.decode(bytes.fromhex(case["hex"])) == msg


def test_a_changed_field_changes_the_digest() -> None:
    base = dict(VECTORS["masking_configs"][0]["config"])
    base["threshold"] = 7
    assert MaskingConfig.from_dict(base).digest().hex() != VECTORS["masking_configs"][0]["digest"]
