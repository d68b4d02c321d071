"""Client secrets never show up in repr, pickles, or the text of errors."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import numpy as np
import pytest

from secagg.errors import SecAggError
from secagg.masking import messages as m
from secagg.masking import wire
from tests.masking.conftest import make_config, random_updates
from tests.masking.harness import Round, decode


def _secret_hexes(client: object) -> list[str]:
    out = [client._seed.expose_secret_bytes().hex(),  # type: ignore[attr-defined]
           client._mask.export_private_bytes_for_sharing().expose_secret_bytes().hex()]  # type: ignore[attr-defined]
    return out


def test_client_session_is_redacted_and_unpicklable() -> None:
    config = make_config(4, 10, full_graph=True)
    r, _ = Round.start(config, random_updates(4, 10))
    client = r.clients[0]
    text = repr(client) + str(client)
    for h in _secret_hexes(client):
        assert h not in text and h[:16] not in text
    for dump in (pickle.dumps, copy.deepcopy, copy.copy):
        with pytest.raises(TypeError, match="secret"):
            dump(client)


def test_error_texts_carry_no_secret_material() -> None:
    config = make_config(5, 20, full_graph=True)
    r, outbox = Round.start(config, random_updates(5, 20))
    inbox = r.deliver(r.reply(r.deliver(outbox)))
    secrets = [h for c in r.clients.values() for h in _secret_hexes(c)]
    delivery = decode(inbox[1])
    assert isinstance(delivery, m.ShareDelivery)
    sealed = {k: v[:-1] + b"\x00" for k, v in delivery.sealed_shares.items()}
    errors = []
    for bad in (dataclasses.replace(delivery, sealed_shares=sealed),
                dataclasses.replace(delivery, shared=(1,))):
        with pytest.raises(SecAggError) as info:
            r.clients[1].handle_bytes(wire.encode(bad))
        errors.append(str(info.value))
    for text in errors:
        assert all(h not in text and h[:16] not in text for h in secrets)
        assert not any(len(tok) >= 32 and all(c in "0123456789abcdef" for c in tok)
                       for tok in text.split())  # no long hex dumps of anything
    assert np.all(r.values[1] >= 0)
