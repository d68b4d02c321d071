"""The threshold CKKS round as sans-IO sessions (:mod:`secagg.ckks.threshold.session`): the round
config, whole rounds with clients vanishing at every stage (hypothesis: the released sum or the
precise error), deterministic replay, refusals, and attacks by a malicious server or enterprise,
each with a positive control where the defence is switched off."""

from __future__ import annotations

import copy
import math
import pickle
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.ckks.messages import KeyAdvert, KeyRequest
from secagg.ckks.threshold import combine
from secagg.ckks.threshold import session as session_module
from secagg.ckks.threshold.rings import add_mod
from secagg.ckks.threshold.session import (
    ClientSession,
    Kind,
    ServerSession,
    ServerStage,
    ThresholdRoundConfig,
    _envelope_bytes,
    _frame,
    _read_envelope,
    _RoundRoster,
    _tagged,
    _unframe,
)
from secagg.ckks.threshold.sharing import ShareBundle
from secagg.ckks.threshold.transport import open_bundle, seal_bundle
from secagg.ckks.threshold.wire import (
    decode_partial,
    decode_upload,
    encode_aggregate,
    encode_upload,
)
from secagg.ckks.wire import join_fields, split_fields, u32
from secagg.errors import (
    AlreadyUsed,
    ErrorCode,
    InvalidParameter,
    NotEnoughParticipants,
    ProtocolAbort,
    RejectedMessage,
)
from secagg.hazmat.agreement import X25519KeyPair
from secagg.identity import Identity, Roster

N = 5  # t = 3, corrupt = 1: statement quorum 4, min_uploaders 3
LENGTH = 40
DROP_STAGES = ("advert", "deal", "upload", "statement", "partial", "retry")


def federation(n: int = N, name: str = "threshold-session") -> tuple[list[Identity], Roster]:
    identities = [Identity.generate(f"enterprise-{i}") for i in range(n)]
    return identities, Roster.of(name, identities)


def make_config(roster: Roster, **kw: Any) -> ThresholdRoundConfig:
    kw.setdefault("weight_bound", 4.0)
    return ThresholdRoundConfig.for_roster(roster, round=7, vector_length=LENGTH,
                                           session=secrets.token_bytes(32), **kw)


class Round:
    """One round driven in memory: clients ``0..n-1``; ``drop[i]`` names the stage at which
    client ``i`` goes silent (its message for that stage and everything after never sent)."""

    def __init__(self, n: int = N, seed: int = 0, **kw: Any) -> None:
        self.identities, self.roster = federation(n)
        self.config = make_config(self.roster, **kw)
        rng = np.random.default_rng(seed)
        self.updates = {i: rng.uniform(-1, 1, LENGTH) for i in range(n)}
        self.weights = {i: float(rng.integers(1, 5)) for i in range(n)}
        self.server = ServerSession(self.config, roster=self.roster)
        self.clients = {i: ClientSession(self.config, i, self.updates[i], weight=self.weights[i],
                                         identity=self.identities[i], roster=self.roster)
                        for i in range(n)}
        self.log: list[bytes | None] = []  # what a store journals: messages and closes
        self.refusals: dict[int, ProtocolAbort] = {}

    def want(self, ids: Any) -> np.ndarray:
        return np.asarray(sum(self.weights[i] * self.updates[i] for i in ids))

    def take(self, body: bytes) -> None:
        assert len(body) <= self.server.max_message_bytes()
        self.server.receive(body)
        self.log.append(body)

    def _silent(self, i: int, drop: dict[int, str]) -> bool:
        stage = self.server.stage.value
        name = "retry" if stage == "partial" and self.server.attempt == 1 else stage
        at = drop.get(i)
        return at is not None and DROP_STAGES.index(at) <= DROP_STAGES.index(name)

    def run(self, drop: dict[int, str] | None = None, *,
            intercept: Callable[[ServerStage, dict[int, bytes]], dict[int, bytes]] | None = None,
            ) -> None:
        drop = drop or {}
        for i, c in self.clients.items():
            if drop.get(i) != "advert":
                self.take(c.start())
        while self.server.stage is not ServerStage.DONE:
            self.log.append(None)
            out = self.server.advance()
            if intercept is not None:
                out = intercept(self.server.stage, out)
            for i in sorted(out):
                if self._silent(i, drop):
                    continue
                try:
                    reply = self.clients[i].handle_bytes(out[i])
                except ProtocolAbort as exc:
                    self.refusals[i] = exc
                    continue
                if reply is not None:
                    self.take(reply)


