"""The client side of a CKKS round as a sans-IO state machine: bytes in, bytes out.

A :class:`ClientSession` holds one enterprise's secrets for one round (its fresh X25519 box key,
then the round's CKKS key) and its update. It owns no socket, thread or clock: the project's HTTP
client, Flower, or the in-memory simulator drive the same code::

    session = ClientSession(config, client_id, update, weight=n_examples,
                            identity=my_identity, roster=pinned_roster)
    server.receive(session.start())                 # the signed advert
    reply = session.handle_bytes(message)           # each message the server relays
    if reply is not None: server.receive(reply)     # ...and what to send back, if anything
    session.result.mean()                           # once the aggregate is verified and decrypted

Messages and replies, in order:

* ``start()`` -> the key advert: a fresh X25519 key signed with the identity key.
* key request -> every client verifies each advert against the roster (a substituted key ends the
  session) and that its own key is there; the dealer answers with the key distribution (the seed
  sealed to every verified peer with a usable box key, signed with its identity); others: None.
* key delivery -> the upload: the weighted update encrypted under the round key, its sealed
  sketch (:mod:`secagg.ckks.sketch`), signed with the identity key. Non-dealers first verify the
  dealer's signature against the roster and that their box was sealed to their own key.
* aggregate -> None; :attr:`ClientSession.result` then holds the rounded :class:`Release`.
  Before decrypting: every contributor keyed this round and signed its upload (roster), this
  client's own upload is in, at least ``min_clients`` contributors, every sealed sketch opens,
  and ``<R, aggregate>`` equals the sum of the sketches. Anything else is refused and nothing is
  decrypted.

Every refusal is a :class:`~secagg.ckks.checks.CheckFailed` naming its check; it ends the
session for the round (a server gets one try). Handing the same message twice returns the same
reply (transport retries); a different message for a stage already passed raises
:class:`~secagg.errors.AlreadyUsed` and changes nothing.
"""

from __future__ import annotations

import enum
import hashlib
import math
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.ckks.checks import Check, CheckFailed
from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.keys import CKKSKey, check_box_key, deal_key, open_key, verify_advert
from secagg.ckks.layout import Layout
from secagg.ckks.messages import (
    Aggregate,
    KeyAdvert,
    KeyDelivery,
    KeyDistribution,
    KeyRequest,
    Kind,
    Receipt,
    Upload,
)
from secagg.ckks.release import Release, make_release
from secagg.ckks.sketch import (
    PROJECTIONS,
    SKETCH_PURPOSE,
    SKETCH_SEAL_PURPOSE,
    Sketcher,
    open_sketch,
    seal_sketch,
)
from secagg.ckks.wire import peek
from secagg.errors import (
    AlreadyUsed,
    AuthenticationFailed,
    InvalidParameter,
    ProtocolAbort,
    RejectedMessage,
)
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import Unpicklable
from secagg.hazmat.seal_codec import CiphertextRejected, SealSession
from secagg.identity import Identity, Roster

__all__ = ["ClientSession", "ClientStage", "session_for"]


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
    KEYS = "key ceremony"
    AGGREGATE = "waiting for the aggregate"
    DONE = "released"
    FAILED = "refused"


def check_roster_binding(config: CKKSRoundConfig, roster: Roster) -> None:
    """Refuse a config not bound to ``roster`` (digest) or naming clients outside it."""
    if roster.digest() != config.roster_digest:
        raise CheckFailed(
            "setup", Check.ROSTER_DIGEST,
            f"the round config is bound to roster {config.roster_digest.hex()[:16]}..., but the "
            f"pinned roster of federation {roster.federation!r} has digest "
            f"{roster.digest().hex()[:16]}...; refusing a round over members this enterprise did "
            "not pin",
        )
    outside = sorted(set(config.client_ids) - set(roster.ids))
    if outside:
        raise CheckFailed("setup", Check.ROSTER_DIGEST,
                          f"the round config names client(s) {outside[:8]}, not in the pinned roster")


