"""The service contract (secagg.contract): result codec, plain wire format, error codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg.contract import (
    ReleasedAggregate,
    Route,
    decode_plain,
    encode_plain,
    http_status,
)
from secagg.errors import ErrorCode, InvalidParameter, RejectedMessage

ids = st.lists(st.integers(0, 2**32 - 1), max_size=20).map(lambda v: tuple(sorted(set(v))))


@given(mode=st.sampled_from(["masking", "ckks", "plain"]), round_id=st.integers(0, 2**40),
       survivors=ids, dropped=ids, excluded=ids,
       weight=st.one_of(st.none(), st.floats(0.5, 1e9)), layout=st.text(max_size=64),
       encrypted=st.booleans())
def test_released_aggregate_round_trips_through_its_header(
        mode: str, round_id: int, survivors: tuple[int, ...], dropped: tuple[int, ...],
        excluded: tuple[int, ...], weight: float | None, layout: str, encrypted: bool) -> None:
    r = ReleasedAggregate(mode=mode, round_id=round_id, survivors=survivors, dropped=dropped,
                          excluded=excluded, total_weight=weight, layout_digest=layout,
                          encrypted=encrypted)
    assert ReleasedAggregate.from_header(r.to_header()) == r


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    ("[1]", "JSON object"),
    (json.dumps({"round": 1}), "'mode'"),
    (json.dumps({"mode": "masking", "round": True}), "'round'"),
    (json.dumps({"mode": "masking", "round": 1, "survivors": ["a"]}), "'survivors'"),
    (json.dumps({"mode": "masking", "round": 1, "total_weight": "3"}), "'total_weight'"),
])
def test_a_bad_result_header_names_the_field(text: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        ReleasedAggregate.from_header(text)


def test_mean_needs_a_positive_weight() -> None:
    r = ReleasedAggregate(mode="masking", round_id=1, survivors=(0, 1), total_weight=2.0)
    assert np.allclose(r.mean(np.array([2.0, 4.0])), [1.0, 2.0])
    with pytest.raises(InvalidParameter, match="total weight"):
        ReleasedAggregate(mode="ckks", round_id=1, survivors=()).mean(np.zeros(2))


@given(st.lists(st.floats(-1e6, 1e6, width=32), max_size=50), st.integers(1, 2**32 - 1))
def test_plain_upload_round_trips(values: list[float], weight: int) -> None:
    body = encode_plain(np.array(values, dtype=np.float32), weight)
    got = decode_plain(body, len(values))
    assert got.weight == weight and np.array_equal(got.update, np.array(values, dtype=np.float32))


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:-1], "bytes"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: b[:4] + bytes(4) + b[8:], "weight"),
    (lambda b: b[:8] + np.array([np.nan], "<f4").tobytes() + b[12:], "NaN"),
])
def test_bad_plain_uploads_are_named(mutate: object, message: str) -> None:
    body = encode_plain(np.ones(3, np.float32), 2)
    with pytest.raises(InvalidParameter, match=message):
        decode_plain(mutate(body), 3)  # type: ignore[operator]


def test_every_error_code_has_a_status_and_refusals_carry_codes() -> None:
    for code in ErrorCode:
        assert 400 <= http_status(code) < 500
    assert http_status(ErrorCode.REPLAYED) == 409 and http_status(ErrorCode.WRONG_SENDER) == 403
    assert RejectedMessage(1, "x").code is ErrorCode.INVALID_MESSAGE
    assert Route.result(7) == "/v1/rounds/7/result"


def test_masking_refusals_carry_their_code() -> None:
    from secagg.masking import MaskingConfig, ServerSession, wire
    from secagg.masking.client import ClientSession
    from secagg.masking.update import encode_update

    cfg = MaskingConfig.create(num_clients=3, vector_length=4, full_graph=True, active=False)
    server = ServerSession(cfg)
    advert = wire.encode(ClientSession(cfg, 0, encode_update(cfg, np.zeros(4))).start())
    server.receive(advert)
    with pytest.raises(RejectedMessage) as info:
        server.receive(advert)
    assert info.value.code is ErrorCode.REPLAYED
    with pytest.raises(RejectedMessage) as info:
        server.receive(wire.encode(ClientSession(cfg, 0, encode_update(cfg, np.zeros(4))).start()))
    assert info.value.code is ErrorCode.CONFLICTING_MESSAGE


def test_a_round_for_another_model_layout_is_refused_naming_both() -> None:
    from secagg.encoding import ParamSpec
    from secagg.masking import MaskingConfig

    mine = ParamSpec.from_arrays({"lora_A": np.zeros((2, 3)), "head": np.zeros(4)})
    other = ParamSpec.from_arrays({"lora_B": np.zeros((3, 2)), "head": np.zeros(4)})  # same size
    assert mine.size == other.size
    cfg = MaskingConfig.create(num_clients=3, vector_length=other.size, layout=other)
    again = MaskingConfig.from_dict(cfg.to_dict())
    assert again.layout_digest == other.digest()
    with pytest.raises(InvalidParameter, match=rf"{other.digest().hex()[:16]}.*{mine.digest().hex()[:16]}"):
        mine.check_round(again.layout_digest)
    other.check_round(again.layout_digest)
    mine.check_round(b"")  # a round naming no layout: checked on size by the protocol
    with pytest.raises(InvalidParameter, match="does not match the model layout"):
        MaskingConfig.create(num_clients=3, vector_length=other.size + 1, layout=other)
