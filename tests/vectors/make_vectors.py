"""Generate secagg's own frozen known-answer vectors (the JSON files named in ``OUTPUTS``).

How these vectors were made: this script was run once, when it was added, with ``cryptography``
50.0.2 and numpy 2.4.6 on CPython 3.11, and its output was committed. The values come from
secagg's own functions (``derive_key``, ``expand_mask``, ``split``, ``pack_bits``) on the fixed
inputs written out below; nothing here is random except the Shamir polynomial coefficients, which
is why the Shamir shares are frozen (the tests check ``combine`` on them, not ``split``).

These files pin wire and key formats. A test that fails against them means the format changed:
that is a breaking change for every deployed client, never a reason to regenerate. If the change
is deliberate, rerun from the repository root with

    .venv/bin/python tests/vectors/make_vectors.py --force

and say in the change log which format moved. Without ``--force`` it refuses to overwrite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from secagg.encoding.packing import pack_bits
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.kdf import KeyContext, Purpose, derive_key
from secagg.hazmat.prg import expand_mask
from secagg.hazmat.shamir import split

HERE = Path(__file__).resolve().parent
RERUN = ".venv/bin/python tests/vectors/make_vectors.py --force"


def _header(what: str) -> dict[str, str]:
    return {
        "what": what,
        "how_made": (
            "Generated once by tests/vectors/make_vectors.py from secagg's own functions on the "
            "fixed inputs in that script (cryptography 50.0.2, numpy 2.4.6, CPython 3.11). "
            "Frozen: a mismatch means a format changed. Rerun only for a deliberate format "
            f"change: {RERUN}"
        ),
    }


# --- derive_key -----------------------------------------------------------------------------

DERIVE_CASES = [
    # (ikm hex, protocol, version, session hex, round, purpose, pair, length)
    ("00" * 32, "secagg-masking", 1, "", 0, Purpose.PAIRWISE_MASK, (0, 1), 32),
    (
        bytes(range(32)).hex(),
        "secagg-masking",
        1,
        "73657373696f6e2d31",
        7,
        Purpose.SELF_MASK,
        (3, 3),
        32,
    ),
    (
        bytes(range(32)).hex(),
        "secagg-masking",
        1,
        "73657373696f6e2d31",
        7,
        Purpose.PAIRWISE_MASK,
        (3, 5),
        32,
    ),
    (
        bytes(range(32)).hex(),
        "secagg-masking",
        1,
        "73657373696f6e2d31",
        7,
        Purpose.PAIRWISE_MASK,
        (5, 3),
        32,
    ),
    (
        "ff" * 32,
        "secagg-masking",
        2,
        "ab" * 32,
        2**40 + 3,
        Purpose.SHARE_ENCRYPTION,
        (4294967295, 17),
        32,
    ),
    ("5a" * 20, "x", 0, "00", 1, Purpose.SEALED_BOX, (0, 0), 16),
    ("01" * 64, "secagg-ckks", 65535, "cafe", 123456789, Purpose.NOISE_SEED, (9, 10), 64),
]


def make_derive_key() -> dict[str, object]:
    cases = []
    for ikm, protocol, version, session, rnd, purpose, pair, length in DERIVE_CASES:
        ctx = KeyContext(protocol, version, bytes.fromhex(session), rnd, purpose, pair)
        key = derive_key(SecretBytes(bytes.fromhex(ikm)), ctx, length=length)
        cases.append(
            {
                "ikm": ikm,
                "protocol": protocol,
                "version": version,
                "session": session,
                "round": rnd,
                "purpose": purpose.name,
                "pair": list(pair),
                "length": length,
                "info": ctx.info().hex(),
                "okm": key.expose_secret_bytes().hex(),
            }
        )
    return {
        "header": _header(
            "derive_key(ikm, KeyContext(...), length=...) outputs, with KeyContext.info() hex; "
            "pins the info encoding and the salt rule"
        ),
        "cases": cases,
    }


# --- expand_mask ----------------------------------------------------------------------------

MASK_KEYS = [
    bytes(range(32)).hex(),
    "ff" * 32,
    hashlib.sha256(b"secagg mask vector 3").hexdigest(),
    bytes(range(16)).hex(),  # 16-byte keys: AES-128-CTR, the masking protocol's mask keys
    hashlib.sha256(b"secagg mask vector 5").hexdigest()[:32],
]
MASK_LENGTHS = [0, 1, 7, 65536, 65537, 70001, 131072 + 5]


def make_expand_mask() -> dict[str, object]:
    cases = []
    for key in MASK_KEYS:
        for length in MASK_LENGTHS:
            words = expand_mask(SecretBytes(bytes.fromhex(key)), length)
            cases.append(
                {
                    "key": key,
                    "length": length,
                    "first_words": [int(w) for w in words[:8]],
                    "last_words": [int(w) for w in words[-8:]] if length else [],
                    "sha256_le_bytes": hashlib.sha256(words.astype("<u4").tobytes()).hexdigest(),
                }
            )
    return {
        "header": _header(
            "expand_mask(key, length): first/last 8 uint32 words and SHA-256 of all words as "
            "little-endian bytes (AES-256-CTR for 32-byte keys, AES-128-CTR for 16-byte keys, "
            "zero IV; chunk size 65536 words)"
        ),
        "cases": cases,
    }


# --- Shamir combine -------------------------------------------------------------------------

SHAMIR_CASES = [
    # (secret hex, threshold, xs)
    (bytes(range(32)).hex(), 3, [1, 2, 3, 4, 5]),
    ("00" * 32, 2, [1, 2, 3]),
    ("ff" * 32, 1, [7]),
    (hashlib.sha512(b"secagg shamir vector").hexdigest(), 4, [2, 3, 5, 8, 13, 21]),
    ("0102030405060708090a0b0c0d0e0f10", 5, [1, 2, 3, 4, 5]),
]


def make_shamir() -> dict[str, object]:
    cases = []
    for secret, threshold, xs in SHAMIR_CASES:
        shares = split(SecretBytes(bytes.fromhex(secret)), threshold=threshold, xs=xs)
        cases.append(
            {
                "secret": secret,
                "secret_bytes": len(secret) // 2,
                "threshold": threshold,
                "shares": {str(x): s.expose_secret_bytes().hex() for x, s in shares.items()},
            }
        )
    return {
        "header": _header(
            "Shamir shares over GF(2^521 - 1), 66-byte big-endian y per x, produced once by "
            "split() (random coefficients) and frozen; every threshold-subset must combine() "
            "to the secret"
        ),
        "cases": cases,
    }


# --- pack_bits ------------------------------------------------------------------------------

PACK_BITS = [1, 3, 8, 13, 31, 32]
PACK_LENGTHS = [0, 1, 5, 64, 65]


def _pack_input(length: int, bits: int) -> list[int]:
    # Deterministic, spans the full range, and includes the all-ones value when length allows.
    mod = 1 << bits
    return [((i * 2654435761) ^ (i << 7)) % mod if i % 5 else mod - 1 for i in range(length)]


def make_pack_bits() -> dict[str, object]:
    cases = []
    for bits in PACK_BITS:
        for length in PACK_LENGTHS:
            values = _pack_input(length, bits)
            packed = pack_bits(np.array(values, dtype=np.uint32), bits)
            cases.append({"bits": bits, "values": values, "packed": packed.hex()})
    return {
        "header": _header(
            "pack_bits(np.array(values, uint32), bits) bytes as hex (planar 64-row layout, "
            "documented in secagg/encoding/packing.py)"
        ),
        "cases": cases,
    }


# --- protocol formats: config digests and the masking wire ------------------------------------

def _masking_messages() -> list[object]:
    from secagg.masking import messages as mm

    d, r = bytes(range(32)), 7
    return [
        mm.AdvertiseKeys(digest=d, round=r, party=3, cipher_public=b"\x01" * 32,
                         mask_public=b"\x02" * 32, seed_commitment=b"\x03" * 32,
                         signature=b"\x04" * 64),
        mm.ShareKeys(digest=d, round=r, party=3, sealed_shares={1: b"\x05" * 8, 9: b"\x06" * 8},
                     commitments={1: b"\x10" * 64, 3: b"\x11" * 64, 9: b"\x12" * 64}),
        mm.MaskedInput(digest=d, round=r, party=3, payload=b"\x07" * 16, excluded=(2, 5)),
        mm.ConsistencySignature(digest=d, round=r, party=3, signature=b"\x08" * 64),
        mm.UnmaskShares(digest=d, round=r, party=3, seed_shares={1: b"\x09" * 4},
                        mask_key_shares={2: b"\x0a" * 4}),
        mm.KeyDirectory(digest=d, round=r, party=3, adverts={3: b"\x0b" * 4},
                        advert_hashes={3: b"\x0c" * 32, 4: b"\x0d" * 32}),
        mm.ShareDelivery(digest=d, round=r, party=3, shared=(1, 3, 9),
                         sealed_shares={1: b"\x0e" * 8}, commitments={1: b"\x13" * 64}),
        mm.ConsistencyRequest(digest=d, round=r, party=3, survivors=(1, 3)),
        mm.UnmaskRequest(digest=d, round=r, party=3, survivors=(1, 3),
                         signatures={1: b"\x0f" * 64}),
    ]


def _masking_configs() -> list[dict[str, object]]:
    from secagg.encoding.quantize import FixedPoint
    from secagg.masking import MaskingConfig

    base = dict(num_clients=10, vector_length=1000, neighbours=9, threshold=6,
                fixed_point=FixedPoint(clip=1.0, value_bits=16), mod_bits=20, round=3,
                session=bytes(range(16)))
    return [MaskingConfig(**base).to_dict(),  # type: ignore[arg-type]
            MaskingConfig(**base, active=True, roster_digest=b"\x11" * 32).to_dict()]  # type: ignore[arg-type]


def _ckks_config() -> dict[str, object]:
    from secagg.ckks import CKKSRoundConfig, Preset

    return CKKSRoundConfig(params=Preset.COMPACT.params, update_size=1000, client_ids=(0, 1, 2),
                           dealer=0, min_clients=2, round=4, session=bytes(range(16)),
                           roster_digest=b"\x22" * 32).to_dict()


def make_protocol_formats() -> dict[str, object]:
    from secagg.ckks import CKKSRoundConfig
    from secagg.masking import MaskingConfig, wire

    return {
        "header": _header(
            "masking configs (to_dict) with their SHA-256 digests, the CKKS round config with its "
            "digest, and one encoded masking message of every type (hex): the formats clients "
            "and servers of different releases must agree on"
        ),
        "masking_configs": [{"config": c, "digest": MaskingConfig.from_dict(c).digest().hex()}
                            for c in _masking_configs()],
        "ckks_config": {"config": _ckks_config(),
                        "digest": CKKSRoundConfig.from_dict(_ckks_config()).digest().hex()},
        "masking_wire": [{"type": type(msg).__name__, "hex": wire.encode(msg).hex()}  # type: ignore[arg-type]
                         for msg in _masking_messages()],
    }


# --- CKKS wire formats: the framing around the ciphertexts ------------------------------------

#: the fixed CKKS round the CKKS vectors are made for (its digest rides in every message)
CKKS_CONFIG = dict(update_size=1000, client_ids=(0, 1, 2), dealer=0, min_clients=2, round=4,
                   session=bytes(range(16)), roster_digest=b"\x22" * 32)
CKKS_SEED = bytes(range(64))  # the round's key seed (KEY_SEED_BYTES) the sketch keys come from
SKETCH_N = 16  # a small ring for the sketch vector: the projections' order does not depend on N
SKETCH_CLIENT = 2


def ckks_configs() -> list[object]:
    """The fixed CKKS round config, without and with a model layout digest."""
    from secagg.ckks import CKKSRoundConfig, Preset

    base = CKKSRoundConfig(params=Preset.COMPACT.params, **CKKS_CONFIG)  # type: ignore[arg-type]
    return [base, CKKSRoundConfig(params=Preset.COMPACT.params, layout_digest=b"\x33" * 32,
                                  **CKKS_CONFIG)]  # type: ignore[arg-type]


def ckks_messages() -> list[object]:
    """One CKKS message of every kind, from fixed bytes (placeholder ciphertexts, signatures
    and boxes: the framing around them is what is frozen)."""
    from secagg.ckks import messages as cm
    from secagg.ckks.keys import SEALED_BOX_BYTES
    from secagg.ckks.sketch import sealed_sketch_bytes

    config = ckks_configs()[0]
    d, r, sketch = config.digest(), config.round, sealed_sketch_bytes(1)  # type: ignore[attr-defined]
    adverts = tuple(cm.KeyAdvert(d, i, bytes([0x10 + i]) * 32, bytes([0x20 + i]) * 64)
                    for i in (0, 2))
    dist = cm.KeyDistribution(d, 0, (cm.KeyBox(2, b"\x12" * 32, b"\x30" * SEALED_BOX_BYTES),),
                              b"\x31" * 64)
    receipts = tuple(cm.Receipt(i, bytes([0x40 + i]) * 32, bytes([0x50 + i]) * sketch,
                                bytes([0x60 + i]) * 64) for i in (0, 2))
    return [
        adverts[1],
        cm.KeyRequest(d, adverts),
        dist,
        cm.KeyDelivery(d, dist),
        cm.Upload(d, r, 2, (b"\x70" * 40, b"\x71" * 24), b"\x52" * sketch, b"\x62" * 64),
        cm.Aggregate(d, r, receipts, (b"\x80" * 40, b"\x81" * 24)),
    ]


def ckks_signed_parts() -> dict[str, str]:
    """What each identity signature covers, and the upload's chunks digest (hex)."""
    from secagg.ckks import messages as cm

    advert, _, dist, _, upload, aggregate = ckks_messages()
    assert isinstance(advert, cm.KeyAdvert) and isinstance(dist, cm.KeyDistribution)
    assert isinstance(upload, cm.Upload) and isinstance(aggregate, cm.Aggregate)
    receipt = aggregate.receipts[1]
    return {
        "advert": advert.signed_part().hex(),
        "key_distribution": dist.signed_part().hex(),
        "upload_chunks_digest": upload.chunks_digest().hex(),
        "upload": upload.signed_bytes().hex(),
        "receipt": receipt.signed_bytes(aggregate.config_digest, aggregate.round).hex(),
    }


