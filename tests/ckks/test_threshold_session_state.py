"""The sealed export of a threshold CKKS client session (secagg.ckks.threshold.session_state): a
round whose clients are exported and rebuilt before every message releases the same sum as one
that never was, at whatever stage it happens; a restored twin answers as the original; and every
blob that is not the latest one of this client, round, scope and stage is refused, each refusal
with the positive control that the unaltered blob opens."""

from __future__ import annotations

import functools
import pickle
import secrets
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.ckks.threshold.session import (
    ClientSession,
    ClientStage,
    Kind,
    ServerResult,
    ServerSession,
    ServerStage,
    ThresholdRoundConfig,
    _frame,
    _ids,
    _unframe,
    peek_server,
)
from secagg.ckks.threshold.session_state import state_key
from secagg.errors import AlreadyUsed, AuthenticationFailed, InvalidParameter, ProtocolAbort
from secagg.hazmat.kdf import Purpose
from secagg.hazmat.sealed_state import derive_state_key
from secagg.identity import Identity, Roster
from secagg.masking import MaskingConfig
from secagg.masking.session_state import state_key as masking_state_key

N = 5  # t = 3, quorum 4, min_uploaders 3
LENGTH = 3
SCOPE = b"run-1"
STAGES = (ClientStage.NEW, ClientStage.ADVERTISED, ClientStage.DEALT, ClientStage.UPLOADED,
          ClientStage.SIGNED, ClientStage.DECRYPTED)
_RNG = np.random.default_rng(11)
UPDATES = {i: _RNG.uniform(-1, 1, LENGTH) for i in range(N)}
WEIGHTS = {i: float(_RNG.integers(1, 5)) for i in range(N)}


@functools.lru_cache(maxsize=1)
def federation() -> tuple[tuple[Identity, ...], Roster]:
    identities = tuple(Identity.generate(f"enterprise-{i}") for i in range(N))
    return identities, Roster.of("threshold-state", identities)


def make_config(round_: int = 7, session: bytes | None = None) -> ThresholdRoundConfig:
    _, roster = federation()
    return ThresholdRoundConfig.for_roster(roster, round=round_, vector_length=LENGTH,
                                           session=session or secrets.token_bytes(32),
                                           weight_bound=4.0)


def key_for(config: ThresholdRoundConfig, i: int, scope: bytes = SCOPE) -> Any:
    return state_key(federation()[0][i], config=config, client_id=i, scope=scope)


def restore(blob: bytes, config: ThresholdRoundConfig, i: int, stage: ClientStage, *,
            key: Any = None, partials_sent: int | None = None,
            identity: Identity | None = None) -> ClientSession:
    identities, roster = federation()
    return ClientSession.restore(blob, key_for(config, i) if key is None else key, config=config,
                                 client_id=i, identity=identity or identities[i], roster=roster,
                                 stage=stage, partials_sent=partials_sent)


Carry = Callable[[int, ClientSession], ClientSession]


def play(config: ThresholdRoundConfig, *, carry: Carry | None = None, retry: bool = False,
         log: list[tuple[int, bytes]] | None = None,
         ) -> tuple[ServerResult, dict[int, ClientSession]]:
    """One round in memory; ``carry(i, session)`` stands between client ``i`` and each message it
    handles (and once after the round). ``retry``: client 4 never sends its partial decryption,
    so the others decrypt a second time. ``log`` gets every server message with its client."""
    identities, roster = federation()
    clients = {i: ClientSession(config, i, UPDATES[i], weight=WEIGHTS[i],
                                identity=identities[i], roster=roster) for i in range(N)}
    server = ServerSession(config, roster=roster)

    def answer(i: int, message: bytes | None) -> bytes | None:
        if carry is not None:
            clients[i] = carry(i, clients[i])
        return clients[i].start() if message is None else clients[i].handle_bytes(message)

    for i in range(N):
        advert = answer(i, None)
        assert advert is not None
        server.receive(advert)
    while server.stage is not ServerStage.DONE:
        out = server.advance()
        for i in sorted(out):
            if retry and i == 4 and server.stage is ServerStage.PARTIAL and server.attempt == 0:
                continue
            if log is not None:
                log.append((i, out[i]))
            reply = answer(i, out[i])
            if reply is not None:
                server.receive(reply)
    if carry is not None:
        for i in range(N):
            clients[i] = carry(i, clients[i])
    return server.result, clients