class ClientSession(Unpicklable):
    """One enterprise's state for one CKKS round. Redacted and unpicklable: it holds secrets."""

    def __init__(
        self,
        config: CKKSRoundConfig,
        client_id: int,
        update: npt.ArrayLike,
        *,
        weight: float = 1.0,
        identity: Identity,
        roster: Roster,
    ) -> None:
        check_roster_binding(config, roster)
        if client_id not in config.client_ids:
            raise InvalidParameter(f"client_id {client_id} is not in the config's client_ids")
        if roster.member(client_id).public_key != identity.public_key:
            raise InvalidParameter(
                f"this identity ({identity.fingerprint}) is not client {client_id}'s entry in the "
                f"pinned roster ({roster.member(client_id).fingerprint})"
            )
        vec = np.asarray(update)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise InvalidParameter(f"weight must be a number, found {type(weight).__name__}") from None
        if not (math.isfinite(weight) and 0 < weight <= config.weight_bound):
            raise InvalidParameter(
                f"weight must be in (0, weight_bound={config.weight_bound}], found {weight}; "
                "normalise weights or raise weight_bound in the config"
            )
        if vec.shape != (config.update_size,):
            raise InvalidParameter(f"update has shape {vec.shape}; the round expects ({config.update_size},)")
        if not np.all(np.isfinite(vec)):
            raise InvalidParameter("update has non-finite values (nan/inf)")
        peak = float(np.max(np.abs(vec)))
        if peak > config.value_bound:
            raise InvalidParameter(
                f"update has |value| up to {peak:.4g} > value_bound={config.value_bound}; clip it "
                "first (secagg.encoding.clip_linf) or raise value_bound in the config"
            )
        self.config = config
        self.client_id = client_id
        self.is_dealer = client_id == config.dealer
        self._identity = identity
        self._roster = roster
        self._update = vec
        self._weight = float(weight)
        self._digest = config.digest()
        self._session = session_for(config)
        self._layout = Layout(config.update_size, self._session.slots)
        self._moduli = self._session.level_moduli
        self._box = X25519KeyPair.generate()
        self._stage = ClientStage.NEW
        self._key: CKKSKey | None = None
        self._distribution: bytes | None = None  # the dealer's own, signed
        self._keyed: frozenset[int] = frozenset()
        self._receipt: Receipt | None = None
        self._replies: dict[bytes, bytes | None] = {}  # sha256 of a handled message -> reply
        self._release: Release | None = None
        self.failure: CheckFailed | None = None
        #: clients whose (roster-signed) advert in the key request carried an unusable box key
        self.excluded: dict[int, str] = {}
        self.compute_seconds: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<ClientSession id={self.client_id} stage={self._stage.value} key=redacted>"

    # ---- public API ----------------------------------------------------------------------------

    @property
    def stage(self) -> ClientStage:
        return self._stage

    @property
    def keyed(self) -> frozenset[int]:
        """Who holds this round's key (the dealer and every client it sealed a box to)."""
        return self._keyed

    @property
    def result(self) -> Release:
        """The verified, rounded release of the aggregate (after the aggregate was handled)."""
        if self._release is None:
            why = f"refused: {self.failure}" if self.failure is not None else f"stage {self._stage.value!r}"
            raise ProtocolAbort(self._stage.value, f"client {self.client_id} has no release ({why})")
        return self._release

    def start(self) -> bytes:
        """The key advert: this round's X25519 box key, signed with the identity key. Once."""
        if self._stage is not ClientStage.NEW:
            raise AlreadyUsed(f"client {self.client_id} already started this round")
        t0 = time.perf_counter()
        unsigned = KeyAdvert(self._digest, self.client_id, self._box.public_bytes, b"")
        advert = KeyAdvert(unsigned.config_digest, unsigned.client_id, unsigned.box_public,
                           self._identity.signing_key.sign(unsigned.signed_part()))
        self._stage = ClientStage.KEYS
        self._tick("advertise", t0)
        return advert.to_bytes()

    def handle_bytes(self, data: bytes) -> bytes | None:
        """Take one message from the server; return the reply to send (None: nothing to send)."""
        fingerprint = hashlib.sha256(data).digest()
        if fingerprint in self._replies:
            return self._replies[fingerprint]  # a transport retry: same message, same reply
        if self._stage is ClientStage.FAILED:
            raise AlreadyUsed(f"client {self.client_id} refused this round earlier ({self.failure})")
        if self._stage is ClientStage.NEW:
            raise AlreadyUsed(f"client {self.client_id}: call start() before handling messages")
        kind, _ = peek(data)
        stage = self._stage
        if (kind in (Kind.KEY_REQUEST, Kind.KEY_DELIVERY) and stage is not ClientStage.KEYS) or (
            kind == Kind.AGGREGATE and stage is ClientStage.DONE
        ):
            raise AlreadyUsed(
                f"client {self.client_id} already passed the stage of this message (kind {kind}); a "
                "different message for a finished stage is refused"
            )
        try:
            if kind == Kind.KEY_REQUEST:
                reply = self._on_key_request(data)
            elif kind == Kind.KEY_DELIVERY:
                reply = self._on_key_delivery(data)
            elif kind == Kind.AGGREGATE and stage is ClientStage.AGGREGATE:
                reply = self._on_aggregate(data)
            else:
                raise CheckFailed(stage.value, Check.MESSAGE_FORMAT,
                                  f"unexpected server message (kind {kind}) at stage {stage.value!r}")
        except CheckFailed as exc:
            self._fail(exc)
            raise
        self._replies[fingerprint] = reply
        return reply

    # ---- key ceremony --------------------------------------------------------------------------

    def _on_key_request(self, data: bytes) -> bytes | None:
        """Every client checks the adverts the server accepted (roster signatures, its own key);
        the dealer then seals the key to each verified peer with a usable box key."""
        stage = "key request"
        t0 = time.perf_counter()
        try:
            request = KeyRequest.from_bytes(data)
        except RejectedMessage as exc:
            raise CheckFailed(stage, Check.MESSAGE_FORMAT,
                              f"the key request is malformed: {exc.reason}") from None
        if request.config_digest != self._digest:
            raise CheckFailed(stage, Check.MESSAGE_FORMAT, "the key request is for another round config")
        if self.is_dealer and self._distribution is not None:
            raise AlreadyUsed("the dealer already dealt this round's key for another key request")
        ids = [a.client_id for a in request.adverts]
        if len(set(ids)) != len(ids):
            raise CheckFailed(stage, Check.MESSAGE_FORMAT, "the key request lists a client twice")
        for needed, whose in ((self.client_id, "this client's own"), (self.config.dealer, "the dealer's")):
            if needed not in ids:
                raise CheckFailed(stage, Check.MESSAGE_FORMAT, f"the key request leaves out {whose} advert")
        peers = []
        for advert in request.adverts:
            who = advert.client_id
            if advert.config_digest != self._digest or who not in self.config.client_ids:
                raise CheckFailed(stage, Check.MESSAGE_FORMAT,
                                  f"the key request carries an advert for client {who} of another round")
            self._verify_advert(advert)
            if who == self.client_id:
                if advert.box_public != self._box.public_bytes:
                    raise CheckFailed(stage, Check.BOX_BINDING,
                                      "the key request carries another box key for this very client")
                continue
            try:
                self._check_box_key(advert.box_public)
            except InvalidParameter:
                # Signed by its own roster identity: that member sent an unusable key. It is left
                # out (the dealer seals it nothing); it must not stop the round for the others.
                self.excluded[who] = "low-order or malformed X25519 box key"
                continue
            peers.append(advert)
        if len(peers) + 1 < self.config.min_clients:
            raise CheckFailed(stage, Check.MIN_CLIENTS,
                              f"{len(peers) + 1} client(s) with verified, usable keys is below "
                              f"min_clients={self.config.min_clients}")
        self._tick("check adverts", t0)
        if not self.is_dealer:
            return None  # only the dealer deals; the others wait for their key delivery
        t0 = time.perf_counter()
        recipients = [a for a in peers if a.client_id != self.config.dealer]
        self._key, dist = deal_key(self.config, self._session, self._identity.signing_key, recipients)
        self._distribution = dist.to_bytes()
        self._keyed = frozenset({self.client_id, *dist.recipients})
        self._tick("deal", t0)
        return self._distribution

    def _verify_advert(self, advert: KeyAdvert) -> None:
        """A relayed advert must be signed by its sender's roster identity (no substituted key)."""
        try:
            verify_advert(self.config, self._roster, advert)
        except AuthenticationFailed:
            raise CheckFailed(
                "key request", Check.ADVERT_SIGNATURE,
                f"the advert relayed for client {advert.client_id} is not signed by its roster "
                "identity: the server substituted or forged its key; refusing to deal",
            ) from None

    def _check_box_key(self, public: bytes) -> None:
        check_box_key(public)

    def _verify_distribution(self, dist: KeyDistribution) -> None:
        """The distribution must be signed by the configured dealer's roster identity."""
        try:
            self._roster.verify(self.config.dealer, dist.signature, dist.signed_part(),
                                what="key distribution")
        except AuthenticationFailed:
            raise CheckFailed(
                "key delivery", Check.DISTRIBUTION_SIGNATURE,
                f"the key distribution is not signed by the dealer's (client {self.config.dealer}) "
                "roster identity",
            ) from None

    def _check_own_box(self, dist: KeyDistribution) -> None:
        box = dist.box_for(self.client_id)
        if box is None:
            raise CheckFailed("key delivery", Check.LEFT_OUT,
                              f"the dealer (client {self.config.dealer}) sealed no key to client "
                              f"{self.client_id}: its advert did not reach the dealer in time or was "
                              "refused; it sits this round out")
        if box.box_public != self._box.public_bytes:
            raise CheckFailed("key delivery", Check.BOX_BINDING,
                              "the dealer's signed distribution seals this client's key to another "
                              "X25519 key than the one it advertised")

    def _on_key_delivery(self, data: bytes) -> bytes:
        stage = "key delivery"
        t0 = time.perf_counter()
        try:
            msg = KeyDelivery.from_bytes(data)
        except RejectedMessage as exc:
            raise CheckFailed(stage, Check.MESSAGE_FORMAT,
                              f"the key delivery is malformed: {exc.reason}") from None
        dist = msg.distribution
        if msg.config_digest != self._digest or dist.config_digest != self._digest:
            raise CheckFailed(stage, Check.MESSAGE_FORMAT, "the key delivery is for another round config")
        if self.is_dealer:
            if self._distribution is None or dist.to_bytes() != self._distribution:
                raise CheckFailed(stage, Check.MESSAGE_FORMAT,
                                  "the key delivery does not carry this dealer's own key distribution")
        else:
            if dist.dealer != self.config.dealer:
                raise CheckFailed(stage, Check.DISTRIBUTION_SIGNATURE,
                                  f"the key delivery names client {dist.dealer} as dealer; the "
                                  f"config's dealer is client {self.config.dealer}")
            self._verify_distribution(dist)
            recipients = dist.recipients
            allowed = set(self.config.client_ids) - {self.config.dealer}
            if len(set(recipients)) != len(recipients) or not set(recipients) <= allowed:
                raise CheckFailed(stage, Check.MESSAGE_FORMAT,
                                  "the dealer's distribution lists a recipient twice or outside the round")
            self._check_own_box(dist)
            if len(recipients) + 1 < self.config.min_clients:
                raise CheckFailed(stage, Check.MIN_CLIENTS,
                                  f"the dealer keyed {len(recipients) + 1} client(s); min_clients is "
                                  f"{self.config.min_clients}")
            box = dist.box_for(self.client_id)
            assert box is not None  # _check_own_box
            try:
                self._key = open_key(self.config, self._session, self.client_id, self._box, box)
            except AuthenticationFailed:
                raise CheckFailed(
                    stage, Check.KEY_BOX,
                    f"the key box the dealer (client {self.config.dealer}) signed for client "
                    f"{self.client_id} does not open: the dealer is malicious or faulty",
                ) from None
            self._keyed = frozenset({self.config.dealer, *recipients})
        self._tick("open key", t0)
        upload = self._upload()
        self._stage = ClientStage.AGGREGATE
        return upload

    def _require_key(self) -> CKKSKey:
        if self._key is None:
            raise AlreadyUsed(f"client {self.client_id} has no key yet (stage {self._stage.value})")
        return self._key

    # ---- upload --------------------------------------------------------------------------------

    def _upload(self) -> bytes:
        key, session, cfg = self._require_key(), self._session, self.config
        sketcher = Sketcher(key.derive(cfg, SKETCH_PURPOSE), self._moduli, session.n)
        blobs = []
        enc_s = sketch_s = 0.0
        for i, values in enumerate(self._layout.pack(np.asarray(self._update), self._weight)):
            t0 = time.perf_counter()
            blob = key.seal.encrypt(values)
            t1 = time.perf_counter()
            # The upload is seeded (c1 is a PRNG seed): SEAL's loader expands the c1 the server
            # will add, so the sketch covers exactly what is summed.
            sketcher.add(session.coefficients(session.load(blob, what=f"own ciphertext {i}")))
            sketch_s += time.perf_counter() - t1
            enc_s += t1 - t0
            blobs.append(blob)
        t0 = time.perf_counter()
        unsigned = Upload(self._digest, cfg.round, self.client_id, tuple(blobs), b"", b"")
        chunks_digest = unsigned.chunks_digest()
        sealed = seal_sketch(key.derive(cfg, SKETCH_SEAL_PURPOSE), cfg, self.client_id, chunks_digest,
                             sketcher.value())
        bare = Upload(self._digest, cfg.round, self.client_id, (), sealed, b"")
        signed_bytes = bare.signed_bytes(chunks_digest)
        signature = self._identity.signing_key.sign(signed_bytes)
        self._receipt = Receipt(self.client_id, chunks_digest, sealed, signature)
        upload = Upload(self._digest, cfg.round, self.client_id, tuple(blobs), sealed, signature)
        self.compute_seconds["encrypt"] = self.compute_seconds.get("encrypt", 0.0) + enc_s
        self.compute_seconds["sketch"] = self.compute_seconds.get("sketch", 0.0) + sketch_s
        self._tick("sign", t0)
        return upload.to_bytes()

    # ---- aggregate -----------------------------------------------------------------------------

    def _on_aggregate(self, data: bytes) -> bytes | None:
        stage, cfg = "aggregate", self.config
        t0 = time.perf_counter()
        key = self._require_key()
        try:
            msg = Aggregate.from_bytes(data)
        except RejectedMessage as exc:
            raise CheckFailed(stage, Check.MESSAGE_FORMAT,
                              f"the aggregate is malformed: {exc.reason}") from None
        if msg.config_digest != self._digest or msg.round != cfg.round:
            raise CheckFailed(stage, Check.MESSAGE_FORMAT,
                              "the aggregate is for another round config or round")
        ids = msg.contributors
        if len(set(ids)) != len(ids):
            raise CheckFailed(stage, Check.CONTRIBUTORS, "the aggregate lists a contributor twice")
        strangers = sorted(set(ids) - self._keyed)
        if strangers:
            raise CheckFailed(stage, Check.CONTRIBUTORS,
                              f"the aggregate lists client(s) {strangers[:8]}, who hold no key this round")
        if self.client_id not in ids:
            raise CheckFailed(stage, Check.CONTRIBUTORS,
                              "the aggregate leaves out this client's own upload")
        if len(ids) < cfg.min_clients:
            raise CheckFailed(stage, Check.MIN_CLIENTS,
                              f"the aggregate has {len(ids)} contributor(s); min_clients is "
                              f"{cfg.min_clients}; refusing to decrypt")
        if len(msg.chunks) != self._layout.chunks:
            raise CheckFailed(stage, Check.MESSAGE_FORMAT,
                              f"the aggregate has {len(msg.chunks)} ciphertexts, expected "
                              f"{self._layout.chunks}")
        for receipt in msg.receipts:
            try:
                self._roster.verify(receipt.client_id, receipt.signature,
                                    receipt.signed_bytes(self._digest, cfg.round), what="upload")
            except AuthenticationFailed:
                raise CheckFailed(stage, Check.UPLOAD_SIGNATURE,
                                  f"the receipt of client {receipt.client_id} is not signed by its "
                                  "roster identity") from None
            if receipt.client_id == self.client_id and receipt != self._receipt:
                raise CheckFailed(stage, Check.CONTRIBUTORS,
                                  "the aggregate's receipt for this client is not the upload it sent")
        cts = []
        for i, blob in enumerate(msg.chunks):
            try:
                cts.append(self._session.load(blob, what=f"aggregate ciphertext {i}"))
            except CiphertextRejected as exc:
                raise CheckFailed(stage, Check.CIPHERTEXT, str(exc)) from None
        self._check_sketch(key, msg, cts)
        self._tick("verify aggregate", t0)
        t0 = time.perf_counter()
        plain = [key.seal.decrypt_exact(ct) for ct in cts]
        weighted, total_weight, count = self._layout.unpack(plain)
        try:
            self._release = make_release(weighted, total_weight, count, ids, cfg.params.release_quantum)
        except ProtocolAbort as exc:
            raise CheckFailed(stage, Check.CONTRIBUTOR_COUNT, exc.reason) from None
        self._stage = ClientStage.DONE
        self._tick("decrypt", t0)
        return None

    def _check_sketch(self, key: CKKSKey, msg: Aggregate, cts: list[Any]) -> None:
        """``<R, aggregate>`` must equal the sum of the contributors' sealed sketches."""
        cfg, levels = self.config, len(self._moduli)
        seal_key = key.derive(cfg, SKETCH_SEAL_PURPOSE)
        expected = [0] * (PROJECTIONS * levels)
        for receipt in msg.receipts:
            try:
                values = open_sketch(seal_key, cfg, receipt, levels)
            except AuthenticationFailed:
                raise CheckFailed(
                    "aggregate", Check.SKETCH_SEAL,
                    f"the sealed sketch of client {receipt.client_id} does not open although that "
                    f"client signed it: client {receipt.client_id} is faulty or malicious",
                ) from None
            expected = [e + v for e, v in zip(expected, values, strict=True)]
        sketcher = Sketcher(key.derive(cfg, SKETCH_PURPOSE), self._moduli, self._session.n)
        for ct in cts:
            sketcher.add(self._session.coefficients(ct, what="aggregate ciphertext"))
        got = sketcher.value()
        moduli = [q for _ in range(PROJECTIONS) for q in self._moduli]
        if any((e - g) % q for e, g, q in zip(expected, got, moduli, strict=True)):
            raise CheckFailed(
                "aggregate", Check.SKETCH,
                f"the aggregate is not the sum of the {len(msg.receipts)} announced uploads (its "
                "secret projection differs from the sum of their sketches); refusing to decrypt",
            )

    # ---- helpers -------------------------------------------------------------------------------

    def _fail(self, exc: CheckFailed) -> None:
        self._stage = ClientStage.FAILED
        self.failure = exc
        self._key = None  # nothing is decrypted after a refusal

    def _tick(self, name: str, t0: float) -> None:
        self.compute_seconds[name] = self.compute_seconds.get(name, 0.0) + time.perf_counter() - t0
