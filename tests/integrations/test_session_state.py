"""The sealed export of a client session (secagg.masking.session_state): rounds whose clients are
exported and rebuilt between every message end with the same sum as rounds that never were, and
every blob that is not the latest one of this client, round and stage is refused."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from secagg.errors import AuthenticationFailed, InvalidParameter
from secagg.hazmat.handles import SecretBytes
from secagg.masking import ClientSession, MaskingConfig, ServerSession, Stage, encode_update, wire
from secagg.masking import messages as m
from secagg.masking.session_state import state_key
from secagg.masking.simulate import insecure_simulated_federation

N = 5
#: the stage of the reply a server message asks for (a client dropping there never answers)
_REPLY_STAGE = {m.KeyDirectory: Stage.SHARE, m.ShareDelivery: Stage.MASKED_INPUT,
                m.ConsistencyRequest: Stage.CONSISTENCY, m.UnmaskRequest: Stage.UNMASK}


def _setup(round_: int = 0, session: bytes = b"\x01" * 16):
    roster, identities = insecure_simulated_federation(N)
    config = MaskingConfig.create(num_clients=N, vector_length=40, roster=roster, round=round_,
                                  session=session)
    rng = np.random.default_rng(7)
    values = [encode_update(config, rng.uniform(-1, 1, 40), rng=rng) for _ in range(N)]
    return config, roster, identities, values


def _key(identities, config, i: int, scope: bytes = b"run-1") -> SecretBytes:
    return state_key(identities[i], config=config, client_id=i, scope=scope)


def _run(*, persist: bool, drop: dict[int, Stage] | None = None):
    """One active round over wire bytes; with ``persist`` every client is sealed, dropped and
    rebuilt from its blob before each message it handles. Returns (aggregate, stages seen)."""
    config, roster, identities, values = _setup()
    drop = drop or {}
    clients = {i: ClientSession(config, i, values[i], identity=identities[i], roster=roster)
               for i in range(N)}
    stored: dict[int, tuple[bytes, Stage]] = {}
    seen: set[Stage] = set()

    def persisted(i: int) -> ClientSession:
        if not persist:
            return clients[i]
        blob, stage = stored[i]
        seen.add(stage)
        return ClientSession.restore(blob, _key(identities, config, i), config=config,
                                     client_id=i, identity=identities[i], roster=roster,
                                     stage=stage)

    def store(i: int, session: ClientSession) -> None:
        if persist:
            stored[i] = (session.export_state(_key(identities, config, i)), session.stage)
            del clients[i]  # the object is gone: only the blob carries the session on

    server = ServerSession(config, roster=roster)
    for i in range(N):
        if drop.get(i) is Stage.ADVERTISE:
            continue
        server.receive(wire.encode(clients[i].start()))
        store(i, clients[i])
    while server.stage is not Stage.DONE:
        outgoing = server.advance_bytes()
        for i, data in outgoing.items():
            if drop.get(i) is _REPLY_STAGE[wire.peek_type(data)]:
                continue
            session = persisted(i)
            server.receive(session.handle_bytes(data))
            clients[i] = session
            store(i, session)
    return server.result, seen


@pytest.mark.parametrize("drop", [{}, {3: Stage.MASKED_INPUT}, {1: Stage.UNMASK}],
                         ids=["no-dropout", "drop-before-upload", "drop-before-unmask"])
def test_a_round_rebuilt_from_blobs_at_every_stage_gives_the_same_sum(drop) -> None:
    plain, _ = _run(persist=False, drop=drop)
    rebuilt, seen = _run(persist=True, drop=drop)
    assert seen == {Stage.ADVERTISE, Stage.SHARE, Stage.MASKED_INPUT, Stage.UNMASK}
    assert rebuilt.survivors == plain.survivors
    assert np.array_equal(rebuilt.total, plain.total)
    assert rebuilt.total_weight == plain.total_weight
    dropped = set(range(N)) - set(plain.survivors)
    assert dropped == {i for i, s in drop.items() if s is not Stage.UNMASK}
    _config, *_, values = _setup()
    want = sum(values[i].astype(np.uint64) for i in plain.survivors)
    assert np.array_equal(plain.total, want[:-1].astype(np.uint32))


def _session_after_directory():
    config, roster, identities, values = _setup()
    clients = [ClientSession(config, i, values[i], identity=identities[i], roster=roster)
               for i in range(N)]
    server = ServerSession(config, roster=roster)
    for c in clients:
        server.receive(c.start())
    directory = server.advance_bytes()
    old = clients[0].export_state(_key(identities, config, 0))
    clients[0].handle_bytes(directory[0])
    return config, roster, identities, clients[0], old


def _restore(blob, key, config, roster, identities, *, client_id=0, stage=Stage.SHARE):
    return ClientSession.restore(blob, key, config=config, client_id=client_id,
                                 identity=identities[client_id], roster=roster, stage=stage)


def test_the_latest_blob_restores() -> None:
    config, roster, identities, session, _ = _session_after_directory()
    blob = session.export_state(_key(identities, config, 0))
    again = _restore(blob, _key(identities, config, 0), config, roster, identities)
    assert again.stage is Stage.SHARE and again.client_id == 0
    assert "redacted" in repr(again)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(again)


def test_a_tampered_blob_is_refused() -> None:
    config, roster, identities, session, _ = _session_after_directory()
    blob = bytearray(session.export_state(_key(identities, config, 0)))
    for pos in (5, 20, len(blob) // 2, len(blob) - 1):
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(AuthenticationFailed):
            _restore(bytes(bad), _key(identities, config, 0), config, roster, identities)
    with pytest.raises(AuthenticationFailed):
        _restore(bytes(blob[:-1]), _key(identities, config, 0), config, roster, identities)


def test_an_older_blob_replayed_after_a_newer_one_is_refused() -> None:
    config, roster, identities, _, old = _session_after_directory()
    # the store's high-water mark says SHARE; the replayed blob was sealed at ADVERTISE
    with pytest.raises(AuthenticationFailed):
        _restore(old, _key(identities, config, 0), config, roster, identities, stage=Stage.SHARE)
    # positive control: at the stage it was sealed at, the same blob opens
    assert _restore(old, _key(identities, config, 0), config, roster, identities,
                    stage=Stage.ADVERTISE).stage is Stage.ADVERTISE


def test_a_blob_for_another_client_round_or_run_is_refused() -> None:
    config, roster, identities, session, _ = _session_after_directory()
    blob = session.export_state(_key(identities, config, 0))
    with pytest.raises(AuthenticationFailed):  # client 1 restoring client 0's blob, own key
        _restore(blob, _key(identities, config, 1), config, roster, identities, client_id=1)
    with pytest.raises(AuthenticationFailed):  # client 0's key, but claimed for client 1
        ClientSession.restore(blob, _key(identities, config, 0), config=config, client_id=1,
                              identity=identities[1], roster=roster, stage=Stage.SHARE)
    with pytest.raises(AuthenticationFailed):  # another Flower run
        _restore(blob, _key(identities, config, 0, scope=b"run-2"), config, roster, identities)
    other_round, *_ = _setup(round_=1)
    with pytest.raises(AuthenticationFailed):
        _restore(blob, _key(identities, other_round, 0), other_round, roster, identities)
    other_session, *_ = _setup(session=b"\x02" * 16)
    with pytest.raises(AuthenticationFailed):
        _restore(blob, _key(identities, other_session, 0), other_session, roster, identities)


def test_the_key_is_bound_to_client_round_and_scope() -> None:
    config, _roster, identities, _values = _setup()
    base = _key(identities, config, 0).expose_secret_bytes()
    assert base == _key(identities, config, 0).expose_secret_bytes()  # deterministic
    assert base != _key(identities, config, 1).expose_secret_bytes()
    assert base != _key(identities, config, 0, scope=b"run-2").expose_secret_bytes()
    assert base != _key(identities, _setup(round_=3)[0], 0).expose_secret_bytes()
    assert base != state_key(identities[1], config=config, client_id=0,
                             scope=b"run-1").expose_secret_bytes()


def test_an_attribute_of_an_unsupported_type_is_refused_by_name() -> None:
    config, roster, identities, session, _ = _session_after_directory()
    session._fresh_field = {4: [object()]}  # what a later change to ClientSession might add
    with pytest.raises(InvalidParameter, match=r"_fresh_field\[4\]\[0\] has type builtins.object"):
        session.export_state(_key(identities, config, 0))
    session._fresh_field = np.zeros(3, dtype=np.float64)
    with pytest.raises(InvalidParameter, match="_fresh_field .*float64"):
        session.export_state(_key(identities, config, 0))
    session._fresh_field = (1, b"x", frozenset({2, 3}), {"a": None}, [True])  # supported
    blob = session.export_state(_key(identities, config, 0))
    again = _restore(blob, _key(identities, config, 0), config, roster, identities)
    assert again._fresh_field == (1, b"x", frozenset({2, 3}), {"a": None}, [True])


def test_errors_never_carry_secret_bytes() -> None:
    config, _roster, identities, session, _ = _session_after_directory()
    seed = session._seed.expose_secret_bytes()
    session._fresh_field = [session._seed, object()]
    with pytest.raises(InvalidParameter) as info:
        session.export_state(_key(identities, config, 0))
    text = str(info.value)
    assert seed.hex() not in text and repr(seed) not in text


def test_restore_checks_the_resupplied_identity_against_the_roster() -> None:
    config, roster, identities, session, _ = _session_after_directory()
    blob = session.export_state(_key(identities, config, 0))
    with pytest.raises(InvalidParameter, match="not the one the roster pins"):
        ClientSession.restore(blob, _key(identities, config, 0), config=config, client_id=0,
                              identity=identities[1], roster=roster, stage=Stage.SHARE)
