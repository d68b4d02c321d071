"""Malicious peers and a splitting server, on a sparse SecAgg+ graph in active mode."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import NotEnoughParticipants, ProtocolAbort, RejectedMessage
from secagg.hazmat.aead import seal
from secagg.masking import messages as m
from secagg.masking import wire
from secagg.masking.keys import (
    share_associated_data,
    share_box_plaintext,
    share_key,
    share_keys_bytes,
)
from tests.masking.conftest import make_config, random_updates
from tests.masking.harness import Round, decode

N, K, T = 24, 8, 6


def _to_consistency_requests(r: Round, outbox: dict[int, bytes]) -> dict[int, bytes]:
    return r.deliver(r.reply(r.deliver(r.reply(r.deliver(outbox)))))


def _exact(r: Round, survivors: list[int]) -> None:
    assert r.server is not None
    agg = r.server.result
    want = sum(r.values[i].astype(np.uint64) for i in survivors) % (1 << agg.config.mod_bits)
    assert np.array_equal(agg.total, want[:-1].astype(np.uint32))
    assert agg.total_weight == int(want[-1])


@settings(max_examples=8, deadline=None)
@given(liars=st.sets(st.integers(0, N - 1), min_size=1, max_size=K + 1 - T), seed=st.integers(0, 99))
def test_corrupted_unmask_shares_are_outvoted_and_named(liars: set[int], seed: int) -> None:
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40, seed))
    inbox = r.deliver(r.reply(r.deliver(r.reply(r.deliver(r.reply(r.deliver(outbox)))))))
    replies = r.reply(inbox)
    rng = np.random.default_rng(seed)
    for liar in liars:  # well-formed, wrong shares: only the owners' commitments can tell
        msg = decode(replies[liar])
        assert isinstance(msg, m.UnmaskShares)
        junk = {o: rng.bytes(len(s)) for o, s in msg.seed_shares.items()}
        replies[liar] = wire.encode(dataclasses.replace(msg, seed_shares=junk))
    r.run_to_end(replies)
    _exact(r, list(range(N)))
    assert r.server is not None
    assert set(r.server.result.corrupt_shares) <= liars


def _split_views(r: Round, outbox: dict[int, bytes], u: int
                 ) -> tuple[dict[int, tuple[int, ...]], dict[int, bytes]]:
    """Run to the consistency requests, tell u's holders that u dropped and everyone else that
    it survived; returns each client's view and its signature over it."""
    inbox = _to_consistency_requests(r, outbox)
    assert r.server is not None
    camp_b = set(r.server._graph[u])
    views = {}
    for i, data in inbox.items():
        req = decode(data)
        assert isinstance(req, m.ConsistencyRequest)
        views[i] = tuple(s for s in req.survivors if s != u) if i in camp_b else req.survivors
        inbox[i] = wire.encode(dataclasses.replace(req, survivors=views[i]))
    sigs = {i: decode(r.clients[i].handle_bytes(d)).signature for i, d in inbox.items()}  # type: ignore[union-attr]
    return views, sigs


def test_a_server_splitting_one_clients_holders_is_stopped_by_the_quorum() -> None:
    """Holders of u are told u dropped, everyone else that it survived; each camp gets every
    signature on its own set. Every holder of u must refuse: neither kind of u's shares leaks."""
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40))
    u = 5
    views, sigs = _split_views(r, outbox, u)
    assert r.server is not None
    graph = r.server._graph
    revealed_about_u = 0
    refused = 0
    for i in graph[u] | {u}:
        same = {p: s for p, s in sigs.items() if views[p] == views[i]}
        req = m.UnmaskRequest(digest=config.digest(), round=config.round, party=i,
                              survivors=views[i], signatures=same)
        try:
            reply = decode(r.clients[i].handle_bytes(wire.encode(req)))
        except ProtocolAbort as exc:
            assert "confirmed the survivor set" in exc.reason
            refused += 1
            continue
        assert isinstance(reply, m.UnmaskShares)
        revealed_about_u += (u in reply.seed_shares) + (u in reply.mask_key_shares)
    assert revealed_about_u < T  # not even one kind of u's secret can be rebuilt
    assert refused >= K + 1 - (T - 1)


