"""wire.peek: a frame's kind and one field from its header, None for anything that is not one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from secagg.ckks.wire import MAGIC, frame, peek, u32


def test_peek_reads_kind_and_field() -> None:
    data = frame(7, [b"d" * 32, u32(42), b"rest"])
    assert peek(data) == (7, None)
    assert peek(data, 1) == (7, u32(42))
    assert peek(data, 2) == (7, b"rest")
    assert peek(data, 3) == (7, None)  # no such field
    assert peek(data[:40], 1) == (7, None)  # truncated before the field ends


@given(st.binary(max_size=64))
def test_peek_never_raises_on_garbage(data: bytes) -> None:
    kind, field = peek(data, 2)
    if not data.startswith(MAGIC) or len(data) <= len(MAGIC):
        assert (kind, field) == (None, None)
