"""Shamir t-of-n sharing: argument checks and hypothesis properties.

Properties: every t-subset of shares reconstructs the secret; t-1 shares are consistent with
*every* candidate secret (for any candidate we construct the one extra share that makes
``combine`` return it, i.e. the degree-(t-1) polynomial through the t-1 shares and (0, candidate)
exists), and ``combine`` refuses t-1 shares with NotEnoughParticipants.
"""

from __future__ import annotations

import itertools
import math
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import InvalidParameter, NotEnoughParticipants
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.shamir import MAX_SECRET_BYTES, PRIME, SHARE_BYTES, combine, split

MAX_SUBSETS = 25


def lagrange_at_zero(xs: list[int]) -> list[int]:
    """Lagrange basis polynomials evaluated at 0, written here independently of the library."""
    out = []
    for i, xi in enumerate(xs):
        num = math.prod(xj for j, xj in enumerate(xs) if j != i) % PRIME
        den = math.prod(xj - xi for j, xj in enumerate(xs) if j != i) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return out


def as_int(s: SecretBytes) -> int:
    return int.from_bytes(s.expose_secret_bytes(), "big")


def t_subsets(xs: list[int], t: int, rnd: random.Random) -> list[tuple[int, ...]]:
    """All t-subsets if there are few, else MAX_SUBSETS sampled ones plus the extremes."""
    if math.comb(len(xs), t) <= MAX_SUBSETS:
        return list(itertools.combinations(xs, t))
    picks = {tuple(sorted(rnd.sample(xs, t))) for _ in range(MAX_SUBSETS)}
    picks |= {tuple(sorted(xs)[:t]), tuple(sorted(xs)[-t:])}
    return sorted(picks)


parameters = st.integers(1, 20).flatmap(
    lambda n: st.tuples(
        st.integers(1, n),
        st.lists(st.integers(1, 2**32), min_size=n, max_size=n, unique=True),
    )
)


@settings(max_examples=150, deadline=None)
@given(params=parameters, secret=st.binary(min_size=32, max_size=32), rnd=st.randoms())
def test_every_threshold_subset_reconstructs(
    params: tuple[int, list[int]], secret: bytes, rnd: random.Random
) -> None:
    t, xs = params
    shares = split(SecretBytes(secret), threshold=t, xs=xs)
    assert sorted(shares) == sorted(xs)
    assert all(len(s) == SHARE_BYTES and as_int(s) < PRIME for s in shares.values())
    for subset in t_subsets(xs, t, rnd):
        got = combine({x: shares[x] for x in subset}, threshold=t, secret_bytes=32)
        assert got.expose_secret_bytes() == secret, f"subset {subset}"


@settings(max_examples=150, deadline=None)
@given(
    params=parameters,
    secret=st.binary(min_size=32, max_size=32),
    candidate=st.binary(min_size=32, max_size=32),
    rnd=st.randoms(),
)
def test_fewer_than_threshold_shares_fit_every_secret(
    params: tuple[int, list[int]], secret: bytes, candidate: bytes, rnd: random.Random
) -> None:
    t, xs = params
    shares = split(SecretBytes(secret), threshold=t, xs=xs)
    held = rnd.sample(xs, t - 1)
    known = {x: shares[x] for x in held}

    if t > 1:
        with pytest.raises(
            NotEnoughParticipants, match=rf"{t - 1} participant\(s\) remain"
        ) as info:
            combine(known, threshold=t, secret_bytes=32, stage="unmask")
        assert (info.value.have, info.value.need, info.value.stage) == (t - 1, t, "unmask")

    # The t-1 held shares plus (0, candidate) fix a degree-(t-1) polynomial; evaluate it at a
    # fresh x and hand that share to combine: it must return the candidate. So for every
    # candidate there is a sharing that agrees with what the t-1 holders see.
    x_new = next(x for x in itertools.count(2**32 + 1) if x not in known)
    pts = [*held, x_new]
    lam = lagrange_at_zero(pts)
    partial = sum(as_int(known[x]) * lam[i] for i, x in enumerate(held)) % PRIME
    target = int.from_bytes(candidate, "big")
    y_new = (target - partial) * pow(lam[-1], -1, PRIME) % PRIME
    forged = dict(known)
    forged[x_new] = SecretBytes(y_new.to_bytes(SHARE_BYTES, "big"))
    assert combine(forged, threshold=t, secret_bytes=32).expose_secret_bytes() == candidate


@settings(max_examples=30, deadline=None)
@given(secret=st.binary(max_size=MAX_SECRET_BYTES), t=st.integers(1, 6), extra=st.integers(0, 4))
def test_secret_sizes_roundtrip(secret: bytes, t: int, extra: int) -> None:
    xs = list(range(1, t + extra + 1))
    shares = split(SecretBytes(secret), threshold=t, xs=xs)
    got = combine(shares, threshold=t, secret_bytes=len(secret))
    assert got.expose_secret_bytes() == secret