def test_split_positive_control_global_quorum_lets_both_camps_reveal() -> None:
    """The same split with the old global checks: both camps reveal shares of u."""
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40))
    for c in r.clients.values():
        c._insecure_global = True
    u = 5
    views, sigs = _split_views(r, outbox, u)
    assert r.server is not None
    graph = r.server._graph
    key_shares = seed_shares = 0
    for i in graph[u] | {u}:
        same = {p: s for p, s in sigs.items() if views[p] == views[i]}
        req = m.UnmaskRequest(digest=config.digest(), round=config.round, party=i,
                              survivors=views[i], signatures=same)
        reply = decode(r.clients[i].handle_bytes(wire.encode(req)))
        assert isinstance(reply, m.UnmaskShares)
        key_shares += u in reply.mask_key_shares
        seed_shares += u in reply.seed_shares
    assert key_shares >= T  # u's mask key leaks ...
    assert seed_shares >= 1  # ... while u's own holder reveals its seed share as a survivor


def test_too_many_corrupted_shares_end_the_round_cleanly() -> None:
    config = make_config(10, 20, active=True, full_graph=True)
    r, outbox = Round.start(config, random_updates(10, 20))
    inbox = r.deliver(r.reply(r.deliver(r.reply(r.deliver(r.reply(r.deliver(outbox)))))))
    replies = r.reply(inbox)
    for liar in range(10 - config.threshold + 1):
        msg = decode(replies[liar])
        junk = {o: bytes(len(s)) for o, s in msg.seed_shares.items()}  # type: ignore[union-attr]
        replies[liar] = wire.encode(dataclasses.replace(msg, seed_shares=junk))  # type: ignore[arg-type]
    with pytest.raises(ProtocolAbort, match="whose revealed shares match its commitments"):
        r.run_to_end(replies)


def test_a_false_accusation_costs_the_accused_its_place_but_nothing_else() -> None:
    """A malicious enterprise reports an honest neighbour's box as invalid: the neighbour is
    treated as a dropout (its upload leaves the sum, its mask key is rebuilt, never its seed), and
    everyone else gets the exact sum."""
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40))
    inbox = r.deliver(r.reply(r.deliver(outbox)))  # share deliveries
    assert r.server is not None
    liar = 3
    accused = min(r.server._graph[liar])
    # The liar behaves exactly as if the accused's box were unreadable (a consistent lie: it
    # leaves the accused's pairwise mask out and holds none of its shares).
    delivery = decode(inbox[liar])
    assert isinstance(delivery, m.ShareDelivery)
    boxes = dict(delivery.sealed_shares)
    boxes[accused] = bytes(len(boxes[accused]))
    inbox[liar] = wire.encode(dataclasses.replace(delivery, sealed_shares=boxes))
    outbox = r.reply(inbox)
    assert decode(outbox[liar]).excluded == (accused,)  # type: ignore[union-attr]
    inbox = r.deliver(outbox)
    with pytest.raises(ProtocolAbort, match="reports this client as dropped"):
        r.clients[accused].handle_bytes(inbox[accused])
    replies = r.reply(inbox, skip={accused})
    inbox = r.deliver(replies)
    replies = r.reply(inbox)
    seed_shares_of_accused = sum(accused in decode(b).seed_shares for b in replies.values())  # type: ignore[union-attr]
    assert seed_shares_of_accused == 0
    r.run_to_end(replies)
    assert r.server.result.excluded == (accused,)
    _exact(r, [i for i in range(N) if i != accused])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(5, 3000), dropout=st.sampled_from([0.0, 0.01, 0.1, 0.2]),
       corrupt=st.sampled_from([0.0, 0.01, 0.05, 0.1]), active=st.booleans())
def test_parameter_finder_never_returns_a_graph_over_its_security_target(
        n: int, dropout: float, corrupt: float, active: bool) -> None:
    import warnings

    from secagg.masking import choose_parameters
    from secagg.masking.params import binomial_tail

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = choose_parameters(num_clients=n, dropout_rate=dropout, corrupt_rate=corrupt,
                              active=active)
    m_ = p.holders
    if p.neighbours < n - 1:  # sparse: the probabilistic bound, isolation included
        need = 2 * p.threshold - m_ if active else p.threshold
        risk = n * binomial_tail(m_, corrupt, need) + n * corrupt**p.neighbours
        assert risk <= 2.0**-40
    else:  # full graph: the worst-case count of corrupt clients is below what a split needs
        c = int(np.ceil(corrupt * n))
        assert (2 * p.threshold - n if active else p.threshold) > c


def _signatures_at_consistency(r: Round, outbox: dict[int, bytes]) -> tuple[dict[int, bytes],
                                                                            dict[int, bytes]]:
    """Run a round to its unmask requests; returns (unmask requests, consistency signatures)."""
    inbox = r.deliver(r.reply(r.deliver(r.reply(r.deliver(outbox)))))  # consistency requests
    replies = r.reply(inbox)
    sigs = {i: decode(b).signature for i, b in replies.items()}  # type: ignore[union-attr]
    return r.deliver(replies), sigs


