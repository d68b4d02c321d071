"""Secret-bearing CKKS objects: redacted, unpicklable, exported only through a greppable call."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import pytest

from secagg.hazmat.handles import SecretBytes
from tests.ckks.conftest import ceremony, make_config


def test_key_handles_redact_and_refuse_pickle_and_copy() -> None:
    _, clients = ceremony(make_config(size=10, n=2))
    key = clients[2]._keyed()
    seed = key.expose_secret_seed_for_export()
    assert isinstance(seed, SecretBytes) and len(seed) == 64
    for obj in (key, key.seal, seed):
        text = repr(obj) + str(obj)
        assert "redacted" in text
        assert seed.expose_secret_bytes().hex()[:16] not in text
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(obj)
        with pytest.raises(TypeError):
            copy.deepcopy(obj)
    assert "redacted" in repr(clients[1])


def test_both_clients_hold_the_same_key() -> None:
    _, clients = ceremony(make_config(size=10, n=3))
    seeds = {c._keyed().expose_secret_seed_for_export().expose_secret_bytes() for c in clients.values()}
    assert len(seeds) == 1


def test_import_secagg_does_not_load_tenseal() -> None:
    code = "import sys, secagg, secagg.cli; print('tenseal' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
