"""``RuntimeClient.prepare``: a round's config comes from the server, so whatever is wrong with
it is a one-line refusal before anything is charged or sent -- never a crash, and never a charge
for a round that then fails before its first message."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.identity import Identity, Roster
from secagg_clients.runtime import RoundInfo, RoundRefused, RuntimeClient
from secagg_server.modes import default_modes

IDS = [Identity.generate(f"e{i}") for i in range(4)]
ROSTER = Roster.of("fed", IDS)
MODES = default_modes()


def _config(mode: str) -> dict[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MODES[mode].make_config(4, 0, {"vector_length": 8}, ROSTER)


@pytest.fixture(scope="module")
def runtime() -> RuntimeClient:  # no server: prepare sends nothing
    with RuntimeClient("http://127.0.0.1:9", "t", identity=IDS[1], roster=ROSTER) as rt:
        yield rt


def test_a_valid_round_is_prepared_with_its_first_message_made(runtime: RuntimeClient) -> None:
    for mode in ("masking", "ckks", "ckks-threshold"):
        info = RoundInfo(1, 0, mode, _config(mode), 1)
        party = runtime.prepare(info, np.zeros(8, np.float32), 1)
        first = party.first()
        assert first and party.first() is first  # made once: take_part sends these bytes


def test_a_round_that_would_fail_before_its_first_message_is_refused_by_prepare(
        runtime: RuntimeClient) -> None:
    """round = 2^70 passed every check but failed when the first message was packed: after
    the enterprise had charged its ledger. prepare now makes the first message, so it refuses."""
    cfg = {**_config("masking"), "round": 2**70}
    with pytest.raises(RoundRefused, match="config is not acceptable"):
        runtime.prepare(RoundInfo(1, 0, "masking", cfg, 1), np.zeros(8, np.float32), 1)


@settings(max_examples=40, deadline=None)
@given(mode=st.sampled_from(["masking", "ckks", "ckks-threshold"]),
       field=st.sampled_from(["vector_length", "round", "threshold", "min_clients", "dealer",
                              "corrupt", "min_uploaders", "security_bits", "session",
                              "num_clients", "value_bound"]),
       value=st.one_of(st.just(math.inf), st.just(-math.inf), st.just(math.nan),
                       st.just(2**70), st.just(-1), st.just("x"), st.just([1]), st.none(),
                       st.just({"a": 1})))
def test_a_malformed_config_is_refused_never_a_crash(runtime: RuntimeClient, mode: str,
                                                     field: str, value: object) -> None:
    cfg = {**_config(mode), field: value}
    try:
        runtime.prepare(RoundInfo(1, 0, mode, cfg, 1), np.zeros(8, np.float32), 1)
    except RoundRefused as exc:
        assert str(exc)  # one line naming what was wrong
    # accepted: the field is not read by this mode, or the value is one it takes


def test_a_config_that_is_not_an_object_is_refused(runtime: RuntimeClient) -> None:
    for mode in ("masking", "ckks", "ckks-threshold"):
        with pytest.raises(RoundRefused):
            runtime.prepare(RoundInfo(1, 0, mode, [1, 2], 1),  # type: ignore[arg-type]
                            np.zeros(8, np.float32), 1)