def expected_outcome(drop: dict[int, str], n: int = N) -> tuple[str, int, int] | tuple[
        tuple[int, ...], tuple[int, ...], int]:
    """The rules of the round for n=5, t=3, quorum 4, min_uploaders 3: ("stage", have, need)
    for a round that ends, else (uploaders, decryptors, attempts)."""
    t, quorum, min_up = 3, 4, 3
    alive = set(range(n))

    def left(stage: str) -> set[int]:
        return {i for i in alive if drop.get(i) != stage}

    alive = left("advert")
    if len(alive) < max(quorum, min_up):
        return ("advert", len(alive), 4)
    alive = left("deal")
    if len(alive) < max(quorum, min_up):
        return ("deal", len(alive), 4)
    alive = left("upload")
    uploaders = tuple(sorted(alive))
    if len(alive) < min_up:
        return ("upload", len(alive), min_up)
    if len(alive) < quorum:  # only uploaders sign: they must reach the quorum too
        return ("upload", len(alive), quorum)
    alive = left("statement")
    if len(alive) < quorum:
        return ("statement", len(alive), quorum)
    signers = tuple(sorted(alive))
    alive = left("partial")
    if alive == set(signers):
        return uploaders, signers, 1
    if len(alive) < t:
        return ("partial", len(alive), t)
    first = alive
    alive = left("retry")
    if alive != first:
        return ("partial", len(alive), t)
    return uploaders, tuple(sorted(alive)), 2


# ---- the config ----------------------------------------------------------------------------

def test_config_round_trips_and_binds_everything() -> None:
    _, roster = federation()
    cfg = make_config(roster)
    assert (cfg.threshold, cfg.corrupt, cfg.quorum, cfg.min_uploaders) == (3, 1, 4, 3)
    assert cfg.params.max_decryptions >= 2  # one retry fits the smudging budget
    data = cfg.to_dict()
    assert data["protocol"] == "secagg-ckks-threshold" and data["params"]["attempts"] == 2
    again = ThresholdRoundConfig.from_dict(data)
    assert again == cfg and again.digest() == cfg.digest()
    with pytest.raises(InvalidParameter, match="digest"):
        ThresholdRoundConfig.from_dict({**data, "threshold": 4})
    with pytest.raises(InvalidParameter, match="lacks 'vector_length'"):
        ThresholdRoundConfig.from_dict({k: v for k, v in data.items() if k != "vector_length"})
    with pytest.raises(InvalidParameter, match="threshold"):
        make_config(roster, threshold=N + 1)
    with pytest.raises(InvalidParameter, match="target_error"):
        make_config(roster, target_error=0.5)
    with pytest.raises(InvalidParameter, match="corrupt"):
        make_config(roster, corrupt=3)  # t - 1 = 2 at most
    # a round bound to another roster, or assuming fewer corrupt parties than the roster
    _, other = federation(name="elsewhere")
    with pytest.raises(InvalidParameter, match="another roster"):
        ServerSession(cfg, roster=other)
    lax = make_config(roster, corrupt=0)
    with pytest.raises(InvalidParameter, match="roster's corrupt_rate"):
        ServerSession(lax, roster=roster)


# ---- whole rounds ------------------------------------------------------------------------------