def test_signatures_from_another_round_with_the_same_config_do_not_count() -> None:
    """A server that reruns a config collects signatures in one round and replays them in the
    next: they are bound to the first round's advert transcript, so they count for nothing."""
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    first, out1 = Round.start(config, random_updates(N, 40, 1))
    requests1, sigs1 = _signatures_at_consistency(first, out1)
    second, out2 = Round.start(config, random_updates(N, 40, 2))  # same config digest
    requests2, _ = _signatures_at_consistency(second, out2)
    req = decode(requests2[0])
    assert isinstance(req, m.UnmaskRequest)
    replayed = dataclasses.replace(req, signatures={p: sigs1[p] for p in req.signatures})
    with pytest.raises(ProtocolAbort, match="confirmed the survivor set"):
        second.clients[0].handle_bytes(wire.encode(replayed))
    # control: the same signatures are accepted in the round they were made in
    req1 = decode(requests1[0])
    assert isinstance(req1, m.UnmaskRequest)
    own = dataclasses.replace(req1, signatures={p: sigs1[p] for p in req1.signatures})
    assert isinstance(decode(first.clients[0].handle_bytes(wire.encode(own))), m.UnmaskShares)


def test_a_graph_weaker_than_the_rosters_policy_is_refused_by_clients_and_server() -> None:
    from secagg.errors import InvalidParameter
    from secagg.masking import ClientSession, MaskingConfig, ServerSession, encode_update
    from secagg.masking.simulate import insecure_simulated_federation

    roster, ids = insecure_simulated_federation(60)  # policy: corrupt_rate 0.05, 2^-40
    weak = MaskingConfig.create(num_clients=60, vector_length=10, roster=roster,
                                neighbours=2, threshold=2)
    values = encode_update(weak, np.zeros(10, np.float32))
    with pytest.raises(InvalidParameter, match="weaker than the roster's policy"):
        ClientSession(weak, 0, values, identity=ids[0], roster=roster)
    with pytest.raises(InvalidParameter, match="weaker than the roster's policy"):
        ServerSession(weak, roster=roster)
    chosen = MaskingConfig.create(num_clients=60, vector_length=10, roster=roster)
    ClientSession(chosen, 0, encode_update(chosen, np.zeros(10, np.float32)), identity=ids[0],
                  roster=roster)  # the finder's own choice meets the policy


def test_an_enterprise_reporting_more_neighbours_than_an_honest_one_could_is_dropped_itself() -> None:
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40))
    inbox = r.deliver(r.reply(r.deliver(outbox)))
    outbox = r.reply(inbox)
    assert r.server is not None
    liar = 3
    msg = decode(outbox[liar])
    assert isinstance(msg, m.MaskedInput)
    outbox[liar] = wire.encode(dataclasses.replace(
        msg, excluded=tuple(sorted(r.server._graph[liar]))))  # all 8 > m - t = 3
    inbox = r.deliver(outbox)
    with pytest.raises(ProtocolAbort, match="reports this client as dropped"):
        r.clients[liar].handle_bytes(inbox[liar])
    r.run_to_end(r.reply(inbox, skip={liar}))
    assert r.server.result.excluded == (liar,)
    _exact(r, [i for i in range(N) if i != liar])


@pytest.mark.parametrize("field", ["cipher_public", "mask_public"])
def test_a_client_refuses_a_low_order_key_in_its_directory(field: str) -> None:
    config = make_config(6, 10, full_graph=True)  # passive: no signature stands in the way
    r, outbox = Round.start(config, random_updates(6, 10))
    inbox = r.deliver(outbox)
    directory = decode(inbox[0])
    assert isinstance(directory, m.KeyDirectory)
    adverts = dict(directory.adverts)
    adverts[1] = wire.encode(dataclasses.replace(decode(adverts[1]), **{field: bytes(32)}))  # type: ignore[arg-type]
    with pytest.raises(ProtocolAbort, match="low-order"):
        r.clients[0].handle_bytes(wire.encode(dataclasses.replace(directory, adverts=adverts)))