def exporting(config: ThresholdRoundConfig, seen: set[tuple[ClientStage, int]],
              only: Callable[[int, ClientSession], bool] = lambda i, s: True) -> Carry:
    """Seal the session, drop the object, and go on with the one rebuilt from the blob and the
    (stage, partials sent) mark kept beside it."""
    def carry(i: int, session: ClientSession) -> ClientSession:
        if not only(i, session):
            return session
        mark = (session.stage, session.partials_sent)
        blob = session.export_state(key_for(config, i))
        del session
        seen.add(mark)
        return restore(blob, config, i, mark[0], partials_sent=mark[1])
    return carry


@functools.lru_cache(maxsize=2)
def uninterrupted(retry: bool) -> ServerResult:
    return play(make_config(), retry=retry)[0]


def same_release(got: ServerResult, want: ServerResult) -> None:
    assert np.array_equal(got.weighted_sum, want.weighted_sum)  # exact: the digit embedding
    assert got.total_weight == want.total_weight == sum(WEIGHTS.values())
    assert (got.uploaders, got.signers, got.decryptors, got.attempts) == (
        want.uploaders, want.signers, want.decryptors, want.attempts)


# ---- whole rounds ------------------------------------------------------------------------------

@pytest.mark.parametrize("retry", [False, True], ids=["one-decryption", "with-retry"])
def test_a_round_rebuilt_from_blobs_before_every_message_releases_the_same_sum(retry: bool) -> None:
    config = make_config()
    seen: set[tuple[ClientStage, int]] = set()
    result, clients = play(config, carry=exporting(config, seen), retry=retry)
    same_release(result, uninterrupted(retry))
    assert np.max(np.abs(result.weighted_sum - sum(WEIGHTS[i] * UPDATES[i] for i in range(N)))) \
        <= config.max_error
    marks = {(s, 0) for s in STAGES[:-1]} | {(ClientStage.DECRYPTED, 1)}
    assert seen == (marks | {(ClientStage.DECRYPTED, 2)} if retry else marks)
    for i, c in clients.items():
        if not (retry and i == 4):
            assert c.result.uploaders == result.uploaders
            assert c.result.partials_sent == (2 if retry else 1)
            # the once-per-round statement and the smudging budget spent travel with the secret
            assert c._party is not None and set(c._party._statements) == {config.round}
            assert c._party._decrypted_chunks == c.result.partials_sent \
                * c._party._statements[config.round].chunks


def test_a_restored_twin_answers_as_the_original() -> None:
    """Before each message, a twin is restored from the original's blob and handed the message
    first. The advert and the signed statement are deterministic (Ed25519 over the same bytes)
    and must be equal; the deal, upload and partial draw fresh randomness (share seeds,
    encryption and smudging noise), so only their frame must agree. A twin restored after a
    message answers that same message again from its replay cache, byte for byte."""
    config = make_config()
    checked: list[str] = []

    def carry(i: int, session: ClientSession) -> ClientSession:
        if i != 0:
            return session
        if isinstance(session, _Compare):
            session = session.original
        blob = session.export_state(key_for(config, 0))
        twin = restore(blob, config, 0, session.stage, partials_sent=session.partials_sent)
        return _Compare(session, twin, config, checked)  # type: ignore[return-value]

    _, clients = play(config, carry=carry)
    last = clients[0]
    assert isinstance(last, _Compare)
    assert last.twin.result == last.original.result  # restored after the round
    assert checked == ["advert", "key request", "delivery", "statement request",
                       "partial request"]