def test_an_honest_round_releases_the_weighted_sum_and_replays_to_the_same_state() -> None:
    r = Round()
    r.run()
    res = r.server.result
    assert res.uploaders == res.signers == res.decryptors == tuple(range(N))
    assert res.attempts == 1 and res.dropped == () and not res.excluded
    assert np.max(np.abs(res.weighted_sum - r.want(range(N)))) <= r.config.max_error
    assert abs(res.total_weight - sum(r.weights.values())) <= r.config.max_error
    for c in r.clients.values():
        assert c.result.uploaders == tuple(range(N)) and c.result.partials_sent == 1

    again = ServerSession(r.config, roster=r.roster)
    outs = []
    for entry in r.log:
        if entry is None:
            outs.append(again.advance())
        else:
            again.receive(entry)
    assert again.stage is ServerStage.DONE
    assert np.array_equal(again.result.weighted_sum, res.weighted_sum)
    assert again.result.total_weight == res.total_weight


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from((None, None, None, *DROP_STAGES)), min_size=N, max_size=N))
def test_clients_vanishing_at_any_stage(stages: list[str | None]) -> None:
    drop = {i: s for i, s in enumerate(stages) if s is not None}
    want = expected_outcome(drop)
    r = Round(seed=len(drop))
    if isinstance(want[0], str):
        with pytest.raises(NotEnoughParticipants) as err:
            r.run(drop)
        assert (err.value.stage, err.value.have, err.value.need) == want, err.value
        assert r.server.stage is ServerStage.DONE
        return
    r.run(drop)
    uploaders, decryptors, attempts = want
    res = r.server.result
    assert (res.uploaders, res.decryptors, res.attempts) == (uploaders, decryptors, attempts)
    assert np.max(np.abs(res.weighted_sum - r.want(uploaders))) <= r.config.max_error
    assert abs(res.total_weight - sum(r.weights[i] for i in uploaders)) <= r.config.max_error


def test_the_errors_name_what_was_short() -> None:
    r = Round()
    with pytest.raises(NotEnoughParticipants) as err:
        r.run({0: "statement", 1: "statement"})
    assert "quorum" in str(err.value) and "stage 'statement'" in str(err.value)
    r = Round()
    with pytest.raises(NotEnoughParticipants) as err:
        r.run({0: "partial", 1: "partial", 2: "partial"})
    assert "decryptor(s) [0, 1, 2] sent no partial decryption" in str(err.value)
    r = Round()
    with pytest.raises(NotEnoughParticipants) as err:
        r.run({0: "partial", 1: "retry"})
    assert "retry also lost members" in str(err.value)


# ---- refusals ----------------------------------------------------------------------------------

