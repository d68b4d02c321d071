"""``secagg bench e2e`` over the real server: a client that drops out of a timed round is reported,
not a crash (its report has no ``received_at`` for that round)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from secagg_benchmarks import e2e

#: A secagg-client that leaves round 2 (the first timed secure round) without sending anything.
_DROPPING_CLIENT = """
import sys
import secagg_clients.runtime as rt
take_part = rt.RuntimeClient.take_part
def leave_round_2(self, info, update, weight=1):
    if info.index == 2:
        raise rt.Dropped("left out on purpose by the test")
    return take_part(self, info, update, weight)
rt.RuntimeClient.take_part = leave_round_2
from secagg_clients.cli import main
sys.argv[0] = "secagg-client"
sys.exit(main())
"""


@pytest.mark.slow
def test_a_dropout_in_a_timed_round_is_reported_and_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    popen = subprocess.Popen

    def patched(cmd: list[str], *args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        if cmd[1:3] == ["-m", "secagg_clients"] and any(str(c).endswith("token-0") for c in cmd):
            cmd = [cmd[0], "-c", _DROPPING_CLIENT, *cmd[3:]]
        return popen(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", patched)  # the bench starts clients with it
    with pytest.warns(RuntimeWarning, match="dropped out of round.*left out on purpose"):
        res = e2e.run_e2e_bench(clients=4, params=2000, repeats=2, warmup=1, timeout=3.0)
    assert res.dropouts == [{"index": 2, "mode": "masking", "timed": True, "clients": [0],
                             "reasons": {0: "left out on purpose by the test"}}]
    assert len(res.secure_rounds_s) == 1 and len(res.plain_rounds_s) == 2  # round 2 left out
    assert res.survivors == 4  # the secure round that is timed had everyone
    assert res.max_abs_error_vs_plaintext < 1e-2