def _garble_boxes_to(r: Round, outbox: dict[int, bytes], dealer: int,
                     holders: list[int]) -> None:
    """The dealer (who holds its identity) signs ShareKeys whose boxes to ``holders`` are
    garbage: the server must accept it, only the holders can tell."""
    msg = decode(outbox[dealer])
    assert isinstance(msg, m.ShareKeys)
    boxes = {**msg.sealed_shares, **{h: bytes(len(msg.sealed_shares[h])) for h in holders}}
    forged = dataclasses.replace(msg, sealed_shares=boxes)
    identity = r.clients[dealer]._identity
    assert identity is not None
    outbox[dealer] = wire.encode(dataclasses.replace(
        forged, signature=identity.signing_key.sign(share_keys_bytes(forged))))


@pytest.mark.parametrize("garbled", [1, K - T, K - T + 1, K - 1, K])
def test_a_dealer_sending_bad_boxes_to_some_holders_is_left_out_and_nobody_else(garbled: int) -> None:
    """However many of its holders get garbage (so that too few may be left to rebuild its mask
    key), the dealer alone is left out: the holders that masked with it reveal that pair's key,
    and the sum of everyone else is exact."""
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40))
    outbox = r.reply(r.deliver(outbox))
    assert r.server is not None
    dealer = 4
    _garble_boxes_to(r, outbox, dealer, sorted(r.server._graph[dealer])[:garbled])
    inbox = r.deliver(r.reply(r.deliver(outbox)))
    with pytest.raises(ProtocolAbort, match="reports this client as dropped"):
        r.clients[dealer].handle_bytes(inbox[dealer])
    r.run_to_end(r.reply(inbox, skip={dealer}))
    assert r.server.result.excluded == (dealer,)
    _exact(r, [i for i in range(N) if i != dealer])