def test_the_server_refuses_bad_messages_and_changes_nothing() -> None:
    r = Round()
    adverts = {i: c.start() for i, c in r.clients.items()}
    bad = bytearray(adverts[0])
    bad[-1] ^= 1
    with pytest.raises(RejectedMessage, match="not signed"):
        r.server.receive(bytes(bad))
    r.server.receive(adverts[0])
    with pytest.raises(RejectedMessage) as err:
        r.server.receive(adverts[0])
    assert err.value.code is ErrorCode.REPLAYED
    with pytest.raises(RejectedMessage, match="limit"):
        r.server.receive(adverts[1] + b"\x00")
    for i in range(1, N):
        r.server.receive(adverts[i])
    requests = r.server.advance()
    deals = {i: r.clients[i].handle_bytes(requests[i]) for i in range(N)}
    # a deal that leaves out an advertiser is refused: every dealer shares with every advertiser
    fields = _unframe(deals[0], Kind.DEAL, 3)  # type: ignore[arg-type]
    short = _frame(Kind.DEAL, [fields[0], fields[1],
                               join_fields(split_fields(fields[2])[1:])])
    with pytest.raises(RejectedMessage, match="no envelope for advertised client"):
        r.server.receive(short)
    assert r.server.expected == frozenset(range(N))
    for i in range(N):
        r.server.receive(deals[i])  # type: ignore[arg-type]
    deliveries = r.server.advance()
    upload = r.clients[0].handle_bytes(deliveries[0])
    assert upload is not None
    tampered = bytearray(upload)
    tampered[len(upload) // 2] ^= 1
    with pytest.raises(RejectedMessage):
        r.server.receive(bytes(tampered))
    r.server.receive(upload)
    assert r.server.accepted == (0,)


def test_a_client_refuses_out_of_order_and_bad_input() -> None:
    r = Round()
    c = r.clients[1]
    with pytest.raises(AlreadyUsed):
        c.handle_bytes(b"SCT1\x02")
    c.start()
    with pytest.raises(AlreadyUsed):
        c.start()
    with pytest.raises(AlreadyUsed, match="waits for a 'key request'"):
        c.handle_bytes(_frame(Kind.DELIVERY, [b"", b"", b""]))
    with pytest.raises(InvalidParameter, match="weight"):
        ClientSession(r.config, 0, r.updates[0], weight=5.0, identity=r.identities[0],
                      roster=r.roster)
    with pytest.raises(InvalidParameter, match="value_bound"):
        ClientSession(r.config, 0, r.updates[0] * 3, identity=r.identities[0], roster=r.roster)
    with pytest.raises(InvalidParameter, match="not client 1"):
        ClientSession(r.config, 1, r.updates[1], identity=r.identities[0], roster=r.roster)
    assert "redacted" in repr(c)


def test_a_rounds_secret_cannot_leave_the_client_process() -> None:
    """SECURITY.md: keys live for one round in the client process only. A started session and
    its party refuse pickling and copying (no way to write the secret out), and their reprs
    redact it."""
    c = Round().clients[0]
    c.start()  # the round's fresh secret is drawn here
    for obj in (c, c._party):
        assert obj is not None
        for leak in (pickle.dumps, copy.copy, copy.deepcopy):
            with pytest.raises(TypeError, match="holds secret material"):
                leak(obj)
        assert "redacted" in repr(obj)


# ---- attacks -----------------------------------------------------------------------------------

def _swap_victims_box(r: Round, attacker: X25519KeyPair, victim: int) -> Callable[..., Any]:
    """A malicious server: in the key request to dealer 0, victim's box key is its own."""
    def intercept(stage: ServerStage, out: dict[int, bytes]) -> dict[int, bytes]:
        if stage is not ServerStage.DEAL:
            return out
        req = KeyRequest.from_bytes(out[0])
        adverts = tuple(KeyAdvert(a.config_digest, a.client_id, attacker.public_bytes,
                                  a.signature) if a.client_id == victim else a
                        for a in req.adverts)
        return {**out, 0: KeyRequest(req.config_digest, adverts).to_bytes()}
    return intercept


def test_a_server_swapping_a_box_key_is_refused_and_without_the_check_reads_shares(
        monkeypatch: pytest.MonkeyPatch) -> None:
    victim = 3
    attacker = X25519KeyPair.generate()
    r = Round()
    r.run(intercept=_swap_victims_box(r, attacker, victim))  # dealer 0 refuses, deals nothing
    assert list(r.refusals) == [0]
    assert "not signed by its roster identity" in str(r.refusals[0])
    assert r.server.result.uploaders == (1, 2, 3, 4)  # the others go on without it

    # positive control: the same attack on a dealer that does not check the relayed adverts
    r = Round()
    sent: dict[str, bytes] = {}
    real_verify = _RoundRoster.verify

    def lax_verify(self: _RoundRoster, client_id: int, signature: bytes, message: bytes, *,
                   what: str) -> None:
        if what != "key advert":
            real_verify(self, client_id, signature, message, what=what)

    monkeypatch.setattr(_RoundRoster, "verify", lax_verify)
    adverts = {i: c.start() for i, c in r.clients.items()}
    for body in adverts.values():
        r.server.receive(body)
    out = _swap_victims_box(r, attacker, victim)(ServerStage.DEAL, r.server.advance())
    sent["deal"] = r.clients[0].handle_bytes(out[0]) or b""
    envelopes = [_read_envelope(raw, None) for raw in
                 split_fields(_unframe(sent["deal"], Kind.DEAL, 3)[2])]
    env = next(e for e in envelopes if e.recipient == victim)
    bundle = open_bundle(env, me=victim, box=attacker, roster=r.roster,
                         session=r.clients[0]._setup, ring=r.clients[0]._ring)
    assert bundle.dealer == 0 and bundle.recipient == victim and bundle.seeds  # shares leaked


def _garbage_to(r: Round, dealer: int, recipients: list[int]) -> None:
    """A malicious enterprise: its envelopes to ``recipients`` hold a bundle with no terms,
    sealed to their own keys and signed with its own roster identity (the server cannot tell)."""
    original = r.clients[dealer].handle_bytes

    def handle(data: bytes) -> bytes | None:
        reply = original(data)
        if reply is None or not reply.startswith(b"SCT1" + bytes([Kind.DEAL])):
            return reply
        digest, me, raw = _unframe(reply, Kind.DEAL, 3)
        envs = []
        c = r.clients[dealer]
        for e in (_read_envelope(x, None) for x in split_fields(raw)):
            if e.recipient in recipients:
                bad = ShareBundle(dealer, e.recipient, {}, None, 0)
                e = seal_bundle(bad, identity=r.identities[dealer].signing_key,
                                recipient_box=e.recipient_box, session=c._setup)
            envs.append(_envelope_bytes(e))
        return _frame(Kind.DEAL, [digest, me, join_fields(envs)])

    r.clients[dealer].handle_bytes = handle  # type: ignore[method-assign]


def test_a_dealer_sending_garbage_is_left_out_and_without_the_reports_the_round_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bad, victims = 4, [0, 1]
    r = Round()
    _garbage_to(r, bad, victims)
    r.run()
    res = r.server.result
    assert res.uploaders == (0, 1, 2, 3) and bad in res.excluded
    assert np.max(np.abs(res.weighted_sum - r.want(range(4)))) <= r.config.max_error
    assert r.clients[0].reported == (bad,) and r.clients[1].reported == (bad,)

    # positive control: a server that ignores the reports keeps the dealer in the sum; the
    # clients that hold no usable shares of it refuse to sign, and the quorum is missed
    r = Round()
    _garbage_to(r, bad, victims)
    real = ServerSession._close_upload

    def ignore_reports(self: ServerSession) -> dict[int, bytes]:
        self._uploads = {i: (w, res_, ()) for i, (w, res_, _) in self._uploads.items()}
        return real(self)

    monkeypatch.setattr(ServerSession, "_close_upload", ignore_reports)
    with pytest.raises(NotEnoughParticipants) as err:
        r.run()
    assert err.value.stage == "statement" and (err.value.have, err.value.need) == (3, 4)
    assert all("holds no shares of uploader(s) [4]" in str(r.refusals[i]) for i in victims)


def test_a_sum_of_too_few_uploaders_is_refused_and_without_the_check_reveals_the_update(
        ) -> None:
    """A malicious server asks for a decryption of one upload alone (``U = {victim}``): every
    client refuses to sign (the policy's min_uploaders). Positive control: with that check
    switched off, the server's combine releases the victim's weighted update exactly."""
    victim = 2
    uploads: dict[int, bytes] = {}

    def small_sum(r: Round, *, check: bool = True) -> Callable[..., Any]:
        def intercept(stage: ServerStage, out: dict[int, bytes]) -> dict[int, bytes]:
            if stage is not ServerStage.STATEMENT:
                return out
            if not check:  # the control: each client's min_uploaders check switched off
                for client in r.clients.values():
                    party = client._require_party()
                    lax = copy.copy(party.policy)
                    object.__setattr__(lax, "min_uploaders", 1)
                    party.policy = lax
            digest, _agg, tagged = _unframe(next(iter(out.values())), Kind.STATEMENT_REQUEST, 3)
            uploads.update({int.from_bytes(x[:4], "big"): x[4:] for x in split_fields(tagged)})
            c = r.clients[0]
            one = decode_upload(uploads[victim], c._ring, roster=c._roster,
                                config_digest=c._setup, round_id=r.config.round, chunks=1,
                                sender=victim).residues
            forged = encode_aggregate(c._ring, config_digest=c._setup, round_id=r.config.round,
                                      uploaders=[victim], residues=one)
            sent = _frame(Kind.STATEMENT_REQUEST, [digest, forged,
                                                   _tagged([(victim, uploads[victim])])])
            return dict.fromkeys(out, sent)
        return intercept

    r = Round()
    with pytest.raises(NotEnoughParticipants):
        r.run(intercept=small_sum(r))
    assert len(r.refusals) == N
    assert all(e.stage == "decryption statement" for e in r.refusals.values())

    r = Round()
    statements: dict[int, bytes] = {}
    original = r.server.receive

    def grab(body: bytes) -> None:  # the attacker collects the statements itself
        if body.startswith(b"SCT1" + bytes([Kind.STATEMENT])):
            _, who, stmt = _unframe(body, Kind.STATEMENT, 3)
            statements[int.from_bytes(who, "big")] = stmt
            return
        original(body)

    r.server.receive = grab  # type: ignore[method-assign]
    with pytest.raises(NotEnoughParticipants):  # the honest server saw no statement
        r.run(intercept=small_sum(r, check=False))
    assert sorted(statements) == list(range(N)), r.refusals
    c = r.clients[0]
    group = list(range(N))
    request = _frame(Kind.PARTIAL_REQUEST, [r.config.digest(), u32(0), b"".join(
        u32(i) for i in group), _tagged(sorted(statements.items()))])
    partials = {}
    for i in group:
        reply = r.clients[i].handle_bytes(request)
        assert reply is not None
        _, _, _, wire = _unframe(reply, Kind.PARTIAL, 4)
        partials[i] = decode_partial(wire, c._ring, roster=c._roster, config_digest=c._setup,
                                     round_id=r.config.round, chunks=1, uploaders=[victim],
                                     decryptors=group, sender=i).residues
    one = decode_upload(uploads[victim], c._ring, roster=c._roster, config_digest=c._setup,
                        round_id=r.config.round, chunks=1, sender=victim).residues
    leaked = combine(c._ring, list(one), partials, decryptors=group, threshold=3,
                     length=LENGTH + 1)
    assert np.max(np.abs(leaked[:LENGTH] - r.weights[victim] * r.updates[victim])) < 1e-3


def test_a_server_relaying_an_envelope_to_the_wrong_recipient_gains_nothing() -> None:
    """The server hands client 0 the envelope dealer 4 sealed to client 1. It is sealed to
    client 1's box key and signed for client 1, so client 0 cannot open it and reports dealer 4;
    the server must leave dealer 4 out of the sum and the round completes without it. (No
    positive control: the envelope's AEAD is bound to the addressee's box key, there is no check
    to switch off; the honest rounds above are the control, the same envelopes open for their
    addressees.)"""
    def misdeliver(stage: ServerStage, out: dict[int, bytes]) -> dict[int, bytes]:
        if stage is not ServerStage.UPLOAD:
            return out
        digest, dealers, raw = _unframe(out[0], Kind.DELIVERY, 3)
        to_1 = next(e for e in (_read_envelope(x, None) for x in
                                split_fields(_unframe(out[1], Kind.DELIVERY, 3)[2]))
                    if e.dealer == 4)
        envs = [_envelope_bytes(to_1) if e.dealer == 4 else _envelope_bytes(e)
                for e in (_read_envelope(x, None) for x in split_fields(raw))]
        return {**out, 0: _frame(Kind.DELIVERY, [digest, dealers, join_fields(envs)])}

    r = Round()
    r.run(intercept=misdeliver)
    assert r.clients[0].reported == (4,)
    res = r.server.result
    assert res.uploaders == (0, 1, 2, 3) and 4 in res.excluded
    assert np.max(np.abs(res.weighted_sum - r.want(range(4)))) <= r.config.max_error


# ---- a config over part of the roster, a weak policy, a sum that does not decode ----------------

def _drive(server: ServerSession, clients: dict[int, ClientSession]) -> Any:
    for c in clients.values():
        server.receive(c.start())
    while server.stage is not ServerStage.DONE:
        out = server.advance()
        for i in sorted(out):
            reply = clients[i].handle_bytes(out[i])
            if reply is not None:
                server.receive(reply)
    return server.result


def test_a_config_over_part_of_the_roster_is_refused_and_without_the_check_leaks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The server names only {victim, two colluders} of a 10-member roster (corrupt_rate 0.2:
    c = 2): the corrupt count, threshold and minimum uploaders would be those of 3 parties, and
    the release minus the colluders' updates is the victim's. Every client and the server refuse
    such a config. Positive control: with the roster-coverage check replaced by the one the round
    had before (ids a subset, corrupt floor over the config's own size), the attack works."""
    identities = [Identity.generate(f"enterprise-{i}") for i in range(10)]
    roster = Roster.of("subset", identities, corrupt_rate=0.2)
    evil = ThresholdRoundConfig(client_ids=(0, 1, 2), round=5, session=secrets.token_bytes(32),
                                roster_digest=roster.digest(), vector_length=LENGTH)
    rng = np.random.default_rng(7)
    ups = {i: rng.uniform(-1, 1, LENGTH) for i in range(3)}
    with pytest.raises(InvalidParameter, match="pinned roster has 10 members"):
        ClientSession(evil, 0, ups[0], identity=identities[0], roster=roster)
    with pytest.raises(InvalidParameter, match="pinned roster has 10 members"):
        ServerSession(evil, roster=roster)
    # a full-roster config with a weaker threshold or minimum: refused too
    for weak, why in (({"threshold": 5}, "at least a majority, 6"),
                      ({"min_uploaders": 4}, r"max\(threshold, corrupt \+ 2\) = 6")):
        cfg = ThresholdRoundConfig.for_roster(roster, round=5, vector_length=LENGTH,
                                              session=secrets.token_bytes(32), **weak)
        with pytest.raises(InvalidParameter, match=why):
            ClientSession(cfg, 0, ups[0], identity=identities[0], roster=roster)

    def old_check(config: ThresholdRoundConfig, r: Roster) -> None:
        if config.corrupt < math.ceil(r.corrupt_rate * config.num_clients):
            raise InvalidParameter("weaker than the roster")

    monkeypatch.setattr(session_module, "_check_policy", old_check)
    server = ServerSession(evil, roster=roster)
    clients = {i: ClientSession(evil, i, ups[i], identity=identities[i], roster=roster)
               for i in range(3)}
    res = _drive(server, clients)
    learned = res.weighted_sum - ups[1] - ups[2]
    assert np.abs(learned - ups[0]).max() <= evil.max_error  # the victim's update, alone


def test_a_sum_that_does_not_decode_ends_the_round_cleanly() -> None:
    """An enterprise uploads a validly signed c0 plus a random polynomial: everyone re-sums the
    signed uploads, signs and decrypts, and the combined sum does not decode. The round ends
    with a ProtocolAbort at 'partial' (nothing released), not an unhandled error that leaves it
    open; the mode adapter turns it into RoundFailed."""
    r = Round()
    srv = r.server
    ring = srv._ring

    bad_client = r.clients[4]
    honest_start = bad_client.handle_bytes

    def tampered(data: bytes) -> bytes | None:
        reply = honest_start(data)
        if reply is None or reply[4] != session_module.Kind.UPLOAD:
            return reply
        f = session_module._unframe(reply, session_module.Kind.UPLOAD, 4)
        d = decode_upload(f[2], ring, roster=srv._roster, config_digest=srv._setup,
                          round_id=r.config.round, chunks=srv._chunks)
        junk = np.stack([ring.uniform(secrets.token_bytes(64)) for _ in d.residues])
        bad = encode_upload(ring, identity=r.identities[4], config_digest=srv._setup,
                            round_id=r.config.round, sender=4,
                            residues=add_mod(d.residues, junk, ring.moduli))
        return session_module._frame(session_module.Kind.UPLOAD, [f[0], f[1], bad, f[3]])

    bad_client.handle_bytes = tampered  # type: ignore[method-assign]
    with pytest.raises(ProtocolAbort, match="does not decode"):
        r.run()
    assert srv.stage is ServerStage.DONE
