"""Pairwise masks cancel, and each mask depends on the full key and its whole context."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.prg import MaskExpander, expand_mask
from secagg.masking import keys


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 7), length=st.integers(1, 3000), round_=st.integers(0, 2**40))
def test_pairwise_masks_cancel_mod_2_32(n: int, length: int, round_: int) -> None:
    digest = bytes(range(32))
    pairs = [X25519KeyPair.generate() for _ in range(n)]
    total = np.zeros(length, dtype=np.uint32)
    expander = MaskExpander()
    for u in range(n):
        for v in range(n):
            if u != v:
                k = keys.pairwise_mask_key(pairs[u], pairs[v].public_bytes, u, v, digest, round_)
                expander.apply(total, k, subtract=u > v)
    assert not total.any()


def test_mask_keys_differ_by_round_pair_and_purpose() -> None:
    a, b = X25519KeyPair.generate(), X25519KeyPair.generate()
    d = bytes(32)
    k1 = keys.pairwise_mask_key(a, b.public_bytes, 0, 1, d, 1)
    assert k1 == keys.pairwise_mask_key(b, a.public_bytes, 1, 0, d, 1)  # both ends agree
    assert k1 != keys.pairwise_mask_key(a, b.public_bytes, 0, 1, d, 2)  # round-bound
    assert k1 != keys.pairwise_mask_key(a, b.public_bytes, 0, 2, d, 1)  # pair-bound
    assert k1 != keys.pairwise_mask_key(a, b.public_bytes, 0, 1, b"\x01" * 32, 1)  # config-bound
    assert k1 != keys.share_key(a, b.public_bytes, 0, 1, d, 1)  # purpose-bound
    assert not np.array_equal(expand_mask(k1, 64), expand_mask(
        keys.pairwise_mask_key(a, b.public_bytes, 0, 1, d, 2), 64))