class _Compare:
    """A session and its twin restored from its blob: each message goes to both (the twin
    first), their replies are compared, and the original's travels on."""

    def __init__(self, original: ClientSession, twin: ClientSession,
                 config: ThresholdRoundConfig, checked: list[str]) -> None:
        self.original, self.twin, self.config, self.checked = original, twin, config, checked

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)

    def start(self) -> bytes:
        mine, theirs = self.twin.start(), self.original.start()
        assert mine == theirs
        self.checked.append("advert")
        return theirs

    def handle_bytes(self, data: bytes) -> bytes | None:
        mine, theirs = self.twin.handle_bytes(data), self.original.handle_bytes(data)
        assert mine is not None and theirs is not None
        kind = peek_server(data)
        assert kind is not None
        self.checked.append(kind)
        if kind == "statement request":
            assert mine == theirs
        else:
            assert mine[:5] == theirs[:5] and len(mine) == len(theirs)
        blob = self.original.export_state(key_for(self.config, 0))
        again = restore(blob, self.config, 0, self.original.stage,
                        partials_sent=self.original.partials_sent)
        assert again.handle_bytes(data) == theirs  # the replay cache travels
        return theirs


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stage=st.sampled_from(STAGES), who=st.sets(st.integers(0, N - 1), min_size=1),
       retry=st.booleans())
def test_an_export_at_any_stage_keeps_the_round(stage: ClientStage, who: set[int],
                                                 retry: bool) -> None:
    """Clients ``who`` are exported and rebuilt once, when they reach ``stage`` (before the
    message of the next stage, or after the round for ``decrypted``); the release is the same."""
    config = make_config()
    seen: set[tuple[ClientStage, int]] = set()
    done: set[int] = set()

    def only(i: int, session: ClientSession) -> bool:
        if i in who and i not in done and session.stage is stage:
            done.add(i)
            return True
        return False

    result, clients = play(config, carry=exporting(config, seen, only), retry=retry)
    same_release(result, uninterrupted(retry))
    never = {4} if retry and stage is ClientStage.DECRYPTED else set()  # it sent no partial
    assert {s for s, _ in seen} == ({stage} if who - never else set())
    assert done == who - never
    if stage is ClientStage.DECRYPTED:
        for i in who - ({4} if retry else set()):
            assert clients[i].result.uploaders == result.uploaders


# ---- refusals ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _signed() -> tuple[ThresholdRoundConfig, dict[str, Any]]:
    """Client 0's blobs at ``advertised`` and ``signed`` (secret, bundles and a signed
    statement) and its session object, which went on to decrypt (``decrypted``)."""
    config = make_config()
    blobs: dict[str, Any] = {}

    def carry(i: int, session: ClientSession) -> ClientSession:
        if i == 0 and session.stage in (ClientStage.ADVERTISED, ClientStage.SIGNED):
            blobs.setdefault(session.stage.value, session.export_state(key_for(config, 0)))
            if session.stage is ClientStage.SIGNED:
                blobs.setdefault("session", session)
        return session

    play(config, carry=carry)
    return config, blobs


def _latest() -> tuple[ThresholdRoundConfig, bytes]:
    config, blobs = _signed()
    return config, blobs["signed"]


def test_the_latest_blob_restores_redacted_and_unpicklable() -> None:
    config, blob = _latest()
    again = restore(blob, config, 0, ClientStage.SIGNED)
    assert again.stage is ClientStage.SIGNED and again.client_id == 0
    assert again._party is not None and again._party.dealers == frozenset(range(N))
    assert "redacted" in repr(again) and "redacted" in repr(again._party)
    for obj in (again, again._party):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(obj)
    assert blob[:4] == b"SCTS" and blob[4] == 1


