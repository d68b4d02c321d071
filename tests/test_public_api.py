"""The public surface: ``import secagg`` stays light, and ``__all__`` changes only on purpose.

A failing snapshot here means the public API changed: update the snapshot in the same change
and say so in the change log.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "tenseal", "opacus", "peft", "transformers")


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    "statement",
    [
        "import secagg",
        "import secagg.encoding",
        "import secagg.hazmat.kdf, secagg.hazmat.prg, secagg.hazmat.shamir, "
        "secagg.hazmat.sealed_box, secagg.hazmat.signing",
    ],
)
def test_import_is_light(statement: str) -> None:
    loaded = _modules_after(statement)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"`{statement}` imported heavy modules: {heavy[:5]}"


SECAGG_ALL = [
    "AlreadyUsed",
    "AuthenticationFailed",
    "InvalidParameter",
    "NotEnoughParticipants",
    "ProtocolAbort",
    "RejectedMessage",
    "SecAggError",
    "__version__",
]

ENCODING_ALL = [
    "FixedPoint",
    "ParamSpec",
    "TensorSpec",
    "check_headroom",
    "clip_l2",
    "clip_linf",
    "dequantize_sum",
    "pack_bits",
    "packed_size",
    "quantize",
    "unpack_bits",
]


@pytest.mark.parametrize(
    ("module", "expected"),
    [("secagg", SECAGG_ALL), ("secagg.encoding", ENCODING_ALL)],
)
def test_all_snapshot(module: str, expected: list[str]) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == expected
    assert len(set(mod.__all__)) == len(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ names {name}, which does not exist"


def test_errors_hierarchy() -> None:
    import secagg

    for name in SECAGG_ALL:
        obj = getattr(secagg, name)
        if isinstance(obj, type):
            assert issubclass(obj, secagg.SecAggError)
    assert issubclass(secagg.InvalidParameter, ValueError)
    assert issubclass(secagg.NotEnoughParticipants, secagg.ProtocolAbort)
