"""The threshold-CKKS client state kept in Flower's ``Context.state`` (no simulation engine):
a session carried through every stage of an in-memory round, and the partial-decryption count
that keeps an older blob of the same stage from buying a decryption beyond the round's budget."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Context, RecordDict

from secagg.ckks.threshold.session import (
    ATTEMPTS,
    ClientSession,
    ClientStage,
    ServerSession,
    ServerStage,
    ThresholdRoundConfig,
)
from secagg.errors import AlreadyUsed, AuthenticationFailed, ProtocolAbort
from secagg.identity import Identity, Roster
from secagg.integrations.flower import Credentials
from secagg.integrations.flower.client_state import THRESHOLD_STATE_RECORD, ThresholdRoundState

N, LENGTH = 5, 8


def _round() -> tuple[list[Identity], Roster, ThresholdRoundConfig]:
    identities = [Identity.generate(f"enterprise-{i}") for i in range(N)]
    roster = Roster.of("flower-ckks-state", identities)
    config = ThresholdRoundConfig.for_roster(roster, round=3, vector_length=LENGTH,
                                             session=secrets.token_bytes(32), weight_bound=4.0)
    return identities, roster, config


def _context() -> Context:
    return Context(run_id=11, node_id=100, node_config={}, state=RecordDict(), run_config={})


def test_a_session_kept_in_context_state_survives_every_stage_and_a_retry() -> None:
    """Client 0 lives only in Context.state between messages (restored from its sealed blob for
    each one); client 4 vanishes before decrypting, so the server retries; the release is the
    exact weighted sum. Then the attempt-0 blob written back after the retry is refused, and
    (positive control) that same blob restored without the state's partial count answers the
    retry once more: a third partial decryption, past the round's budget of two."""
    identities, roster, config = _round()
    rng = np.random.default_rng(5)
    updates = {i: rng.uniform(-1, 1, LENGTH) for i in range(N)}
    weights = {i: float(i % 3 + 1) for i in range(N)}
    server = ServerSession(config, roster=roster)
    live = {i: ClientSession(config, i, updates[i], weight=weights[i], identity=identities[i],
                             roster=roster) for i in range(1, N)}
    ctx = _context()
    creds = Credentials(identities[0], roster)
    state = ThresholdRoundState(ctx, creds)
    state.begin(config)
    first = ClientSession(config, 0, updates[0], weight=weights[0], identity=identities[0],
                          roster=roster)
    server.receive(first.start())
    state.save(first)
    del first  # from here on, client 0 exists only as its sealed blob
    for c in live.values():
        server.receive(c.start())
    attempt_zero_blob: bytes | None = None
    retry_request = b""
    while server.stage is not ServerStage.DONE:
        out = server.advance()
        retrying = server.stage is ServerStage.PARTIAL and server.attempt == 1
        for i in sorted(out):
            if server.stage is ServerStage.PARTIAL and i == 4:
                continue  # vanished before its partial decryption
            if i == 0:
                if retrying:
                    attempt_zero_blob = bytes(ctx.state.config_records[THRESHOLD_STATE_RECORD]
                                              ["blob"])
                    retry_request = out[0]
                session = ThresholdRoundState(ctx, creds).load()
                reply = session.handle_bytes(out[0])
                ThresholdRoundState(ctx, creds).save(session)
            else:
                reply = live[i].handle_bytes(out[i])
            assert reply is not None
            server.receive(reply)
    result = server.result
    assert result.attempts == 2 and 4 not in result.decryptors and 0 in result.decryptors
    want = sum(weights[i] * updates[i] for i in range(N))
    assert np.max(np.abs(result.weighted_sum - want)) <= config.max_error
    record = ctx.state.config_records[THRESHOLD_STATE_RECORD]
    assert record["stage"] == ClientStage.DECRYPTED.value and record["partials"] == ATTEMPTS

    # the rollback: the attempt-0 blob (same stage, 'decrypted') written back after the retry
    assert attempt_zero_blob is not None
    record["blob"] = attempt_zero_blob
    with pytest.raises(AuthenticationFailed):
        ThresholdRoundState(ctx, creds).load()

    # positive control: the same blob restored with the count it was sealed at (what a store
    # rolling back the count with the blob would present) answers the retry again
    key = ThresholdRoundState(ctx, creds)._key_for(config)
    old = ClientSession.restore(attempt_zero_blob, key, config=config, client_id=0,
                                identity=identities[0], roster=roster,
                                stage=ClientStage.DECRYPTED, partials_sent=1)
    assert old.partials_sent == 1
    assert old.handle_bytes(retry_request) is not None
    assert old.partials_sent == ATTEMPTS  # plus the live session's second one: three in all


def test_a_second_setup_for_the_same_round_is_refused() -> None:
    identities, roster, config = _round()
    ctx = _context()
    state = ThresholdRoundState(ctx, Credentials(identities[0], roster))
    state.begin(config)
    with pytest.raises(AlreadyUsed, match="refusing to set it up twice"):
        state.begin(config)


def test_a_refused_session_leaves_no_blob_and_answers_nothing_more() -> None:
    identities, roster, config = _round()
    ctx = _context()
    creds = Credentials(identities[0], roster)
    state = ThresholdRoundState(ctx, creds)
    state.begin(config)
    session = ClientSession(config, 0, np.zeros(LENGTH), weight=1.0, identity=identities[0],
                            roster=roster)
    session.start()
    state.save(session)
    # a well-formed key request of another round (its own five clients' adverts)
    other = ThresholdRoundConfig.for_roster(roster, round=4, vector_length=LENGTH,
                                            session=secrets.token_bytes(32), weight_bound=4.0)
    server = ServerSession(other, roster=roster)
    for i in range(N):
        server.receive(ClientSession(other, i, np.zeros(LENGTH), weight=1.0,
                                     identity=identities[i], roster=roster).start())
    request = server.advance()[0]
    restored = state.load()
    with pytest.raises(ProtocolAbort, match="another round config"):
        restored.handle_bytes(request)
    state.save(restored)
    record = ctx.state.config_records[THRESHOLD_STATE_RECORD]
    assert record["stage"] == ClientStage.FAILED.value and "blob" not in record
    with pytest.raises(AlreadyUsed, match="finished"):
        state.load()