def test_shares_are_fresh_each_split() -> None:
    secret = SecretBytes(os.urandom(32))
    a = split(secret, threshold=3, xs=[1, 2, 3])
    b = split(secret, threshold=3, xs=[1, 2, 3])
    assert all(a[x] != b[x] for x in (1, 2, 3))


def test_threshold_one_shares_are_the_secret() -> None:
    secret = os.urandom(32)
    shares = split(SecretBytes(secret), threshold=1, xs=[4, 9])
    for share in shares.values():
        assert share.expose_secret_bytes()[-32:] == secret


# --- bad arguments ----------------------------------------------------------------------------

SECRET = SecretBytes(os.urandom(32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 2, "xs": [1, 2, 2]}, r"Shamir x-coordinates must be distinct"),
        ({"threshold": 1, "xs": [0, 1]}, r"Shamir x-coordinates must be in \[1, p\)"),
        ({"threshold": 1, "xs": [-3]}, r"Shamir x-coordinates must be in \[1, p\)"),
        ({"threshold": 1, "xs": [PRIME]}, r"Shamir x-coordinates must be in \[1, p\)"),
        (
            {"threshold": 0, "xs": [1, 2]},
            r"Shamir threshold must be in \[1, 2\] for 2 shares, found 0",
        ),
        (
            {"threshold": 3, "xs": [1, 2]},
            r"Shamir threshold must be in \[1, 2\] for 2 shares, found 3",
        ),
        ({"threshold": 1, "xs": []}, r"Shamir threshold must be in \[1, 0\] for 0 shares, found 1"),
    ],
)
def test_split_rejects(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidParameter, match=match):
        split(SECRET, **kwargs)  # type: ignore[arg-type]


def test_split_rejects_long_secret() -> None:
    with pytest.raises(InvalidParameter, match=r"Shamir secret must be <= 64 bytes, found 65"):
        split(SecretBytes(bytes(65)), threshold=1, xs=[1])


SHARES = split(SECRET, threshold=3, xs=[1, 2, 3, 4])


def test_combine_not_enough_shares() -> None:
    two = {x: SHARES[x] for x in (1, 2)}
    with pytest.raises(
        NotEnoughParticipants,
        match=r"stage 'recover'.*2 participant\(s\) remain but the threshold is 3",
    ):
        combine(two, threshold=3, secret_bytes=32, stage="recover")
    with pytest.raises(NotEnoughParticipants):
        combine({}, threshold=1, secret_bytes=32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 0}, r"Shamir threshold must be >= 1, found 0"),
        ({"threshold": -1}, r"Shamir threshold must be >= 1, found -1"),
        ({"secret_bytes": -1}, r"Shamir secret_bytes must be in \[0, 64\], found -1"),
        ({"secret_bytes": 65}, r"Shamir secret_bytes must be in \[0, 64\], found 65"),
    ],
)
def test_combine_rejects_arguments(kwargs: dict[str, int], match: str) -> None:
    args = {"threshold": 3, "secret_bytes": 32, **kwargs}
    with pytest.raises(InvalidParameter, match=match):
        combine(SHARES, **args)


def test_combine_rejects_bad_x() -> None:
    bad = {0: SHARES[1], 2: SHARES[2], 3: SHARES[3]}
    with pytest.raises(InvalidParameter, match=r"Shamir x-coordinates must be in \[1, p\)"):
        combine(bad, threshold=3, secret_bytes=32)


@pytest.mark.parametrize("size", [0, 32, SHARE_BYTES - 1, SHARE_BYTES + 1])
def test_combine_rejects_wrong_share_size(size: int) -> None:
    bad = {**SHARES, 2: SecretBytes(bytes(size))}
    with pytest.raises(
        InvalidParameter, match=rf"Shamir share must be {SHARE_BYTES} bytes, found {size}"
    ):
        combine(bad, threshold=3, secret_bytes=32)


@pytest.mark.parametrize("y", [PRIME, PRIME + 1, 2 ** (8 * SHARE_BYTES) - 1])
def test_combine_rejects_non_field_element(y: int) -> None:
    bad = {**SHARES, 2: SecretBytes(y.to_bytes(SHARE_BYTES, "big"))}
    with pytest.raises(InvalidParameter, match="Shamir share is not a field element"):
        combine(bad, threshold=3, secret_bytes=32)


def test_combine_detects_replaced_share() -> None:
    # A random field element in place of a share makes the result a random element of a 521-bit
    # field: it fits 32 bytes with probability 2^-265.
    fake = int.from_bytes(os.urandom(SHARE_BYTES), "big") % PRIME
    bad = {**SHARES, 2: SecretBytes(fake.to_bytes(SHARE_BYTES, "big"))}
    with pytest.raises(InvalidParameter, match="Shamir shares are inconsistent"):
        combine(bad, threshold=3, secret_bytes=32)