@settings(max_examples=25, deadline=None)
@given(where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_a_flipped_byte_anywhere_is_refused(where: float, bit: int) -> None:
    config, blob = _latest()
    pos = int(where * len(blob))
    bad = bytearray(blob)
    bad[pos] ^= 1 << bit
    if pos == 4:  # the format version: refused as a version this code does not read
        with pytest.raises(InvalidParameter, match="format version"):
            restore(bytes(bad), config, 0, ClientStage.SIGNED)
        return
    with pytest.raises(AuthenticationFailed):
        restore(bytes(bad), config, 0, ClientStage.SIGNED)


def test_flipped_bytes_in_every_part_and_a_truncation_are_refused() -> None:
    config, blob = _latest()
    restore(blob, config, 0, ClientStage.SIGNED)  # positive control
    for pos in (0, 3, 5, 16, 17, len(blob) // 2, len(blob) - 17, len(blob) - 1):  # magic, nonce,
        bad = bytearray(blob)                                                     # body, tag
        bad[pos] ^= 0x80
        with pytest.raises(AuthenticationFailed):
            restore(bytes(bad), config, 0, ClientStage.SIGNED)
    for cut in (blob[:-1], blob[:30], blob[:5], b""):
        with pytest.raises(AuthenticationFailed):
            restore(cut, config, 0, ClientStage.SIGNED)


def test_an_older_blob_replayed_after_a_newer_one_is_refused() -> None:
    config, blobs = _signed()
    old = blobs["advertised"]
    with pytest.raises(AuthenticationFailed):  # the store's mark says signed
        restore(old, config, 0, ClientStage.SIGNED)
    for stage in (ClientStage.NEW, ClientStage.DEALT, ClientStage.DECRYPTED):
        with pytest.raises(AuthenticationFailed):
            restore(old, config, 0, stage)
    # positive control: at the mark it was sealed at, the same blob opens
    assert restore(old, config, 0, ClientStage.ADVERTISED).stage is ClientStage.ADVERTISED


def test_an_export_from_before_a_retry_is_refused_after_it_and_would_decrypt_a_third_time(
        ) -> None:
    """A retry keeps the stage at ``decrypted``, so the mark also counts partial decryptions.
    Positive control: the older blob, opened at its own mark, answers a second retry for
    another decrypting set, a third decryption of a key planned for two; the newer one refuses."""
    config = make_config()
    blobs: dict[int, bytes] = {}

    def carry(i: int, session: ClientSession) -> ClientSession:
        if i == 0 and session.stage is ClientStage.DECRYPTED:
            blobs.setdefault(session.partials_sent, session.export_state(key_for(config, 0)))
        return session

    log: list[tuple[int, bytes]] = []
    result, _ = play(config, carry=carry, retry=True, log=log)
    assert result.attempts == 2 and set(blobs) == {1, 2}
    with pytest.raises(AuthenticationFailed):  # the mark says two partials were sent
        restore(blobs[1], config, 0, ClientStage.DECRYPTED, partials_sent=2)
    with pytest.raises(AuthenticationFailed):  # the default mark at decrypted is one
        restore(blobs[2], config, 0, ClientStage.DECRYPTED)
    newer = restore(blobs[2], config, 0, ClientStage.DECRYPTED, partials_sent=2)
    older = restore(blobs[1], config, 0, ClientStage.DECRYPTED, partials_sent=1)
    retry_request = [data for i, data in log if i == 0][-1]
    fields = _unframe(retry_request, Kind.PARTIAL_REQUEST, 4)
    assert int.from_bytes(fields[1], "big") == 1  # attempt 1: the retry
    assert newer.handle_bytes(retry_request) is not None  # answered already: from the cache
    other = _frame(Kind.PARTIAL_REQUEST, [fields[0], fields[1], _ids((0, 1, 2)), fields[3]])
    assert older.handle_bytes(other) is not None  # what the mark prevents
    assert older.partials_sent == 2
    with pytest.raises(ProtocolAbort, match="attempt 1"):
        newer.handle_bytes(other)


def test_a_blob_for_another_client_round_config_or_scope_is_refused() -> None:
    config, blob = _latest()
    assert restore(blob, config, 0, ClientStage.SIGNED).client_id == 0  # positive control
    with pytest.raises(AuthenticationFailed):  # client 1, its own key
        restore(blob, config, 1, ClientStage.SIGNED)
    with pytest.raises(AuthenticationFailed):  # client 0's key, claimed for client 1
        restore(blob, config, 1, ClientStage.SIGNED, key=key_for(config, 0))
    with pytest.raises(AuthenticationFailed):  # another transport run
        restore(blob, config, 0, ClientStage.SIGNED, key=key_for(config, 0, scope=b"run-2"))
    with pytest.raises(AuthenticationFailed):  # the right key, another round's config
        restore(blob, make_config(round_=8, session=config.session), 0, ClientStage.SIGNED,
                key=key_for(config, 0))
    for other in (make_config(round_=8, session=config.session), make_config(round_=7)):
        with pytest.raises(AuthenticationFailed):  # another round or session nonce, its key
            restore(blob, other, 0, ClientStage.SIGNED)


def test_a_masking_state_key_cannot_open_a_threshold_blob() -> None:
    config, blob = _latest()
    identities, roster = federation()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dropout warning of a 5-client masking round
        masking = MaskingConfig.create(num_clients=N, vector_length=LENGTH, roster=roster,
                                       round=config.round, session=config.session[:16])
    keys = {
        "masking key": masking_state_key(identities[0], config=masking, client_id=0, scope=SCOPE),
        # masking's labels over this very config: only the protocol and purpose differ
        "masking labels": derive_state_key(identities[0].signing_key,
                                           protocol="secagg-session-state",
                                           purpose=Purpose.SESSION_STATE, version=1,
                                           config_digest=config.digest(), round=config.round,
                                           client_id=0, scope=SCOPE),
    }
    mine = key_for(config, 0).expose_secret_bytes()
    for name, key in keys.items():
        assert key.expose_secret_bytes() != mine, name
        with pytest.raises(AuthenticationFailed):
            restore(blob, config, 0, ClientStage.SIGNED, key=key)
    assert restore(blob, config, 0, ClientStage.SIGNED).stage is ClientStage.SIGNED


def test_the_key_is_bound_to_client_round_and_scope() -> None:
    config, _ = _latest()
    identities, _ = federation()
    base = key_for(config, 0).expose_secret_bytes()
    assert base == key_for(config, 0).expose_secret_bytes()  # deterministic
    assert base != key_for(config, 1).expose_secret_bytes()
    assert base != key_for(config, 0, scope=b"run-2").expose_secret_bytes()
    assert base != key_for(make_config(round_=8, session=config.session), 0).expose_secret_bytes()
    assert base != state_key(identities[1], config=config, client_id=0,
                             scope=SCOPE).expose_secret_bytes()


def test_restore_runs_the_checks_init_runs() -> None:
    config, blob = _latest()
    identities, roster = federation()
    with pytest.raises(InvalidParameter, match="not client 0's entry in the pinned roster"):
        restore(blob, config, 0, ClientStage.SIGNED, identity=identities[1])
    strangers = [Identity.generate(f"stranger-{i}") for i in range(N)]
    other_roster = Roster.of("other", strangers)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"roster": other_roster}, "another roster"),
        ({"client_id": 9}, "not in the config's client_ids"),
        ({"config": ThresholdRoundConfig.for_roster(roster, round=7, vector_length=LENGTH,
                                                    session=config.session, weight_bound=4.0,
                                                    threshold=2)}, "at least a majority"),
    ]
    for change, why in cases:
        args: dict[str, Any] = {"config": config, "client_id": 0, "identity": identities[0],
                                "roster": roster, **change}
        with pytest.raises(InvalidParameter, match=why):
            ClientSession(args["config"], args["client_id"], UPDATES[0], weight=1.0,
                          identity=args["identity"], roster=args["roster"])
        with pytest.raises(InvalidParameter, match=why):
            ClientSession.restore(blob, key_for(config, 0), stage=ClientStage.SIGNED, **args)
    for stage, partials in ((ClientStage.SIGNED, 1), (ClientStage.DECRYPTED, 0),
                            (ClientStage.DECRYPTED, 3)):
        with pytest.raises(InvalidParameter, match="partials_sent"):
            restore(blob, config, 0, stage, partials_sent=partials)
    with pytest.raises(InvalidParameter, match="ClientStage"):
        restore(blob, config, 0, "signed")  # type: ignore[arg-type]


