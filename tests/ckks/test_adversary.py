"""Every attack of secagg.ckks.adversary fails against the defences, and succeeds without them
(the positive controls: the attack is real, so these tests can fail)."""

from __future__ import annotations

import pytest

from secagg.ckks.adversary import ATTACKS, VARIANTS, run_attack
from secagg.errors import InvalidParameter

DEFENDED = [
    ("swap-keys", "dealer-view", "advert-signature", None),
    ("forge-aggregate", "replay", "sketch-check", None),
    ("forge-aggregate", "drop-one", "sketch-check", None),
    ("forge-aggregate", "shift", "sketch-check", None),
    ("forge-aggregate", "tweak", "sketch-check", None),
    ("low-order-key", "enterprise", "box-key", True),
    ("low-order-key", "relayed", "box-key", True),
    ("garbage-shares", "enterprise", "ciphertext", True),
    ("garbage-shares", "dealer", "key-box", True),
]


@pytest.mark.parametrize(("name", "variant", "check", "exact"), DEFENDED)
def test_attack_fails_against_the_defence(name: str, variant: str, check: str, exact: bool | None) -> None:
    report = run_attack(name, variant=variant, clients=4, params=1500)
    assert report.attack_succeeded is False, report.detail
    assert report.honest_completed is True
    assert report.detected_by == check
    assert report.exact is exact
    assert report.defence is True


def test_swap_keys_positive_control_the_server_decrypts_the_victim() -> None:
    """Roster verification off: the dealer seals the key to the server, which decrypts client 4's
    upload (an actual decryption compared with the update), while every client completes."""
    report = run_attack("swap-keys", clients=4, params=1500, insecure_disable_defence=True)
    assert report.attack_succeeded is True and report.detected_by is None
    assert "decrypted client 4's upload" in report.detail
    assert report.honest_completed is True and report.exact is True  # nobody noticed
    assert report.refusals == {}


@pytest.mark.parametrize("variant", ["replay", "drop-one", "shift"])
def test_forge_aggregate_positive_control_a_wrong_aggregate_is_accepted(variant: str) -> None:
    report = run_attack("forge-aggregate", variant=variant, clients=4, params=1500,
                        insecure_disable_defence=True)
    assert report.attack_succeeded is True and report.detected_by is None
    assert report.honest_completed is False and report.exact is False
    assert "accepted a forged aggregate" in report.detail


def test_low_order_key_positive_control_stops_the_round() -> None:
    report = run_attack("low-order-key", clients=4, params=1500, insecure_disable_defence=True)
    assert report.attack_succeeded is True and report.honest_completed is False
    assert report.round_ended is not None and "key distribution" in report.round_ended


def test_garbage_shares_positive_control_stops_the_round() -> None:
    report = run_attack("garbage-shares", clients=4, params=1500, insecure_disable_defence=True)
    assert report.attack_succeeded is True and report.honest_completed is False
    assert report.round_ended is not None


def test_report_keys_and_bad_names() -> None:
    data = run_attack("garbage-shares", clients=3, params=100).to_dict()
    for key in ("adversary", "attack_succeeded", "honest_completed", "detected_by", "exact"):
        assert key in data
    assert data["contributors"] == [1, 2]
    with pytest.raises(InvalidParameter, match="unknown adversary"):
        run_attack("nope")
    with pytest.raises(InvalidParameter, match="unknown variant"):
        run_attack("swap-keys", variant="nope")
    with pytest.raises(InvalidParameter, match="--clients >= 3"):
        run_attack("swap-keys", clients=2)
    assert set(VARIANTS) == set(ATTACKS)