def ckks_sketch_coefficients(moduli: list[int]) -> list[object]:
    """Two ciphertexts' coefficients, shape ``(2, L, SKETCH_N)``, each reduced mod its prime."""
    chunks: list[object] = []
    for c in range(2):
        coeffs = np.zeros((2, len(moduli), SKETCH_N), dtype=np.uint64)
        for poly in range(2):
            for level, q in enumerate(moduli):
                for j in range(SKETCH_N):
                    coeffs[poly, level, j] = (((c * 2 + poly) * 2654435761 + j) * 0x9E3779B97F4A7C15
                                              + level) % q
        chunks.append(coeffs)
    return chunks


def ckks_sketch(sealed: str | None = None) -> dict[str, object]:
    """The sketch keys derived from :data:`CKKS_SEED`, the sketch of
    :func:`ckks_sketch_coefficients`, and that sketch sealed (a fresh nonce: made once, then
    frozen; ``sealed`` passes the frozen one through)."""
    from secagg.ckks.binding import session_for
    from secagg.ckks.keys import CKKSKey
    from secagg.ckks.sketch import (
        SKETCH_PURPOSE,
        SKETCH_SEAL_PURPOSE,
        Sketcher,
        seal_sketch,
        sealed_sketch_bytes,
    )

    config = ckks_configs()[0]
    session = session_for(config)  # type: ignore[arg-type]
    key = CKKSKey(SecretBytes(CKKS_SEED), session)
    moduli = [int(q) for q in session.level_moduli]
    sketch_key = key.derive(config, SKETCH_PURPOSE)  # type: ignore[arg-type]
    seal_key = key.derive(config, SKETCH_SEAL_PURPOSE)  # type: ignore[arg-type]
    sketcher = Sketcher(sketch_key, moduli, SKETCH_N)
    for coeffs in ckks_sketch_coefficients(moduli):
        sketcher.add(coeffs)  # type: ignore[arg-type]
    values = sketcher.value()
    upload = ckks_messages()[4]
    chunks_digest = upload.chunks_digest()  # type: ignore[attr-defined]
    if sealed is None:
        sealed = seal_sketch(seal_key, config, SKETCH_CLIENT, chunks_digest, values).hex()  # type: ignore[arg-type]
    return {
        "seed": CKKS_SEED.hex(),
        "sketch_key": sketch_key.expose_secret_bytes().hex(),
        "seal_key": seal_key.expose_secret_bytes().hex(),
        "moduli": moduli,
        "n": SKETCH_N,
        "values": [str(v) for v in values],  # decimal strings: above JSON's safe integers
        "client_id": SKETCH_CLIENT,
        "chunks_digest": chunks_digest.hex(),
        "sealed": sealed,
        "sealed_bytes": sealed_sketch_bytes(len(moduli)),
    }