def test_a_refused_session_is_not_exported() -> None:
    config = make_config()
    identities, roster = federation()
    session = ClientSession(config, 0, UPDATES[0], identity=identities[0], roster=roster)
    session.start()
    with pytest.raises(ProtocolAbort):
        session.handle_bytes(b"SCK1" + bytes([2]) + b"\x00" * 12)  # a malformed key request
    assert session.stage is ClientStage.FAILED and session._party is None
    with pytest.raises(InvalidParameter, match="refused and has dropped its secret"):
        session.export_state(key_for(config, 0))
    with pytest.raises(InvalidParameter, match="never exported"):
        restore(b"SCTS\x01", config, 0, ClientStage.FAILED)
    with pytest.raises(AlreadyUsed):
        session.handle_bytes(b"SCK1" + bytes([2]) + b"\x01" * 12)


# ---- what errors say, and what the codec refuses ----------------------------------------------

def _secrets_of(session: ClientSession) -> list[str]:
    """Hex snippets of everything secret a signed session holds."""
    party = session._party
    assert party is not None
    out = [party._secret.tobytes()[:24].hex(),
           session._box.export_private_bytes_for_sharing().expose_secret_bytes().hex()]
    for bundle in party._bundles.values():
        out += [seed.hex() for seed in list(bundle.seeds.values())[:2]]
        if bundle.correction is not None:
            out.append(bundle.correction.tobytes()[:24].hex())
    return out


