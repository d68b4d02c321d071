"""The bound that holds against a deviating server: fewer than 2t - m corrupt holders.

A server that declares a victim's honest neighbours dropped (it withholds their uploads) leaves
the victim with only itself and its corrupt holders in S. With t - 1 corrupt holders that is t:
both survivor checks pass, the victim reveals its seed share, and the coalition strips every
mask (this is why the parameter finder bounds the chance of 2t - m corrupt holders in any
neighbourhood, and t - 1 >= 2t - m always). With fewer, check (1) refuses: the attack needs the
victim to keep an honest neighbour in S, whose mask the coalition cannot remove.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from secagg.encoding.packing import unpack_bits
from secagg.hazmat import shamir
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.prg import MaskExpander
from secagg.masking import MaskingConfig, keys, wire
from secagg.masking import messages as m
from secagg.masking.attack_arena import Arena
from secagg.masking.simulate import insecure_simulated_federation

N, K, T, VICTIM = 40, 8, 6, 0


def _isolate(colluding: int) -> tuple[Arena, bool]:
    roster, ids = insecure_simulated_federation(N, corrupt_rate=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = MaskingConfig.create(num_clients=N, vector_length=16, roster=roster, round=5,
                                   neighbours=K, threshold=T)
    rng = np.random.default_rng(1)
    arena = Arena(cfg, [rng.uniform(-1, 1, 16).astype(np.float32) for _ in range(N)],
                  roster=roster, identities=ids, rng=rng)
    neighbours = sorted(arena.server._graph[VICTIM])
    corrupt, honest = neighbours[:colluding], neighbours[colluding:]

    def withhold(i: int, data: bytes) -> bytes | None:  # the server "loses" honest uploads
        return None if i in honest and wire.peek_type(data) is m.MaskedInput else data

    arena.on_client = withhold
    arena.run()
    reveals = arena.messages(VICTIM, m.UnmaskShares)
    if not reveals:
        return arena, False
    digest, cfg = arena.digest, arena.config
    seed_shares = {p + 1: SecretBytes(r.seed_shares[VICTIM][: shamir.SHARE_BYTES])
                   for p in range(N) for r in arena.messages(p, m.UnmaskShares)
                   if VICTIM in r.seed_shares}
    if len(seed_shares) < T:
        return arena, False
    seed = shamir.combine(dict(list(seed_shares.items())[:T]), threshold=T, secret_bytes=32)
    y = unpack_bits(arena.messages(VICTIM, m.MaskedInput)[0].payload, cfg.mod_bits,
                    cfg.wire_length)
    MaskExpander().apply(y, keys.self_mask_key(seed, VICTIM, digest, cfg.round), subtract=True)
    for h, pair_key in reveals[0].pair_keys.items():
        MaskExpander().apply(y, SecretBytes(pair_key), subtract=h > VICTIM)
    victim_advert = arena.messages(VICTIM, m.AdvertiseKeys)[0]
    for c in corrupt:  # the colluders know their own pairwise keys with the victim
        k = keys.pairwise_mask_key(arena.clients[c]._mask, victim_advert.mask_public, c, VICTIM,
                                   digest, cfg.round)
        MaskExpander().apply(y, k, subtract=c > VICTIM)
    y &= np.uint32((1 << cfg.mod_bits) - 1)
    return arena, bool(np.array_equal(y, arena.values[VICTIM]))


def test_t_minus_1_corrupt_holders_and_a_withholding_server_read_the_victim() -> None:
    """The positive control of the bound: t - 1 >= 2t - m corrupt holders suffice."""
    _, recovered = _isolate(T - 1)
    assert recovered


@pytest.mark.parametrize("colluding", [2 * T - (K + 1) - 1, T - 2])
def test_fewer_corrupt_holders_are_refused_by_check_1(colluding: int) -> None:
    arena, recovered = _isolate(colluding)
    assert not recovered
    assert "survivor set keeps only" in arena.aborts.get(VICTIM, "")
