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

import hashlib
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.ckks.binding import check_roster_binding, session_for
from secagg.ckks.ceremony import ClientStage, KeyCeremony, parse_message
from secagg.ckks.checks import Check, CheckFailed
from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.keys import CKKSKey
from secagg.ckks.layout import Layout
from secagg.ckks.messages import (
    Aggregate,
    KeyAdvert,
    Kind,
    Receipt,
    Upload,
)
from secagg.ckks.packing import PackedKind, pack_ciphertext, unpack_ciphertext
from secagg.ckks.phases import PhaseListener, Phases
from secagg.ckks.release import Release, make_release
from secagg.ckks.sketch import (
    SKETCH_PURPOSE,
    SKETCH_SEAL_PURPOSE,
    Sketcher,
    projections_for,
    seal_sketch,
    verify_aggregate,
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
from secagg.hazmat.seal_codec import CiphertextRejected
from secagg.identity import Identity, Roster

__all__ = ["ClientSession", "ClientStage", "session_for"]


class ClientSession(KeyCeremony, Unpicklable):
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
        on_phase: PhaseListener | None = None,
    ) -> None:
        """``on_phase``: told as each named piece of this session's work starts and ends
        (:mod:`secagg.ckks.phases`), for a driver that times them; the session reads no clock."""
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
        self._phase = Phases(on_phase)

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
        with self._phase("advertise"):
            unsigned = KeyAdvert(self._digest, self.client_id, self._box.public_bytes, b"")
            advert = KeyAdvert(unsigned.config_digest, unsigned.client_id, unsigned.box_public,
                               self._identity.signing_key.sign(unsigned.signed_part()))
        self._stage = ClientStage.KEYS
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

    def _require_key(self) -> CKKSKey:
        if self._key is None:
            raise AlreadyUsed(f"client {self.client_id} has no key yet (stage {self._stage.value})")
        return self._key

    # ---- upload --------------------------------------------------------------------------------

    def _upload(self) -> bytes:
        key, session, cfg = self._require_key(), self._session, self.config
        sketcher = Sketcher(key.derive(cfg, SKETCH_PURPOSE), self._moduli, session.n,
                            projections_for(self._moduli))
        blobs = []
        packed = cfg.params.packed
        for i, values in enumerate(self._layout.pack(np.asarray(self._update), self._weight)):
            with self._phase("encrypt"):
                if packed:  # one real per coefficient, residues packed at the prime's width
                    c0, seed = session.split_seeded(
                        key.seal.encrypt_coefficients(values.view(np.float64)), what=f"own ciphertext {i}")
                    blob = pack_ciphertext(PackedKind.SEEDED, c0, self._moduli, seed)
                    seal_blob = session.join_seeded(c0, seed)  # what the server rebuilds and loads
                else:
                    blob = seal_blob = key.seal.encrypt(values)
            # The upload is seeded (c1 is a PRNG seed): SEAL's loader expands the c1 the server
            # will add, so the sketch covers exactly what is summed.
            with self._phase("sketch"):
                sketcher.add(session.coefficients(session.load(seal_blob, what=f"own ciphertext {i}")))
            blobs.append(blob)
        with self._phase("sign"):
            return self._signed_upload(key, tuple(blobs), sketcher.value())

    def _signed_upload(self, key: CKKSKey, blobs: tuple[bytes, ...],
                       sketch: tuple[int, ...]) -> bytes:
        """The upload of ``blobs`` with its sealed ``sketch``, signed with the identity key."""
        cfg = self.config
        unsigned = Upload(self._digest, cfg.round, self.client_id, blobs, b"", b"")
        chunks_digest = unsigned.chunks_digest()
        sealed = seal_sketch(key.derive(cfg, SKETCH_SEAL_PURPOSE), cfg, self.client_id, chunks_digest,
                             sketch)
        bare = Upload(self._digest, cfg.round, self.client_id, (), sealed, b"")
        signed_bytes = bare.signed_bytes(chunks_digest)
        signature = self._identity.signing_key.sign(signed_bytes)
        self._receipt = Receipt(self.client_id, chunks_digest, sealed, signature)
        upload = Upload(self._digest, cfg.round, self.client_id, blobs, sealed, signature)
        return upload.to_bytes()

    # ---- aggregate -----------------------------------------------------------------------------

    def _on_aggregate(self, data: bytes) -> bytes | None:
        with self._phase("verify aggregate"):
            key = self._require_key()
            msg, cts = self._verified_aggregate(key, data)
        with self._phase("decrypt"):
            if self.config.params.packed:
                plain = [key.seal.decrypt_coefficients(ct).view(np.complex128) for ct in cts]
            else:
                plain = [key.seal.decrypt_exact(ct) for ct in cts]
            weighted, total_weight, count = self._layout.unpack(plain)
            try:
                self._release = make_release(weighted, total_weight, count, msg.contributors,
                                             self.config.params.release_quantum)
            except ProtocolAbort as exc:
                raise CheckFailed("aggregate", Check.CONTRIBUTOR_COUNT, exc.reason) from None
        self._stage = ClientStage.DONE
        return None

    def _verified_aggregate(self, key: CKKSKey, data: bytes) -> tuple[Aggregate, list[Any]]:
        """The aggregate and its loaded ciphertexts, once every check before decryption passed
        (see the module doc); a failed check raises :class:`CheckFailed`."""
        stage, cfg = "aggregate", self.config
        msg = parse_message(Aggregate.from_bytes, data, stage, "aggregate")
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
        packed, session = cfg.params.packed, self._session
        for i, blob in enumerate(msg.chunks):
            what = f"aggregate ciphertext {i}"
            try:
                if packed:  # strict decode, then SEAL's own checked loader on the rebuilt object
                    polys, _ = unpack_ciphertext(blob, PackedKind.FULL, session.n, self._moduli, what=what)
                    blob = session.join_full(polys)
                cts.append(session.load(blob, what=what))
            except CiphertextRejected as exc:
                raise CheckFailed(stage, Check.CIPHERTEXT, str(exc)) from None
            except RejectedMessage as exc:
                raise CheckFailed(stage, Check.CIPHERTEXT, exc.reason) from None
        self._check_sketch(key, msg, cts)
        return msg, cts

    def _check_sketch(self, key: CKKSKey, msg: Aggregate, cts: list[Any]) -> None:
        """``<R, aggregate>`` must equal the sum of the contributors' sealed sketches."""
        verify_aggregate(key, self.config, msg.receipts, cts, self._session, self._moduli)

    # ---- helpers -------------------------------------------------------------------------------

    def _fail(self, exc: CheckFailed) -> None:
        self._stage = ClientStage.FAILED
        self.failure = exc
        self._key = None  # nothing is decrypted after a refusal

