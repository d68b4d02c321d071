"""ClientSession.prepare_masked_input: masking ahead of the share delivery never changes a round.

The prepared input assumes every neighbour shares. It must be used when they all did, thrown away
(and the input masked again) when one did not, and refused outside the share stage.
"""

from __future__ import annotations

import numpy as np
import pytest

from secagg.errors import ProtocolAbort
from secagg.masking import MaskingConfig
from tests.masking.harness import Round

N, LENGTH = 5, 300


def _exact(r: Round, survivors: list[int]) -> bool:
    assert r.server is not None
    total = sum(r.values[i].astype(np.uint64) for i in survivors) % (1 << r.config.mod_bits)
    return bool(np.array_equal(r.server.result.total, total[:-1].astype(np.uint32)))


def _round(drop_at_share: set[int]) -> tuple[Round, list[int]]:
    config = MaskingConfig.create(num_clients=N, vector_length=LENGTH, dropout_rate=0.3,
                                  full_graph=True, round=3)
    rng = np.random.default_rng(1)
    r, outbox = Round.start(config, [rng.uniform(-1, 1, LENGTH) for _ in range(N)])
    directory = r.deliver(outbox)
    shares = r.reply(directory, skip=drop_at_share)
    for i in shares:
        r.clients[i].prepare_masked_input()  # as the runtime does, while the others share
    delivery = r.deliver(shares)
    r.run_to_end(r.reply(delivery))
    return r, sorted(shares)


def test_prepared_input_gives_the_exact_sum() -> None:
    r, survivors = _round(set())
    assert survivors == list(range(N))
    assert _exact(r, survivors)


def test_prepared_input_for_a_neighbour_that_then_dropped_is_not_used() -> None:
    r, survivors = _round({2})
    assert 2 not in survivors
    assert _exact(r, survivors)  # the prepared inputs (which included client 2's masks) were redone


def test_prepare_outside_the_share_stage_is_refused() -> None:
    config = MaskingConfig.create(num_clients=3, vector_length=10, full_graph=True, round=0)
    r, _ = Round.start(config, [np.zeros(10)] * 3)
    with pytest.raises(ProtocolAbort, match="needs the key directory handled"):
        r.clients[0].prepare_masked_input()