def test_errors_carry_no_secret_bytes() -> None:
    config, blobs = _signed()
    session = blobs["session"]
    secret_hex = _secrets_of(session)
    assert len(secret_hex) > 2 * N
    texts = []

    def refused(call: Callable[[], Any], error: type[Exception]) -> None:
        with pytest.raises(error) as info:
            call()
        texts.append(str(info.value) + repr(info.value))

    blob = blobs["signed"]
    bad = bytearray(blob)
    bad[len(blob) // 2] ^= 1
    refused(lambda: restore(bytes(bad), config, 0, ClientStage.SIGNED), AuthenticationFailed)
    refused(lambda: restore(blob, config, 0, ClientStage.DECRYPTED), AuthenticationFailed)
    refused(lambda: restore(blob[:4] + b"\x09" + blob[5:], config, 0, ClientStage.SIGNED),
            InvalidParameter)
    refused(lambda: restore(blob, config, 0, ClientStage.SIGNED,
                            identity=federation()[0][2]), InvalidParameter)
    party = session._party
    party._fresh = party._secret.astype(np.uint32)  # the secret, in a dtype the codec refuses
    refused(lambda: session.export_state(key_for(config, 0)), InvalidParameter)
    party._fresh = [party._secret, object()]
    refused(lambda: session.export_state(key_for(config, 0)), InvalidParameter)
    del party._fresh
    assert len(texts) == 6
    for text in texts:
        for snippet in secret_hex:
            assert snippet not in text


def test_an_attribute_of_an_unsupported_type_is_refused_by_name() -> None:
    config, blobs = _signed()
    session = blobs["session"]
    key = key_for(config, 0)
    try:
        session._fresh_field = {4: [object()]}  # what a later change to ClientSession might add
        with pytest.raises(InvalidParameter,
                           match=r"_fresh_field\[4\]\[0\] has type builtins\.object"):
            session.export_state(key)
        session._fresh_field = np.zeros(3, dtype=np.float32)
        with pytest.raises(InvalidParameter, match=r"_fresh_field is a numpy array of dtype "
                           r"float32; only uint64, int64, float64"):
            session.export_state(key)
        del session._fresh_field
        session._party._fresh = {"x": 1.5}  # inside the party: the path names it
        with pytest.raises(InvalidParameter, match=r"_party\._fresh\[str\] has type "
                           r"builtins\.float"):
            session.export_state(key)
        del session._party._fresh
        arrays = (np.arange(6, dtype=np.uint64).reshape(2, 3) * (2**63 // 3),
                  np.array([[-5], [2**62]], dtype=np.int64), np.array([0.5, -1e300, np.inf]))
        session._fresh_field = (arrays, frozenset({2, 3}), {"a": None}, [True])  # supported
        again = restore(session.export_state(key), config, 0, session.stage,
                        partials_sent=session.partials_sent)
        for got, want in zip(again._fresh_field[0], arrays, strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want)
        assert again._fresh_field[1:] == (frozenset({2, 3}), {"a": None}, [True])
    finally:
        session.__dict__.pop("_fresh_field", None)
        session._party.__dict__.pop("_fresh", None)
