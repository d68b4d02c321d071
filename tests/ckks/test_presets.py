"""Presets, the HE-standard 128-bit check on custom parameters, and round-config validation."""

from __future__ import annotations

import dataclasses

import pytest
import tenseal.sealapi as seal

from secagg.ckks import HE_STANDARD_128_MAX_LOGQ, CKKSParams, Preset
from secagg.errors import InvalidParameter
from tests.ckks.conftest import make_config


def test_table_matches_seal_max_bit_count() -> None:
    for n, bound in HE_STANDARD_128_MAX_LOGQ.items():
        assert seal.CoeffModulus.MaxBitCount(n, seal.SEC_LEVEL_TYPE.TC128) == bound


@pytest.mark.parametrize("preset", list(Preset))
def test_presets_meet_the_bound_and_say_so(preset: Preset) -> None:
    p = preset.params
    assert sum(p.coeff_modulus_bits) <= HE_STANDARD_128_MAX_LOGQ[p.poly_modulus_degree]
    text = p.describe()
    assert f"N={p.poly_modulus_degree}" in text and "128-bit" in text


def test_compact_is_one_prime_and_precise_is_more_precise() -> None:
    compact, precise = Preset.COMPACT.params, Preset.PRECISE.params
    assert compact.level_primes == 1
    assert precise.release_quantum < compact.release_quantum <= 1e-6
    assert precise.max_abs_sum > compact.max_abs_sum


def test_custom_params_over_the_bound_are_rejected_with_the_fix() -> None:
    with pytest.raises(InvalidParameter, match=r"exceeds the HE-standard 128-bit bound of 109"):
        dataclasses.replace(Preset.COMPACT.params, poly_modulus_degree=4096, coeff_modulus_bits=(60, 60))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"poly_modulus_degree": 3000}, "poly_modulus_degree"),
        ({"coeff_modulus_bits": (61,)}, "coeff_modulus_bits"),
        ({"coeff_modulus_bits": ()}, "coeff_modulus_bits"),
        ({"level_primes": 2}, "level_primes"),
        ({"scale_bits": 59}, "scale_bits"),
        ({"release_quantum_bits": 35}, "release_quantum_bits"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, object], field: str) -> None:
    base = dataclasses.asdict(Preset.COMPACT.params)
    base.update(change)
    with pytest.raises(InvalidParameter, match=field):
        CKKSParams(**base)  # type: ignore[arg-type]


def test_custom_params_that_pass_work_like_presets() -> None:
    p = dataclasses.replace(Preset.COMPACT.params, name="n4096", poly_modulus_degree=4096)
    assert p.slots == 2048 and p.headroom_bits == 18


def test_preset_from_name() -> None:
    assert Preset.from_name("compact") is Preset.COMPACT
    with pytest.raises(InvalidParameter, match="unknown CKKS preset 'fast'"):
        Preset.from_name("fast")


def test_config_headroom_makes_overflow_impossible() -> None:
    with pytest.raises(InvalidParameter, match=r"exceeds the preset's max \|sum\| 2\^18"):
        make_config(weight_bound=2.0**17, n=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_clients": 1}, "min_clients must be in"),
        ({"dealer": 99}, "dealer must be one of client_ids"),
        ({"session": b"short"}, "session must be >= 16"),
        ({"value_bound": float("nan")}, "value_bound must be finite"),
        ({"update_size": 0}, "update_size must be >= 1"),
    ],
)
def test_config_rules(kwargs: dict[str, object], match: str) -> None:
    config = make_config()
    with pytest.raises(InvalidParameter, match=match):
        dataclasses.replace(config, **kwargs)  # type: ignore[arg-type]


def test_config_digest_changes_with_every_field() -> None:
    config = make_config()
    assert config.digest() == dataclasses.replace(config).digest()
    assert config.digest() != dataclasses.replace(config, round=1).digest()
    assert config.digest() != dataclasses.replace(config, min_clients=3).digest()
    assert config.digest() != dataclasses.replace(config, params=Preset.PRECISE.params).digest()
