"""CKKSRoundConfig.from_dict: the published JSON form both the server and the clients rebuild."""

from __future__ import annotations

import secrets

import pytest

from secagg.ckks import CKKSRoundConfig, Preset
from secagg.errors import InvalidParameter


def _published(**over: object) -> dict[str, object]:
    d: dict[str, object] = {"preset": "compact", "vector_length": 1000, "num_clients": 3,
                            "dealer": 1, "min_clients": 2, "round": 4,
                            "session": secrets.token_bytes(32).hex(),
                            "roster_digest": secrets.token_bytes(32).hex(), "value_bound": 1.0,
                            "weight_bound": 1.0}
    d.update(over)
    return d


def test_roundtrip_and_digest_binding() -> None:
    d = _published()
    cfg = CKKSRoundConfig.from_dict(d)
    assert cfg.client_ids == (0, 1, 2) and cfg.params == Preset.COMPACT.params
    assert cfg.session.hex() == d["session"]
    d["digest"] = cfg.digest().hex()
    assert CKKSRoundConfig.from_dict(d) == cfg
    explicit = CKKSRoundConfig.from_dict({**d, "client_ids": [0, 1, 2]})
    assert explicit == cfg
    with pytest.raises(InvalidParameter, match="does not match its digest"):
        CKKSRoundConfig.from_dict({**d, "round": 5})
    with pytest.raises(InvalidParameter, match="does not match its digest"):
        CKKSRoundConfig.from_dict({**d, "roster_digest": secrets.token_bytes(32).hex()})


def test_to_dict_roundtrips_and_binds_the_roster() -> None:
    cfg = CKKSRoundConfig.from_dict(_published())
    out = cfg.to_dict()
    assert out["roster_digest"] == cfg.roster_digest.hex() and out["digest"] == cfg.digest().hex()
    assert CKKSRoundConfig.from_dict(out) == cfg
    other = CKKSRoundConfig.from_dict({**_published(), "session": cfg.session.hex()})
    assert other.roster_digest != cfg.roster_digest and other.digest() != cfg.digest()


@pytest.mark.parametrize(("change", "match"), [
    ({"preset": "huge"}, "unknown CKKS preset 'huge'"),
    ({"vector_length": "many"}, "wrong type"),
    ({"session": "zz"}, "wrong type"),
    ({"dealer": 7}, "dealer must be one of client_ids"),
    ({"roster_digest": "ab" * 16}, "roster_digest must be the 32-byte digest"),
    ({"roster_digest": "xyz"}, "wrong type"),
])
def test_bad_fields_are_named(change: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidParameter, match=match):
        CKKSRoundConfig.from_dict(_published(**change))


@pytest.mark.parametrize("name", ["min_clients", "roster_digest"])
def test_missing_field_is_named(name: str) -> None:
    d = _published()
    del d[name]
    with pytest.raises(InvalidParameter, match=f"lacks '{name}'"):
        CKKSRoundConfig.from_dict(d)