def test_without_pair_keys_a_dealer_garbling_most_boxes_sinks_the_round(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Positive control: with the pair-key fallback switched off, the same dealer (garbage to
    m - t of its holders: t - 1 can rebuild its key) makes the round fail."""
    from secagg.masking import recovery

    def no_fallback(owner: int, *args: object) -> list[object]:
        raise NotEnoughParticipants("unmask", 0, T, f"pair keys of client {owner} (disabled)")

    monkeypatch.setattr(recovery, "pair_key_masks", no_fallback)
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40))
    outbox = r.reply(r.deliver(outbox))
    assert r.server is not None
    dealer = 4
    _garble_boxes_to(r, outbox, dealer, sorted(r.server._graph[dealer])[: K - T + 1])
    inbox = r.deliver(r.reply(r.deliver(outbox)))
    with pytest.raises(NotEnoughParticipants, match="disabled"):
        r.run_to_end(r.reply(inbox, skip={dealer}))


def test_share_keys_not_signed_by_the_dealer_are_refused() -> None:
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40))
    outbox = r.reply(r.deliver(outbox))
    assert r.server is not None
    msg = decode(outbox[4])
    assert isinstance(msg, m.ShareKeys)
    forged = dataclasses.replace(msg, commitments={**msg.commitments, 4: bytes(64)})
    with pytest.raises(RejectedMessage, match="share keys is not signed by the identity"):
        r.server.receive(wire.encode(forged))
    r.server.receive(outbox[4])  # the genuine message is still accepted


@pytest.mark.parametrize("tamper", ["commitment", "share"])
def test_a_box_that_does_not_match_its_commitment_makes_the_dealer_a_dropout(tamper: str) -> None:
    """The dealer's box for one holder opens but does not match the commitment it sent for that
    holder (a wrong commitment, or a wrong share sealed under the right key): the holder
    reports the dealer, which is left out, and the others get the exact sum."""
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40))
    outbox = r.reply(r.deliver(outbox))  # the ShareKeys
    assert r.server is not None
    dealer = 7
    holder = min(r.server._graph[dealer])
    shares = decode(outbox[dealer])
    assert isinstance(shares, m.ShareKeys)
    if tamper == "commitment":
        commitments = {**shares.commitments, holder: bytes(64)}
        shares = dataclasses.replace(shares, commitments=commitments)
    else:  # the dealer seals a different share (and the right salts) under the real box key
        me = r.clients[dealer]
        k = share_key(me._cipher, me._adverts[holder].cipher_public, dealer, holder,
                      config.digest(), config.round)
        held = r.clients[dealer]._held[dealer]
        plain = share_box_plaintext(held[1], held[1], held[2], held[3])  # seed share as key share
        boxes = {**shares.sealed_shares, holder: seal(
            k, plain, share_associated_data(config.digest(), config.round, dealer, holder))}
        shares = dataclasses.replace(shares, sealed_shares=boxes)
    identity = r.clients[dealer]._identity  # the dealer signs what it sends
    assert identity is not None
    outbox[dealer] = wire.encode(dataclasses.replace(
        shares, signature=identity.signing_key.sign(share_keys_bytes(shares))))
    uploads = r.reply(r.deliver(outbox))
    assert decode(uploads[holder]).excluded == (dealer,)  # type: ignore[union-attr]
    inbox = r.deliver(uploads)
    with pytest.raises(ProtocolAbort, match="reports this client as dropped"):
        r.clients[dealer].handle_bytes(inbox[dealer])
    r.run_to_end(r.reply(r.deliver(r.reply(inbox, skip={dealer}))))
    assert r.server.result.excluded == (dealer,)
    _exact(r, [i for i in range(N) if i != dealer])


def _report_then_vanish(vanish_at: str, reports: int) -> Round:
    config = make_config(N, 40, active=True, neighbours=K, threshold=T)
    r, outbox = Round.start(config, random_updates(N, 40))
    inbox = r.deliver(r.reply(r.deliver(outbox)))  # share deliveries
    assert r.server is not None
    graph, liar = r.server._graph, 3
    h = next(v for v in sorted(graph[liar]) if len(graph[v] & graph[liar]) >= reports)
    reported = sorted(graph[h] & graph[liar])[:reports]
    delivery = decode(inbox[liar])
    assert isinstance(delivery, m.ShareDelivery)
    boxes = {**delivery.sealed_shares, **{j: bytes(len(delivery.sealed_shares[j])) for j in reported}}
    inbox[liar] = wire.encode(dataclasses.replace(delivery, sealed_shares=boxes))
    uploads = r.reply(inbox)
    assert decode(uploads[liar]).excluded == tuple(reported)  # type: ignore[union-attr]
    inbox = r.deliver(uploads)
    for j in reported:
        with pytest.raises(ProtocolAbort, match="reports this client as dropped"):
            r.clients[j].handle_bytes(inbox[j])
    skip = set(reported)
    outbox = r.reply(inbox, skip=skip | ({liar} if vanish_at == "consistency" else set()))
    r.run_to_end(r.reply(r.deliver(outbox), skip=skip | {liar}))
    assert h in r.server.result.survivors
    return r


@pytest.mark.parametrize("vanish_at", ["consistency", "unmask"])
def test_an_enterprise_that_reports_the_most_it_may_and_vanishes_cannot_sink_the_round(
        vanish_at: str) -> None:
    """M reports k - t common neighbours of an honest neighbour h (a consistent lie: it treats
    their boxes as unreadable), then vanishes: h keeps t holders that answer, and everyone
    else gets the exact sum."""
    r = _report_then_vanish(vanish_at, K - T)
    assert r.server is not None
    _exact(r, sorted(r.server.result.survivors))


def test_with_the_old_report_cap_report_then_vanish_sinks_the_round(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Positive control: allowing m - t reports (one more), the same attack leaves h with t - 1
    holders that answer, and the round fails."""
    from secagg.masking import accusations, client

    def old_cap(neighbours: int, threshold: int) -> int:
        return neighbours + 1 - threshold

    monkeypatch.setattr(accusations, "report_cap", old_cap)
    monkeypatch.setattr(client, "report_cap", old_cap)
    with pytest.raises(NotEnoughParticipants):
        _report_then_vanish("unmask", K + 1 - T)


def test_a_weight_pushed_out_of_range_ends_the_round_and_names_no_one() -> None:
    """SECURITY.md (integrity of the sum): one enterprise that adds 2^(b-1) to its own weight
    lane before masking ends the round at the server's weight check, and nothing proves who did
    it, so no culprit is named and culprit exclusion never leaves it out. Sparse graph (n = 200,
    k = 80, t = 54: disjoint groups of t exist). Control: the same round untampered releases."""
    cfg = make_config(200, 16, active=True)
    assert cfg.neighbours < cfg.num_clients - 1  # the sparse SecAgg+ graph
    honest, out = Round.start(cfg, random_updates(cfg.num_clients, 16, 0))
    honest.run_to_end(out)
    assert len(honest.server.result.survivors) == cfg.num_clients
    r, out = Round.start(cfg, random_updates(cfg.num_clients, 16, 0))
    values = r.clients[5]._values
    values[-1] = (int(values[-1]) + (1 << (cfg.mod_bits - 1))) % (1 << cfg.mod_bits)
    with pytest.raises(ProtocolAbort, match="masked inconsistently") as err:
        r.run_to_end(out)
    assert err.value.culprit is None
