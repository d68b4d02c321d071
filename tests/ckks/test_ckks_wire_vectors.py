"""Frozen CKKS wire formats (``tests/vectors/ckks_formats.json``): the framing around the
ciphertexts, what every identity signature covers, the config digests and the upload sketch.

The inputs are rebuilt by ``tests/vectors/make_vectors.py`` (the functions imported below) and
re-encoded here; a failure means a CKKS message, a signed part, a config field or the sketch
moved, which makes every deployed client refuse (or misread) the new server's messages: bump the
protocol version and regenerate on purpose
(``.venv/bin/python tests/vectors/make_vectors.py --force --only ckks_formats.json``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from secagg.ckks import CKKSRoundConfig, wire
from secagg.ckks import messages as cm
from secagg.ckks.binding import session_for
from secagg.ckks.keys import SEALED_BOX_BYTES, CKKSKey
from secagg.ckks.sketch import (
    SKETCH_PURPOSE,
    SKETCH_SEAL_PURPOSE,
    Sketcher,
    open_sketch,
    sealed_sketch_bytes,
)
from secagg.errors import AuthenticationFailed, RejectedMessage
from secagg.hazmat.handles import SecretBytes
from tests.vectors.make_vectors import (
    ckks_configs,
    ckks_messages,
    ckks_signed_parts,
    ckks_sketch,
    ckks_sketch_coefficients,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "ckks_formats.json").read_text())
DECODERS = {"KeyAdvert": cm.KeyAdvert, "KeyRequest": cm.KeyRequest,
            "KeyDistribution": cm.KeyDistribution, "KeyDelivery": cm.KeyDelivery,
            "Upload": cm.Upload, "Aggregate": cm.Aggregate}


def test_the_vectors_say_how_they_were_made() -> None:
    header = VECTORS["header"]
    assert "make_vectors.py" in header["how_made"] and "Frozen" in header["how_made"]


def test_constants_are_frozen() -> None:
    c = VECTORS["constants"]
    assert bytes.fromhex(c["magic"]) == wire.MAGIC
    assert c["kinds"] == {k.name: int(k) for k in cm.Kind}
    assert (c["box_public_bytes"], c["signature_bytes"], c["sealed_box_bytes"]) == \
        (cm.BOX_PUBLIC_BYTES, cm.SIGNATURE_BYTES, SEALED_BOX_BYTES)


@pytest.mark.parametrize("index", range(2), ids=("no-layout", "layout"))
def test_config_digest_is_frozen(index: int) -> None:
    case = VECTORS["configs"][index]
    config = ckks_configs()[index]
    assert isinstance(config, CKKSRoundConfig)
    assert config.to_dict() == case["config"]
    assert config.digest().hex() == case["digest"]
    assert CKKSRoundConfig.from_dict(case["config"]).digest().hex() == case["digest"]


def test_the_layout_digest_is_in_the_config_digest() -> None:
    plain, bound = VECTORS["configs"]
    assert plain["digest"] != bound["digest"]
    assert bound["config"]["layout_digest"] == "33" * 32


@pytest.mark.parametrize("index", range(len(VECTORS["messages"])),
                         ids=[m["type"] for m in VECTORS["messages"]])
def test_message_encoding_is_frozen(index: int) -> None:
    case = VECTORS["messages"][index]
    msg = ckks_messages()[index]
    assert type(msg).__name__ == case["type"]
    frozen = bytes.fromhex(case["hex"])
    assert msg.to_bytes() == frozen  # type: ignore[attr-defined]
    assert DECODERS[case["type"]].from_bytes(frozen) == msg  # type: ignore[attr-defined]
    kind, _ = wire.peek(frozen)
    assert kind == VECTORS["constants"]["kinds"][_kind_name(case["type"])]
    # every message carries the config digest as its first field
    _, first = wire.peek(frozen, 0)
    assert first == ckks_configs()[0].digest()  # type: ignore[attr-defined]


def _kind_name(type_name: str) -> str:
    return {"KeyAdvert": "ADVERT", "KeyRequest": "KEY_REQUEST",
            "KeyDistribution": "KEY_DISTRIBUTION", "KeyDelivery": "KEY_DELIVERY",
            "Upload": "UPLOAD", "Aggregate": "AGGREGATE"}[type_name]


def test_a_truncated_frozen_message_is_refused() -> None:
    """The frozen bytes are what the parser takes: a truncated frame is refused."""
    frozen = bytes.fromhex(VECTORS["messages"][0]["hex"])
    with pytest.raises(RejectedMessage):
        cm.KeyAdvert.from_bytes(frozen[:-1])


def test_signed_parts_are_frozen() -> None:
    assert ckks_signed_parts() == VECTORS["signed"]
    # an aggregate's receipt covers what the upload's signature covered
    upload = ckks_messages()[4]
    assert isinstance(upload, cm.Upload)
    receipt = cm.Receipt(upload.client_id, upload.chunks_digest(), upload.sealed_sketch,
                         upload.signature)
    assert receipt.signed_bytes(upload.config_digest, upload.round).hex() == \
        VECTORS["signed"]["upload"]


def test_the_upload_sketch_is_frozen() -> None:
    case = VECTORS["sketch"]
    rebuilt = ckks_sketch(sealed=case["sealed"])  # the sealed sketch has a fresh nonce
    assert rebuilt == case


def test_the_frozen_sealed_sketch_opens_only_for_its_upload() -> None:
    case = VECTORS["sketch"]
    config = ckks_configs()[0]
    assert isinstance(config, CKKSRoundConfig)
    session = session_for(config)
    key = CKKSKey(SecretBytes(bytes.fromhex(case["seed"])), session)
    moduli = [int(q) for q in session.level_moduli]
    assert moduli == case["moduli"]
    seal_key = key.derive(config, SKETCH_SEAL_PURPOSE)
    sealed = bytes.fromhex(case["sealed"])
    assert len(sealed) == case["sealed_bytes"] == sealed_sketch_bytes(len(moduli))
    receipt = cm.Receipt(case["client_id"], bytes.fromhex(case["chunks_digest"]), sealed, b"")
    values = [int(v) for v in case["values"]]
    assert list(open_sketch(seal_key, config, receipt, len(moduli))) == values
    for other in (dataclasses.replace(receipt, client_id=receipt.client_id + 1),
                  dataclasses.replace(receipt, chunks_digest=bytes(32))):
        with pytest.raises(AuthenticationFailed):
            open_sketch(seal_key, config, other, len(moduli))
    # the sketch itself, from the frozen key, over the frozen coefficients
    sketch_key = key.derive(config, SKETCH_PURPOSE)
    assert sketch_key.expose_secret_bytes().hex() == case["sketch_key"]
    sketcher = Sketcher(sketch_key, moduli, case["n"])
    for coeffs in ckks_sketch_coefficients(moduli):
        sketcher.add(coeffs)  # type: ignore[arg-type]
    assert list(sketcher.value()) == values


def test_a_moved_field_fails_the_comparison() -> None:
    """What the tests above would see if the upload's fields were framed in another order."""
    upload = ckks_messages()[4]
    assert isinstance(upload, cm.Upload)
    moved = wire.frame(cm.Kind.UPLOAD, [upload.config_digest, wire.u32(upload.client_id),
                                        wire.u64(upload.round), wire.join_fields(upload.chunks),
                                        upload.sealed_sketch, upload.signature])
    frozen: Any = next(m["hex"] for m in VECTORS["messages"] if m["type"] == "Upload")
    assert moved.hex() != frozen
