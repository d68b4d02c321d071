"""Secret-bearing CKKS objects: redacted, unpicklable, exported only through a greppable call."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import pytest

from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import Purpose
from tests.ckks.conftest import keyed_round, make_config


def test_key_handles_redact_and_refuse_pickle_and_copy() -> None:
    parts = keyed_round(make_config(size=10, n=2))
    parts.uploads()
    key = parts.clients[2]._require_key()
    seed = key.expose_secret_seed_for_export()
    assert isinstance(seed, SecretBytes) and len(seed) == 64
    for obj in (key, key.seal, seed, key.derive(parts.config, Purpose.SKETCH), parts.clients[2]):
        text = repr(obj) + str(obj)
        assert "redacted" in text
        assert seed.expose_secret_bytes().hex()[:16] not in text
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(obj)
        with pytest.raises(TypeError):
            copy.deepcopy(obj)
    assert "redacted" in repr(parts.clients[1]) and "redacted" in repr(parts.federation)


def test_every_client_holds_the_same_key_and_derived_keys_differ() -> None:
    parts = keyed_round(make_config(size=10, n=3))
    parts.uploads()
    keys = [c._require_key() for c in parts.clients.values()]
    seeds = {k.expose_secret_seed_for_export().expose_secret_bytes() for k in keys}
    assert len(seeds) == 1
    purposes = (Purpose.SKETCH, Purpose.SKETCH_SEAL)
    derived = {keys[0].derive(parts.config, p).expose_secret_bytes() for p in purposes}
    assert len(derived) == 2 and not derived & seeds


def test_import_secagg_does_not_load_tenseal() -> None:
    code = "import sys, secagg, secagg.cli; print('tenseal' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