def make_ckks_formats() -> dict[str, object]:
    from secagg.ckks import messages as cm
    from secagg.ckks import wire
    from secagg.ckks.keys import SEALED_BOX_BYTES

    return {
        "header": _header(
            "the CKKS round's formats around the ciphertexts: round configs (to_dict) with their "
            "digests, one encoded message of every kind (hex; placeholder ciphertexts, boxes and "
            "signatures), what each identity signature covers, and the upload sketch (keys "
            "derived from a fixed seed, the sketch of fixed coefficients, and one sealed sketch "
            "made once with a fresh nonce and frozen; tenseal 0.3.18 for the ring's primes)"
        ),
        "constants": {"magic": wire.MAGIC.hex(), "kinds": {k.name: int(k) for k in cm.Kind},
                      "box_public_bytes": cm.BOX_PUBLIC_BYTES,
                      "signature_bytes": cm.SIGNATURE_BYTES,
                      "sealed_box_bytes": SEALED_BOX_BYTES},
        "configs": [{"config": c.to_dict(), "digest": c.digest().hex()}  # type: ignore[attr-defined]
                    for c in ckks_configs()],
        "messages": [{"type": type(m).__name__, "hex": m.to_bytes().hex()}  # type: ignore[attr-defined]
                     for m in ckks_messages()],
        "signed": ckks_signed_parts(),
        "sketch": ckks_sketch(),
    }


OUTPUTS = {
    "derive_key.json": make_derive_key,
    "expand_mask.json": make_expand_mask,
    "shamir_combine.json": make_shamir,
    "pack_bits.json": make_pack_bits,
    "protocol_formats.json": make_protocol_formats,
    "ckks_formats.json": make_ckks_formats,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite existing vector files")
    parser.add_argument("--only", choices=sorted(OUTPUTS), action="append",
                        help="write only this file (repeatable); the others stay frozen")
    args = parser.parse_args(argv)
    if args.only:
        for name in list(OUTPUTS):
            if name not in args.only:
                del OUTPUTS[name]
    existing = [name for name in OUTPUTS if (HERE / name).exists()]
    if existing and not args.force:
        print(f"refusing to overwrite frozen vectors {existing}; pass --force", file=sys.stderr)
        return 1
    for name, make in OUTPUTS.items():
        (HERE / name).write_text(json.dumps(make(), indent=1) + "\n")
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
