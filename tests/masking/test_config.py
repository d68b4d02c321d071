"""The round config: validated on construction, round-trips, malformed dicts named by field."""

from __future__ import annotations

import pytest

from secagg.errors import InvalidParameter
from secagg.masking import MaskingConfig
from tests.masking.conftest import make_config


def test_config_roundtrips_and_digest_is_stable() -> None:
    c = make_config(6, 100)
    again = MaskingConfig.from_dict(c.to_dict())
    assert again == c and again.digest() == c.digest()


@pytest.mark.parametrize(("change", "message"), [
    ({"active": "false"}, "'active' must be bool, found str"),
    ({"threshold": None}, "'threshold' must be int"),
    ({"session": "zz"}, "'session' must be hex"),
    ({"protocol": "other"}, "expected 'secagg-masking'"),
])
def test_malformed_config_dict_names_the_field(change: dict[str, object], message: str) -> None:
    d = {**make_config(6, 100).to_dict(), **change}
    with pytest.raises(InvalidParameter, match=message):
        MaskingConfig.from_dict(d)


def test_missing_field_and_threshold_rule_are_named() -> None:
    d = make_config(6, 100).to_dict()
    del d["round"]
    with pytest.raises(InvalidParameter, match="missing field 'round'"):
        MaskingConfig.from_dict(d)
    with pytest.raises(InvalidParameter, match="threshold must be"):
        make_config(6, 100, neighbours=5, threshold=2)
