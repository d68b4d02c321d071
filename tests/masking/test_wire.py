"""The wire format: lossless, injective, and every malformed input is a clear InvalidParameter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import InvalidParameter
from secagg.masking import messages as m
from secagg.masking import wire

ids = st.integers(0, 2**32 - 1)
blob = st.binary(max_size=80)
header = {"digest": st.binary(min_size=32, max_size=32), "round": st.integers(0, 2**64 - 1),
          "party": ids}
messages = st.one_of(
    st.builds(m.AdvertiseKeys, **header, cipher_public=blob, mask_public=blob,
              seed_commitment=blob, signature=blob),
    st.builds(m.ShareKeys, **header, sealed_shares=st.dictionaries(ids, blob, max_size=5)),
    st.builds(m.MaskedInput, **header, payload=st.binary(max_size=500)),
    st.builds(m.UnmaskShares, **header, seed_shares=st.dictionaries(ids, blob, max_size=4),
              mask_key_shares=st.dictionaries(ids, blob, max_size=4)),
    st.builds(m.ShareDelivery, **header,
              shared=st.lists(ids, unique=True, max_size=6).map(lambda x: tuple(sorted(x))),
              sealed_shares=st.dictionaries(ids, blob, max_size=5)),
    st.builds(m.UnmaskRequest, **header,
              survivors=st.lists(ids, unique=True, max_size=6).map(lambda x: tuple(sorted(x))),
              signatures=st.dictionaries(ids, blob, max_size=3)),
)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_roundtrip(msg: m.Message) -> None:
    assert wire.decode(wire.encode(msg)) == msg


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_truncation_and_corruption_never_crash(msg: m.Message, data: st.DataObject) -> None:
    raw = wire.encode(msg)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(InvalidParameter):
        wire.decode(raw[:cut])
    pos = data.draw(st.integers(0, len(raw) - 1))
    flipped = raw[:pos] + bytes([raw[pos] ^ 0xFF]) + raw[pos + 1 :]
    try:
        out = wire.decode(flipped)
    except InvalidParameter:
        return
    assert out != msg  # a change that still parses must decode to a different message


def test_size_limit_is_checked_before_parsing() -> None:
    raw = wire.encode(m.MaskedInput(digest=bytes(32), round=1, party=1, payload=bytes(1000)))
    with pytest.raises(InvalidParameter, match="limit"):
        wire.decode(raw, max_bytes=100)


def test_unexpected_type_is_named() -> None:
    raw = wire.encode(m.MaskedInput(digest=bytes(32), round=1, party=1, payload=b""))
    with pytest.raises(InvalidParameter, match="expected a ShareKeys message, found MaskedInput"):
        wire.decode(raw, expect=m.ShareKeys)


def test_peek_header_reads_only_the_header() -> None:
    msg = m.MaskedInput(digest=bytes(range(32)), round=9, party=41, payload=bytes(100))
    head = wire.peek_header(wire.encode(msg)[:wire._HEADER.size])
    assert head == (m.MaskedInput, bytes(range(32)), 9, 41)
    with pytest.raises(InvalidParameter, match="too short"):
        wire.peek_header(b"SAGM\x01")
