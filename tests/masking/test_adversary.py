"""Attacks: a server (with colluding clients) trying to learn an honest client's update.

The attack code is run twice: with t - 1 corrupt holders it must fail, with t it must succeed,
so the test shows the threshold is what stops it (not a broken attack).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from secagg.encoding.packing import unpack_bits
from secagg.errors import InvalidParameter, NotEnoughParticipants, ProtocolAbort
from secagg.hazmat import shamir
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.prg import MaskExpander
from secagg.masking import MaskingConfig, wire
from secagg.masking import messages as m
from secagg.masking.keys import pairwise_mask_key, seed_commitment, self_mask_key
from secagg.masking.simulate import insecure_simulated_federation
from tests.masking.conftest import random_updates
from tests.masking.harness import Round, decode

VICTIM = 0


def _attack(r: Round, corrupt_key_shares: dict[int, SecretBytes], corrupt: list[int]) -> np.ndarray | None:
    """Server + corrupt clients try to recover the victim's update from what they hold.

    The victim survived, so honest peers legitimately revealed its *seed* shares: the server
    strips the self mask. The pairwise masks stay on unless the coalition rebuilds the victim's
    mask private key, which needs ``threshold`` key shares; only corrupt holders will give those.
    """
    cfg = r.config
    digest = cfg.digest()
    msgs = [decode(b) for b in r.seen_by_server]
    adverts = {a.party: a for a in msgs if isinstance(a, m.AdvertiseKeys)}
    upload = next(a for a in msgs if isinstance(a, m.MaskedInput) and a.party == VICTIM)
    replies = [a for a in msgs if isinstance(a, m.UnmaskShares)]
    seed = shamir.combine({a.party + 1: SecretBytes(a.seed_shares[VICTIM][: shamir.SHARE_BYTES])
                           for a in replies},
                          threshold=cfg.threshold, secret_bytes=32)
    assert seed_commitment(seed, VICTIM, digest, cfg.round) == adverts[VICTIM].seed_commitment
    y = unpack_bits(upload.payload, cfg.mod_bits, cfg.wire_length)
    MaskExpander().apply(y, self_mask_key(seed, VICTIM, digest, cfg.round), subtract=True)
    try:
        key = shamir.combine(corrupt_key_shares, threshold=cfg.threshold, secret_bytes=32)
    except (NotEnoughParticipants, InvalidParameter):  # too few, or a guess that is no key
        return None
    victim = X25519KeyPair.from_private_bytes(key)
    if victim.public_bytes != adverts[VICTIM].mask_public:
        return None
    for peer in range(cfg.num_clients):
        if peer != VICTIM:
            k = pairwise_mask_key(victim, adverts[peer].mask_public, VICTIM, peer, digest, cfg.round)
            MaskExpander().apply(y, k, subtract=not peer < VICTIM)
    return y & np.uint32((1 << cfg.mod_bits) - 1)


def _interpolate_anyway(shares: dict[int, SecretBytes], t: int) -> dict[int, SecretBytes]:
    """Below threshold the best the coalition can do is guess the missing shares."""
    guessed = dict(shares)
    x = max(guessed) + 1
    while len(guessed) < t:
        guessed[x + 1000] = SecretBytes(bytes(shamir.SHARE_BYTES))
        x += 1
    return guessed


@pytest.mark.parametrize("extra", [0, 1])
def test_coalition_below_threshold_fails_and_at_threshold_succeeds(extra: int) -> None:
    n = 7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = MaskingConfig.create(num_clients=n, vector_length=300, full_graph=True, round=3)
    t = cfg.threshold
    corrupt = list(range(1, t + extra))  # t - 1 (+ extra) clients collude with the server
    r, outbox = Round.start(cfg, random_updates(n, 300, seed=9))
    inbox = r.deliver(r.reply(r.deliver(outbox)))  # share deliveries
    outbox = r.reply(inbox)  # masked inputs: corrupt clients now hold the victim's shares
    stolen = {c + 1: r.clients[c]._held[VICTIM][0] for c in corrupt}
    r.run_to_end(outbox)
    assert len(r.server.result.survivors) == n  # type: ignore[union-attr]
    if extra == 0:
        assert len(stolen) == t - 1
        assert _attack(r, stolen, corrupt) is None
        assert _attack(r, _interpolate_anyway(stolen, t), corrupt) is None
    else:
        recovered = _attack(r, stolen, corrupt)
        assert recovered is not None
        assert np.array_equal(recovered, r.values[VICTIM])


def test_server_alone_cannot_unmask_one_upload() -> None:
    """Every byte the server saw (not counting the unmask replies) gives no correlation."""
    n = 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = MaskingConfig.create(num_clients=n, vector_length=4000, full_graph=True)
    r, outbox = Round.start(cfg, random_updates(n, 4000, seed=3))
    r.run_to_end(outbox)
    upload = next(decode(b) for b in r.seen_by_server
                  if isinstance(decode(b), m.MaskedInput) and decode(b).party == VICTIM)
    y = unpack_bits(upload.payload, cfg.mod_bits, cfg.wire_length).astype(np.float64)  # type: ignore[union-attr]
    x = r.values[VICTIM].astype(np.float64)
    corr = np.corrcoef(y[:-1], x[:-1])[0, 1]
    assert abs(corr) < 0.1  # masked values are uniform, independent of the update
    top = float(1 << cfg.mod_bits)
    assert abs(y.mean() / top - 0.5) < 0.02  # uniform over the whole modulus


def test_active_mode_detects_a_server_reporting_different_survivor_sets() -> None:
    n = 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = MaskingConfig.create(num_clients=n, vector_length=50, full_graph=True,
                                   roster=insecure_simulated_federation(n)[0])
    r, outbox = Round.start(cfg, random_updates(n, 50))
    inbox = r.deliver(r.reply(r.deliver(r.reply(r.deliver(outbox)))))  # consistency requests
    assert all(isinstance(decode(b), m.ConsistencyRequest) for b in inbox.values())
    # the lying server tells clients 0-2 that client 5 dropped, and clients 3-5 that it survived
    lie = {}
    for i, data in inbox.items():
        req = decode(data)
        survivors = tuple(s for s in req.survivors if s != 5) if i < 3 and i != 5 else req.survivors  # type: ignore[union-attr]
        lie[i] = wire.encode(dataclasses.replace(req, survivors=survivors))  # type: ignore[arg-type]
    lie[5] = inbox[5]
    sigs = {i: decode(r.clients[i].handle_bytes(d)).signature for i, d in lie.items()}  # type: ignore[union-attr]
    for i in range(n):
        survivors = decode(lie[i]).survivors  # type: ignore[union-attr]
        forged = m.UnmaskRequest(digest=cfg.digest(), round=cfg.round, party=i,
                                 survivors=survivors, signatures=sigs)
        with pytest.raises(ProtocolAbort, match="signature|survivor"):
            r.clients[i].handle_bytes(wire.encode(forged))
