"""The parties of the named CKKS attacks: sessions with one defence switched off (positive
controls, tests only), malicious servers and malicious enterprises, as subclasses of the real
sessions. Played by :mod:`secagg.ckks.adversary`; never for a deployment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tenseal.sealapi as sealapi

from secagg.ckks.client import ClientSession
from secagg.ckks.keys import CKKSKey, box_aad, box_context
from secagg.ckks.messages import (
    Aggregate,
    KeyAdvert,
    KeyBox,
    KeyDelivery,
    KeyDistribution,
    KeyRequest,
    Receipt,
    Upload,
)
from secagg.ckks.server import ServerSession
from secagg.errors import InvalidParameter
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.seal_codec import _HEADER, SealSession, _Zstd
from secagg.hazmat.sealed_box import open_box, seal_to

__all__: list[str] = []  # attack code: imported by secagg.ckks.adversary only


# ---- positive controls: the sessions with a defence switched off (tests only) --------------------


class _InsecureClient(ClientSession):
    """A client with the named checks switched off. Positive controls only."""

    insecure_skip: frozenset[str] = frozenset()

    def _verify_advert(self, advert: KeyAdvert) -> None:
        if "roster" not in self.insecure_skip:
            super()._verify_advert(advert)

    def _verify_distribution(self, dist: KeyDistribution) -> None:
        if "roster" not in self.insecure_skip:
            super()._verify_distribution(dist)

    def _check_box_key(self, public: bytes) -> None:
        if "box-key" not in self.insecure_skip:
            super()._check_box_key(public)

    def _check_sketch(self, key: CKKSKey, msg: Aggregate, cts: list[Any]) -> None:
        if "sketch" not in self.insecure_skip:
            super()._check_sketch(key, msg, cts)


def _insecure_client_class(skip: Sequence[str]) -> type[ClientSession]:
    return type("InsecureClientSession", (_InsecureClient,), {"insecure_skip": frozenset(skip)})


class _BoxKeyBlindServer(ServerSession):
    """An honest server except that it does not check X25519 box keys (a buggy or lax relay)."""

    def _check_box_key(self, advert: KeyAdvert) -> None:
        return None


class _LazyServer(ServerSession):
    """Positive control for garbage uploads: takes signed uploads unchecked, sums at the end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: list[Upload] = []

    def _receive_upload(self, data: bytes) -> None:
        upload = Upload.from_bytes(data)
        self.roster.verify(upload.client_id, upload.signature, upload.signed_bytes(), what="upload")
        self.pending.append(upload)

    def _close_uploads(self) -> dict[int, bytes]:
        for upload in self.pending:  # garbage fails here, after the stage: the round is lost
            cts = [self._seal.load(b, what="ciphertext") for b in upload.chunks]
            if self._sums is None:
                self._sums = cts
            else:
                for acc, ct in zip(self._sums, cts, strict=True):
                    self._seal.add_inplace(acc, ct)
            self._receipts[upload.client_id] = Receipt(
                upload.client_id, upload.chunks_digest(), upload.sealed_sketch, upload.signature
            )
        return super()._close_uploads()


# ---- malicious servers -------------------------------------------------------------------------


