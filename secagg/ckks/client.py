"""The client side of a CKKS round, sans-IO: bytes in, bytes out, no sockets, no threads.

Stages: ``advertise`` -> (dealer: ``deal``; others: ``receive_key``) -> ``encrypt_update`` ->
``decrypt_aggregate``. Each step can be driven by any transport (the project's HTTP server,
Flower, or a plain loop in tests).
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.keys import CKKSKey, check_roster, deal_key, open_key
from secagg.ckks.layout import Layout
from secagg.ckks.messages import Aggregate, KeyAdvert, KeyDelivery, KeyRequest, Upload
from secagg.ckks.release import Release, make_release
from secagg.errors import AlreadyUsed, AuthenticationFailed, InvalidParameter, RejectedMessage
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.seal_codec import CiphertextRejected, SealSession
from secagg.hazmat.signing import SigningKey, verify_signature

__all__ = ["CKKSClient", "ClientStage", "session_for"]


def session_for(config: CKKSRoundConfig) -> SealSession:
    """The public SEAL material for ``config`` (identical on every party)."""
    p = config.params
    return SealSession(
        poly_modulus_degree=p.poly_modulus_degree,
        coeff_modulus_bits=p.coeff_modulus_bits,
        level_primes=p.level_primes,
        scale_bits=p.scale_bits,
    )


class ClientStage(enum.Enum):
    NEW = "new"
    ADVERTISED = "advertised"
    KEYED = "keyed"
    UPLOADED = "uploaded"


class CKKSClient:
    """One enterprise in a CKKS round. Holds the round's secret key once the ceremony is done."""

    def __init__(self, config: CKKSRoundConfig, client_id: int) -> None:
        if client_id not in config.client_ids:
            raise InvalidParameter(f"client_id {client_id} is not in the config's client_ids")
        self.config = config
        self.client_id = client_id
        self.stage = ClientStage.NEW
        self._digest = config.digest()
        self._session = session_for(config)
        self._layout = Layout(config.update_size, self._session.slots)
        self._box = X25519KeyPair.generate()
        self._signer = SigningKey.generate()
        self._key: CKKSKey | None = None
        self._adverts: tuple[KeyAdvert, ...] = ()
        self._released: tuple[bytes, Release] | None = None

    def __repr__(self) -> str:
        return f"<CKKSClient id={self.client_id} stage={self.stage.value} key=redacted>"

    def _require(self, stage: ClientStage, action: str) -> None:
        if self.stage is not stage:
            raise AlreadyUsed(
                f"client {self.client_id} cannot {action} at stage '{self.stage.value}' "
                f"(needs '{stage.value}')"
            )

    # -- key ceremony ------------------------------------------------------------------------

    def advertise(self) -> bytes:
        """This client's public keys for the round (to the server)."""
        self._require(ClientStage.NEW, "advertise")
        unsigned = KeyAdvert(
            self._digest, self.client_id, self._box.public_bytes, self._signer.public_bytes, b""
        )
        advert = replace(unsigned, signature=self._signer.sign(unsigned.signed_part()))
        self.stage = ClientStage.ADVERTISED
        return advert.to_bytes()

    def deal(self, key_request: bytes) -> bytes:
        """Dealer only: make the round key and seal it to everyone in the request's roster."""
        self._require(ClientStage.ADVERTISED, "deal the key")
        if self.client_id != self.config.dealer:
            raise InvalidParameter(
                f"client {self.client_id} is not the dealer (config.dealer={self.config.dealer})"
            )
        request = KeyRequest.from_bytes(key_request)
        if request.config_digest != self._digest:
            raise RejectedMessage(None, "key request is for another round config")
        check_roster(self.config, self.client_id, self._box.public_bytes, request.adverts)
        self._key, distribution = deal_key(self.config, self._session, self._signer, request.adverts)
        self._adverts = request.adverts
        self.stage = ClientStage.KEYED
        return distribution.to_bytes()

    def receive_key(self, delivery: bytes) -> None:
        """Non-dealers: open the sealed key relayed by the server."""
        self._require(ClientStage.ADVERTISED, "receive the key")
        msg = KeyDelivery.from_bytes(delivery)
        if msg.config_digest != self._digest or msg.distribution.config_digest != self._digest:
            raise RejectedMessage(self.config.dealer, "key delivery is for another round config")
        self._key = open_key(
            self.config, self._session, self.client_id, self._box, msg.adverts, msg.distribution
        )
        self._adverts = msg.adverts
        self.stage = ClientStage.KEYED

    def _keyed(self) -> CKKSKey:
        if self._key is None:
            raise AlreadyUsed(f"client {self.client_id} has no key yet (stage {self.stage.value})")
        return self._key

    # -- update ------------------------------------------------------------------------------

    def encrypt_update(self, update: npt.ArrayLike, *, weight: float = 1.0) -> bytes:
        """Encrypt ``weight * update`` with the weight itself; returns the signed upload."""
        self._require(ClientStage.KEYED, "encrypt an update")
        key = self._keyed()
        vec = np.asarray(update)
        cfg = self.config
        if not (math.isfinite(weight) and 0 < weight <= cfg.weight_bound):
            raise InvalidParameter(
                f"weight must be in (0, weight_bound={cfg.weight_bound}], found {weight}; "
                "normalise weights or raise weight_bound in the config"
            )
        if vec.shape != (cfg.update_size,):
            raise InvalidParameter(f"update has shape {vec.shape}; the round expects ({cfg.update_size},)")
        if not np.all(np.isfinite(vec)):
            raise InvalidParameter("update has non-finite values (nan/inf)")
        peak = float(np.max(np.abs(vec)))
        if peak > cfg.value_bound:
            raise InvalidParameter(
                f"update has |value| up to {peak:.4g} > value_bound={cfg.value_bound}; clip it "
                "first (secagg.encoding.clip_linf) or raise value_bound in the config"
            )
        chunks = tuple(key.seal.encrypt(c) for c in self._layout.pack(vec, weight))
        unsigned = Upload(self._digest, cfg.round, self.client_id, chunks, b"")
        signed = replace(unsigned, signature=self._signer.sign(unsigned.digest()))
        self.stage = ClientStage.UPLOADED
        return signed.to_bytes()

    # -- release -----------------------------------------------------------------------------

    def decrypt_aggregate(self, aggregate: bytes) -> Release:
        """Decrypt the round's aggregate and release it rounded; refuse anything else.

        Refused: a message that is not an aggregate, one for another config or round, one with
        fewer than ``min_clients`` contributors, unknown or duplicate contributors, a receipt
        whose signature does not verify, a ciphertext that does not check out, a decrypted
        contributor count that disagrees with the receipts, or a second, different aggregate
        for this round. Decrypting the same aggregate again returns the same release.
        """
        key = self._keyed()
        msg = Aggregate.from_bytes(aggregate)
        digest = hashlib.sha256(aggregate).digest()  # parsing is strict: these are the canonical bytes
        if self._released is not None:
            if self._released[0] == digest:
                return self._released[1]
            raise AlreadyUsed(
                f"client {self.client_id} already released this round's aggregate; it decrypts "
                "exactly one aggregate per round"
            )
        self._check_aggregate(msg)
        plain = []
        for i, blob in enumerate(msg.chunks):
            try:
                ct = self._session.load(blob, what=f"aggregate chunk {i}")
            except CiphertextRejected as exc:
                raise RejectedMessage(None, str(exc)) from None
            plain.append(key.seal.decrypt_exact(ct))
        weighted, total_weight, count = self._layout.unpack(plain)
        release = make_release(
            weighted, total_weight, count, msg.contributors, self.config.params.release_quantum
        )
        self._released = (digest, release)
        return release

    def _check_aggregate(self, msg: Aggregate) -> None:
        if msg.config_digest != self._digest or msg.round != self.config.round:
            raise RejectedMessage(None, "aggregate is for another round config or round")
        ids = msg.contributors
        if len(set(ids)) != len(ids) or len(ids) < self.config.min_clients:
            raise RejectedMessage(
                None,
                f"aggregate lists {len(ids)} contributor(s) ({len(set(ids))} distinct); "
                f"min_clients is {self.config.min_clients}; refusing to decrypt",
            )
        if len(msg.chunks) != self._layout.chunks:
            raise RejectedMessage(
                None, f"aggregate has {len(msg.chunks)} ciphertexts, expected {self._layout.chunks}"
            )
        keys = {a.client_id: a.verify_key for a in self._adverts}
        for receipt in msg.receipts:
            if receipt.client_id not in keys:
                raise RejectedMessage(
                    None, f"aggregate lists client {receipt.client_id}, who is not in the key roster"
                )
            try:
                verify_signature(
                    keys[receipt.client_id],
                    receipt.signature,
                    receipt.upload_digest,
                    what=f"receipt of {receipt.client_id}",
                )
            except AuthenticationFailed as exc:
                raise RejectedMessage(None, str(exc)) from None
