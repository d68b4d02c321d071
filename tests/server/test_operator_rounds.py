"""The operator's round commands and the model layout binding, over a real server process:
``secagg-server round open/list/show/cancel`` with the operator token, rounds opened from a
model layout (vector_length derived, a disagreeing one refused, an upper bound), enterprises
whose models differ in layout but not in size refusing the round with both digests named, the
result metadata as :class:`secagg.contract.ReleasedAggregate`, and a cancelled round ending
for its clients with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from secagg.encoding import ParamSpec, TensorSpec
from secagg_clients.runtime import Dropped, RoundRefused
from secagg_server.operator import Operator, OperatorError

from .conftest import Federation, updates

LAYOUT_A = ParamSpec((TensorSpec("lora_A", (4, 6), "float32"), TensorSpec("head", (8,), "float32")))
LAYOUT_B = ParamSpec((TensorSpec("lora_A", (6, 4), "float32"), TensorSpec("head", (8,), "float32")))


def _cli(fed: Federation, *argv: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SECAGG_OPERATOR_TOKEN": fed.operator if token is None else token}
    return subprocess.run([sys.executable, "-m", "secagg_server", "round", *argv, "--server",
                           fed.server.url], capture_output=True, text=True, timeout=60, env=env)


def test_layouts_of_equal_size_are_refused_naming_both(fed3: Federation) -> None:
    assert LAYOUT_A.size == LAYOUT_B.size and LAYOUT_A.digest() != LAYOUT_B.digest()
    with Operator(fed3.server.url, fed3.operator) as op:
        with pytest.raises(OperatorError, match="vector_length.*31.*32 parameters"):
            op.open_round("masking", {"vector_length": 31}, layout=LAYOUT_A)
        with pytest.raises(OperatorError, match="2\\^28"):
            op.open_round("masking", {"vector_length": 2**28 + 1})
        info = op.open_round("masking", {}, layout=LAYOUT_A, stage_timeout_s=5)
        assert info["config"]["vector_length"] == LAYOUT_A.size
        assert info["config"]["layout_digest"] == LAYOUT_A.digest().hex()
        ups = updates(3, LAYOUT_A.size)
        results: dict[int, Any] = {}

        def take_part(i: int, layout: ParamSpec) -> None:
            try:
                with fed3.runtime(i, poll_wait=2.0, layout=layout) as rt:
                    results[i] = rt.run_round(ups[i], timeout=30)
            except Dropped as exc:
                results[i] = exc

        threads = [threading.Thread(target=take_part, args=(i, lay)) for i, lay in
                   enumerate((LAYOUT_A, LAYOUT_A, LAYOUT_B))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        refused = results[2]
        assert isinstance(refused, RoundRefused)
        assert LAYOUT_A.digest().hex()[:16] in refused.reason
        assert LAYOUT_B.digest().hex()[:16] in refused.reason
        status = op.wait(info["round_id"], timeout=60)
        if status["status"] == "done":  # the two enterprises of layout A completed without it
            meta, _ = op.result(info["round_id"])
            assert meta.layout_digest == LAYOUT_A.digest().hex()
            assert meta.mode == "masking" and meta.round_id == info["round_id"]
            assert 2 not in meta.survivors
            got = results[0].weighted_sum
            assert np.allclose(got, ups[0] + ups[1], atol=1e-3)


def test_round_commands_open_list_show_cancel(fed3: Federation, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "layout.json").write_text(LAYOUT_A.to_json())
    out = _cli(fed3, "open", "--mode", "masking", "--from-model", str(model), "--option",
               "clip=2.0", "--stage-timeout", "30", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["config"]["vector_length"] == LAYOUT_A.size
    assert info["config"]["layout_digest"] == LAYOUT_A.digest().hex()
    rid = info["round_id"]
    listed = _cli(fed3, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["round_id"] == rid and row["mode"] == "masking" and row["status"] == "open"
    assert row["stage"] and row["awaiting_clients"] == [0, 1, 2]
    human = _cli(fed3, "list")
    assert f"round {rid}" in human.stdout and "awaiting clients [0, 1, 2]" in human.stdout
    shown = _cli(fed3, "show", str(rid), "--json")
    assert json.loads(shown.stdout)["round_id"] == rid

    # a client waiting in the round hears it was cancelled
    heard: list[BaseException] = []

    def client() -> None:
        try:
            with fed3.runtime(0, poll_wait=2.0, layout=LAYOUT_A) as rt:
                rt.run_round(np.zeros(LAYOUT_A.size, np.float32), timeout=30)
        except BaseException as exc:
            heard.append(exc)

    t = threading.Thread(target=client)
    t.start()
    cancelled = _cli(fed3, "cancel", str(rid))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "failed" in cancelled.stdout and "cancelled" in cancelled.stdout
    t.join(60)
    assert heard and isinstance(heard[0], Dropped) and "cancelled" in str(heard[0])
    again = _cli(fed3, "cancel", str(rid))
    assert again.returncode == 2 and "cancelled" in again.stderr

    # refusals are one line: a layout that disagrees, too large, no token, a missing model
    bad = _cli(fed3, "open", "--mode", "masking", "--layout", str(model / "layout.json"),
               "--option", "vector_length=7")
    assert bad.returncode == 2 and "vector_length" in bad.stderr and "32 parameters" in bad.stderr
    big = _cli(fed3, "open", "--mode", "ckks", "--option", f"vector_length={2**28 + 1}")
    assert big.returncode == 2 and "2^28" in big.stderr
    missing = _cli(fed3, "open", "--mode", "masking", "--from-model", str(tmp_path))
    assert missing.returncode == 2 and "layout export" in missing.stderr
    env = {k: v for k, v in os.environ.items() if k != "SECAGG_OPERATOR_TOKEN"}
    none = subprocess.run([sys.executable, "-m", "secagg_server", "round", "list", "--server",
                           fed3.server.url], capture_output=True, text=True, timeout=60, env=env)
    assert none.returncode == 2 and "SECAGG_OPERATOR_TOKEN" in none.stderr
    client_token = _cli(fed3, "list", token=fed3.tokens[0])
    assert client_token.returncode == 2 and "operator" in client_token.stderr


@pytest.mark.parametrize("argv", [["--help"], ["round", "open", "--help"]])
def test_help_loads_neither_fastapi_nor_tenseal(argv: list[str]) -> None:
    code = ("import sys\nfrom secagg_server.cli import main\ntry:\n    main(" + repr(argv)
            + ")\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'tenseal', "
            "'uvicorn', 'torch'}), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stderr.strip().splitlines()[-1] == "[]"