class _KeySwappingServer(ServerSession):
    """Relays the dealer a key request with its own X25519 key in place of the victim's."""

    def __init__(self, *args: Any, victim: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.victim = victim
        self.attacker = X25519KeyPair.generate()
        self.stolen_seed: SecretBytes | None = None
        self.victim_upload: bytes | None = None
        self._dealt: KeyDistribution | None = None

    def _close_adverts(self) -> dict[int, bytes]:
        out = super()._close_adverts()
        request = KeyRequest.from_bytes(next(iter(out.values())))
        swapped = tuple(
            dataclasses.replace(a, box_public=self.attacker.public_bytes) if a.client_id == self.victim else a
            for a in request.adverts
        )
        out[self.config.dealer] = KeyRequest(request.config_digest, swapped).to_bytes()
        return out  # the others see the genuine adverts: only the dealer's view is forged

    def _receive_distribution(self, data: bytes) -> None:
        # No checks: the server is malicious. Open the victim's box, re-seal it to the victim.
        dist = KeyDistribution.from_bytes(data)
        self._dealt = dist
        box = dist.box_for(self.victim)
        if box is None or box.box_public != self.attacker.public_bytes:
            self._distribution = dist
            return
        cfg = self.config
        raw = open_box(self.attacker, box.sealed, box_context(cfg, self.victim),
                       aad=box_aad(cfg, self.victim, self.attacker.public_bytes))
        self.stolen_seed = SecretBytes(raw, label="stolen-seed")
        real = self._adverts[self.victim].box_public
        resealed = seal_to(real, raw, box_context(cfg, self.victim), aad=box_aad(cfg, self.victim, real))
        boxes = tuple(KeyBox(self.victim, real, resealed) if b.recipient == self.victim else b
                      for b in dist.boxes)
        self._distribution = dataclasses.replace(dist, boxes=boxes)  # the dealer's signature breaks

    def _close_keys(self) -> dict[int, bytes]:
        out = super()._close_keys()
        if self._dealt is not None:  # the dealer gets its own distribution back: it notices nothing
            out[self.config.dealer] = KeyDelivery(self._digest, self._dealt).to_bytes()
        return out

    def _receive_upload(self, data: bytes) -> None:
        super()._receive_upload(data)
        if Upload.from_bytes(data).client_id == self.victim:
            self.victim_upload = data


class _ForgingServer(ServerSession):
    """Sums honestly, then hands out a forged aggregate with the genuine receipts."""

    def __init__(self, *args: Any, victim: int, variant: str, position: int = 0, delta: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.victim, self.variant = victim, variant
        self.position, self.delta = position, delta
        self.uploads: dict[int, Upload] = {}

    def _receive_upload(self, data: bytes) -> None:
        super()._receive_upload(data)
        upload = Upload.from_bytes(data)
        self.uploads[upload.client_id] = upload

    def _close_uploads(self) -> dict[int, bytes]:
        out = super()._close_uploads()
        honest = Aggregate.from_bytes(self.result.aggregate)
        contributors = honest.contributors
        seal = self._seal
        if self.variant == "tweak":
            tweaked = tweak_coefficient(seal, honest.chunks[0], self.position, self.delta)
            chunks = (tweaked, *honest.chunks[1:])
        elif self.variant == "shift":  # + delta on the first released value, a plausible change
            ct = seal.load(honest.chunks[0], what="forged")
            shift = np.zeros(seal.slots, dtype=np.complex128)
            shift[0] = float(self.delta)
            plain = sealapi.Plaintext()
            seal.encoder.encode(shift.tolist(), seal.parms_id, seal.scale, plain)
            seal.evaluator.add_plain_inplace(ct, plain)
            chunks = (seal.dump(ct), *honest.chunks[1:])
        else:
            if self.variant == "replay":  # the victim's upload once per contributor
                parts = [self.victim] * len(contributors)
            else:  # drop-one: leave the last contributor out, count the first one twice
                parts = [*contributors[:-1], contributors[0]]
            sums = [seal.load(b, what="forged") for b in self.uploads[parts[0]].chunks]
            for who in parts[1:]:
                for acc, blob in zip(sums, self.uploads[who].chunks, strict=True):
                    seal.add_inplace(acc, seal.load(blob, what="forged"))
            chunks = tuple(seal.dump(ct) for ct in sums)
        forged = Aggregate(honest.config_digest, honest.round, honest.receipts, chunks).to_bytes()
        return dict.fromkeys(out, forged)


# ---- malicious enterprises -------------------------------------------------------------------


class _LowOrderClient(ClientSession):
    """Advertises the all-zero X25519 key (a low-order point), signed with its real identity."""

    def start(self) -> bytes:
        honest = KeyAdvert.from_bytes(super().start())
        bad = KeyAdvert(honest.config_digest, honest.client_id, bytes(32), b"")
        return KeyAdvert(bad.config_digest, bad.client_id, bad.box_public,
                         self._identity.signing_key.sign(bad.signed_part())).to_bytes()


class _GarbageUploader(ClientSession):
    """Uploads random bytes as ciphertexts, under its own valid identity signature."""

    def _upload(self) -> bytes:
        honest = Upload.from_bytes(super()._upload())
        junk = tuple(os.urandom(len(c)) for c in honest.chunks)
        unsigned = dataclasses.replace(honest, chunks=junk, signature=b"")
        signature = self._identity.signing_key.sign(unsigned.signed_bytes())
        return dataclasses.replace(unsigned, signature=signature).to_bytes()


class _GarbageBoxDealer(ClientSession):
    """A malicious dealer: signs a distribution whose box for ``victim`` is random bytes."""

    victim: int = -1

    def _on_key_request(self, data: bytes) -> bytes | None:
        reply = super()._on_key_request(data)
        if reply is None:
            return None
        dist = KeyDistribution.from_bytes(reply)
        boxes = tuple(dataclasses.replace(b, sealed=os.urandom(len(b.sealed))) if b.recipient == self.victim
                      else b for b in dist.boxes)
        unsigned = dataclasses.replace(dist, boxes=boxes, signature=b"")
        signature = self._identity.signing_key.sign(unsigned.signed_part())
        signed = dataclasses.replace(unsigned, signature=signature)
        self._distribution = signed.to_bytes()
        return self._distribution


# ---- tampering helper --------------------------------------------------------------------------


def tweak_coefficient(session: SealSession, blob: bytes, position: int, delta: int) -> bytes:
    """``blob`` (one ciphertext) with coefficient ``position`` of its ``(2, L, N)`` data moved by
    ``delta`` modulo its prime, re-serialised uncompressed (SEAL loads that too)."""
    ct = session.load(blob, what="ciphertext to tweak")
    coeffs = session.coefficients(ct)
    count = coeffs.size
    if not 0 <= position < count:
        raise InvalidParameter(f"position must be in [0, {count}), found {position}")
    raw = session.dump(ct)
    magic, hsize, major, minor, _, reserved, _ = _HEADER.unpack_from(raw)
    body = np.empty(count * 8 + 4096, dtype=np.uint8)
    body = body[: _Zstd.decompress_into(raw[_HEADER.size :], body, what="ciphertext to tweak")].copy()
    start = body.size - count * 8
    values = body[start:].view("<u8")
    q = session.level_moduli[(position // session.n) % len(session.level_moduli)]
    values[position] = (int(values[position]) + delta) % q
    payload = body.tobytes()
    header = _HEADER.pack(magic, hsize, major, minor, 0, reserved, _HEADER.size + len(payload))
    return header + payload


