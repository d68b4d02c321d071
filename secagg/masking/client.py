"""The client side of SecAgg / SecAgg+ as a sans-IO state machine.

A :class:`ClientSession` holds one client's secrets for one round. It takes the server's messages
and returns its replies; it owns no socket, thread or clock, so the project's HTTP client, the
Flower integration and the in-memory simulator all drive this same code.

Stages (Bonawitz et al. 2017, section 4; neighbour graph of Bell et al. 2020):

0. advertise fresh X25519 keys (one to seal shares, one for pairwise masks) and a commitment to
   the self-mask seed, signed in active mode;
1. on the key directory: Shamir-share the mask private key and the seed among the neighbours and
   itself, sealing each share to its recipient, with a salted commitment to each holder's shares;
2. on the share delivery: check each box against its dealer's commitment (a box that fails is a
   dropout, reported in ``excluded``), mask the update with the self mask and one pairwise mask per neighbour
   that shared, and upload it bit-packed;
3. (active mode) sign the survivor set the server announced;
4. on the unmask request: reveal, for each neighbour, either its seed share (it survived) or its
   mask-key share (it dropped), never both. This stage runs once: a second request is refused.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import numpy.typing as npt

from secagg.encoding.packing import BitPacker
from secagg.errors import AlreadyUsed, AuthenticationFailed, InvalidParameter, ProtocolAbort
from secagg.hazmat import shamir
from secagg.hazmat.aead import open_sealed, seal
from secagg.hazmat.agreement import X25519KeyPair
from secagg.hazmat.handles import SecretBytes, Unpicklable
from secagg.hazmat.prg import MaskExpander
from secagg.masking import keys, wire
from secagg.masking import messages as m
from secagg.masking.accusations import report_cap
from secagg.masking.config import MaskingConfig, Stage
from secagg.masking.directory import parse_adverts, transcript_of
from secagg.masking.graph import neighbours as build_graph
from secagg.masking.graph import roster_neighbours
from secagg.masking.intake import addressing_refusal
from secagg.masking.survivors import consistency_refusal, survivor_refusal
from secagg.masking.update import client_value_bound

if TYPE_CHECKING:
    from secagg.identity import Identity, Roster

__all__ = ["ClientSession"]


class ClientSession(Unpicklable):
    """One client's state for one round. Redacted and unpicklable: it holds secrets."""

    def __init__(
        self,
        config: MaskingConfig,
        client_id: int,
        values: npt.NDArray[np.uint32] | None,
        *,
        identity: Identity | None = None,
        roster: Roster | None = None,
        insecure_global_survivor_checks: bool = False,
    ) -> None:
        """``identity`` and ``roster`` are required in active mode (the default with a roster).

        ``values`` is the encoded update (:func:`encode_update`), or None when it does not exist
        yet: a transport that trains only once the keys are shared (Flower's, to keep the update
        out of the state it carries between calls) gives it with :meth:`provide_update` before
        the share delivery.

        ``insecure_global_survivor_checks`` restores the checks this library had before the
        per-neighbourhood ones (survivor count and t signatures from anyone, counted over the
        whole federation). It exists so tests can show the attacks those checks let through;
        never set it otherwise.
        """
        if not 0 <= client_id < 2**32:
            raise InvalidParameter(f"client_id must be in [0, 2^32), found {client_id}")
        if values is not None:
            values = _checked_values(config, values)
        config.check_roster(roster)
        if config.active:
            if identity is None or roster is None:
                raise InvalidParameter("active mode needs this enterprise's identity and the "
                                       "federation's pinned roster")
            if roster.member(client_id).public_key != identity.public_key:
                raise InvalidParameter(f"this identity ({identity.fingerprint}) is not the one "
                                       f"the roster pins for client {client_id}")
        self.config = config
        self.client_id = client_id
        self._values = values
        self._identity = identity
        self._roster = roster
        self._insecure_global = insecure_global_survivor_checks
        self._digest = config.digest()
        self._stage = Stage.ADVERTISE
        self._started = False
        self._cipher = X25519KeyPair.generate()
        self._mask = X25519KeyPair.generate()
        self._seed = SecretBytes(os.urandom(32), label="self-mask-seed")
        self._adverts: dict[int, m.AdvertiseKeys] = {}
        self._my_advert = b""
        self._transcript = b""
        self._pair_keys: dict[int, SecretBytes] = {}  # neighbour -> pairwise mask key
        self._graph: dict[int, frozenset[int]] = {}
        if config.active:
            assert roster is not None
            if client_id not in roster.ids:
                raise InvalidParameter(f"client {client_id} is not in the roster")
            self._graph = roster_neighbours(roster.ids, degree=config.neighbours,
                                            roster_digest=config.roster_digest)
        self._neighbours: frozenset[int] = frozenset()
        self._holders: frozenset[int] = frozenset()
        self._shared: frozenset[int] = frozenset()
        self._included: frozenset[int] = frozenset()  # neighbours masked with, shares held
        self._survivors: tuple[int, ...] | None = None
        # shares this client holds: owner -> (mask-key share, seed share, their two salts)
        self._held: dict[int, keys.HeldShares] = {}
        self._prepared: tuple[frozenset[int], bytes] | None = None  # see prepare_masked_input

    # ---- public API ----------------------------------------------------------------------------

    @property
    def stage(self) -> Stage:
        """The stage whose server message this client is waiting for (DONE at the end)."""
        return self._stage

    @property
    def survivors(self) -> tuple[int, ...] | None:
        """The survivor set this client checked and signed (consistency stage): the inputs
        the released sum holds; None before that stage."""
        return self._survivors

    def start(self) -> m.AdvertiseKeys:
        """Stage 0: the key advertisement. Callable once."""
        if self._started:
            raise AlreadyUsed("ClientSession.start() was already called for this round")
        self._started = True
        advert = m.AdvertiseKeys(
            digest=self._digest, round=self.config.round, party=self.client_id,
            cipher_public=self._cipher.public_bytes, mask_public=self._mask.public_bytes,
            seed_commitment=keys.seed_commitment(self._seed, self.client_id, self._digest,
                                                 self.config.round),
        )
        if self.config.active:
            assert self._identity is not None  # checked in __init__
            advert = dataclasses.replace(advert, signature=self._identity.signing_key.sign(
                keys.advert_bytes(advert)))
        self._my_advert = wire.encode(advert)
        return advert

    @property
    def awaiting_update(self) -> bool:
        """True while this session was made without its update and can still take it."""
        return self._values is None and self._stage in (Stage.ADVERTISE, Stage.SHARE)

    def provide_update(self, values: npt.NDArray[np.uint32]) -> None:
        """Give the encoded update to a session made with ``values=None``: once, before the
        share delivery (the masked input is the first message that needs it)."""
        if self._values is not None:
            raise AlreadyUsed("this session already holds its update")
        if self._stage not in (Stage.ADVERTISE, Stage.SHARE):
            raise ProtocolAbort(self._stage.value, "the update must be given before the share "
                                "delivery")
        self._values = _checked_values(self.config, values)

    def handle(self, msg: m.ServerMessage) -> m.ClientMessage:
        """Take the server's message for the current stage; return this client's reply."""
        if not self._started:
            raise ProtocolAbort(self._stage.value, "start() must be called before handling messages")
        self._check_header(msg)
        handlers: dict[type[Any], tuple[Stage, Any]] = {
            m.KeyDirectory: (Stage.ADVERTISE, self._on_directory),
            m.ShareDelivery: (Stage.SHARE, self._on_delivery),
            m.ConsistencyRequest: (Stage.CONSISTENCY, self._on_consistency),
            m.UnmaskRequest: (Stage.UNMASK, self._on_unmask),
        }
        expected_stage, handler = handlers[type(msg)]
        stage = self._stage
        if stage is Stage.MASKED_INPUT:  # waiting for consistency (active) or unmask request
            stage = Stage.CONSISTENCY if self.config.active else Stage.UNMASK
        if expected_stage is not stage:
            if _ORDER.index(expected_stage) < _ORDER.index(stage) or stage is Stage.DONE:
                raise AlreadyUsed(f"{type(msg).__name__} arrived again after its stage "
                                  f"'{expected_stage.value}' was completed; refusing to answer twice")
            raise ProtocolAbort(stage.value, f"unexpected {type(msg).__name__}: waiting for the "
                                f"'{stage.value}' stage")
        reply: m.ClientMessage = handler(msg)
        return reply

    def handle_bytes(self, data: bytes) -> bytes:
        """:meth:`handle` on encoded messages, for byte transports."""
        msg = wire.decode(data, expect=(m.KeyDirectory, m.ShareDelivery, m.ConsistencyRequest,
                                        m.UnmaskRequest))
        return wire.encode(self.handle(msg))

    # ---- stages --------------------------------------------------------------------------------

    def _on_directory(self, msg: m.KeyDirectory) -> m.ShareKeys:
        cfg, me = self.config, self.client_id
        if cfg.active:  # the graph is the roster's; the directory holds only our neighbours
            self._neighbours = self._graph[me]
            self._holders = self._neighbours | {me}
            stray = set(msg.adverts) - self._holders
            if stray:
                self._abort(f"the key directory carries adverts of clients {sorted(stray)[:5]} "
                            "that are not this client's neighbours in the roster's graph")
        if msg.adverts.get(me) != self._my_advert:
            self._abort("the key directory does not carry this client's own advertisement")
        try:
            adverts = parse_adverts(cfg, self._digest, msg.adverts, self._roster)
            if cfg.active:
                self._transcript = transcript_of(cfg, self._digest, msg)
        except ProtocolAbort as exc:
            self._abort(exc.reason)
        self._adverts = adverts
        if not cfg.active:
            graph = build_graph({p: a.cipher_public + a.mask_public for p, a in adverts.items()},
                                degree=cfg.neighbours, config_digest=self._digest)
            self._graph = graph
            self._neighbours = graph[me]
            self._holders = self._neighbours | {me}
            if len(adverts) < cfg.threshold:
                self._abort(f"only {len(adverts)} clients advertised keys; threshold is "
                            f"{cfg.threshold}")
        live = self._holders & set(adverts)
        if len(live) < cfg.threshold:
            self._abort(f"only {len(live)} of this client's {len(self._holders)} share holders "
                        f"advertised keys; threshold is {cfg.threshold}")
        xs = [p + 1 for p in sorted(self._holders)]
        key_shares = shamir.split(self._mask.export_private_bytes_for_sharing(),
                                  threshold=cfg.threshold, xs=xs)
        seed_shares = shamir.split(self._seed, threshold=cfg.threshold, xs=xs)
        sealed: dict[int, bytes] = {}
        commitments: dict[int, bytes] = {}
        for v in sorted(live):
            key_salt, seed_salt = os.urandom(keys.SALT_BYTES), os.urandom(keys.SALT_BYTES)
            key_share, seed_share = key_shares[v + 1], seed_shares[v + 1]
            commitments[v] = keys.share_commitments(key_share, seed_share, key_salt, seed_salt,
                                                    me, v, self._digest, cfg.round)
            if v == me:
                self._held[me] = (key_share, seed_share, key_salt, seed_salt)
                continue
            try:  # both exchanges refuse a low-order key: refused here, at the directory
                k = keys.share_key(self._cipher, adverts[v].cipher_public, me, v, self._digest,
                                   cfg.round)
                self._pair_keys[v] = keys.pairwise_mask_key(self._mask, adverts[v].mask_public,
                                                            me, v, self._digest, cfg.round)
            except InvalidParameter:
                self._abort(f"advertisement of client {v} carries a low-order X25519 key")
            sealed[v] = seal(k, keys.share_box_plaintext(key_share, seed_share, key_salt, seed_salt),
                             keys.share_associated_data(self._digest, cfg.round, me, v))
        self._neighbours = live - {me}  # from here on: neighbours that advertised
        self._stage = Stage.SHARE
        shares = m.ShareKeys(digest=self._digest, round=cfg.round, party=me, sealed_shares=sealed,
                             commitments=commitments)
        if cfg.active:
            assert self._identity is not None
            shares = dataclasses.replace(shares, signature=self._identity.signing_key.sign(
                keys.share_keys_bytes(shares)))
        return shares

    def _on_delivery(self, msg: m.ShareDelivery) -> m.MaskedInput:
        cfg, me = self.config, self.client_id
        shared = frozenset(msg.shared)
        if not (shared & self._holders) <= set(self._adverts):
            self._abort("the share delivery lists neighbours that never advertised keys")
        if me not in shared:
            self._abort("the share delivery says this client did not share")
        if self._insecure_global and len(shared) < cfg.threshold:
            self._abort(f"only {len(shared)} clients shared keys; threshold is {cfg.threshold}")
        expected = self._neighbours & shared
        if set(msg.sealed_shares) != expected or set(msg.commitments) != expected:
            self._abort("the share delivery does not hold exactly one share box and one share "
                        "commitment from each neighbour that shared")
        bad: set[int] = set()
        for v in sorted(expected):
            k = keys.share_key(self._cipher, self._adverts[v].cipher_public, v, me,
                               self._digest, cfg.round)
            try:
                plain = open_sealed(k, msg.sealed_shares[v],
                                    keys.share_associated_data(self._digest, cfg.round, v, me),
                                    what=f"shares from client {v}")
            except AuthenticationFailed:
                if self._insecure_global:
                    self._abort(f"shares from client {v} failed authentication")
                bad.add(v)  # a malicious peer (or a tampering server): treat it as a dropout
                continue
            held = keys.split_share_box(plain)
            if held is None or not hmac.compare_digest(
                    keys.share_commitments(*held, v, me, self._digest, cfg.round),
                    msg.commitments[v]):
                bad.add(v)  # shares that are not what their dealer committed to: a dropout
                continue
            self._held[v] = held
        included = frozenset(expected - bad)
        cap = report_cap(cfg.neighbours, cfg.threshold)
        if len(bad) > cap or len(included) + 1 < cfg.threshold:
            self._abort(f"{len(bad)} neighbours sent invalid share boxes ({sorted(bad)[:5]}), "
                        f"more than the {cap} a round tolerates, or the {len(included)} valid "
                        f"ones with this client fall below the threshold {cfg.threshold}")
        if self._values is None:
            self._abort("the share delivery arrived before this client's update was given "
                        "(provide_update)")
        self._shared = shared
        self._included = included
        prepared, self._prepared = self._prepared, None
        payload = prepared[1] if prepared is not None and prepared[0] == included \
            else self._masked_payload(included)
        self._values = np.empty(0, dtype=np.uint32)  # not needed again (nor re-sealed)
        self._stage = Stage.MASKED_INPUT
        return m.MaskedInput(digest=self._digest, round=cfg.round, party=me, payload=payload,
                             excluded=tuple(sorted(bad)))

    def prepare_masked_input(self) -> None:
        """Mask the update ahead of the share delivery, as if every neighbour shares.

        Callable once the key directory is handled (stage ``share``), for instance in a worker
        thread while the transport waits for the delivery; the caller must let it finish before
        handing the delivery to :meth:`handle`, which then uses it if the delivery lists every
        neighbour and otherwise masks again with the neighbours that did share. A prepared input
        for the wrong set never leaves the session.
        """
        if self._stage is not Stage.SHARE:
            raise ProtocolAbort(self._stage.value, "prepare_masked_input() needs the key "
                                "directory handled and the delivery not yet")
        if self._values is None:
            raise ProtocolAbort(self._stage.value, "prepare_masked_input() needs the update "
                                "(provide_update)")
        self._prepared = (self._neighbours, self._masked_payload(self._neighbours))

    def _masked_payload(self, neighbours: frozenset[int]) -> bytes:
        cfg, me = self.config, self.client_id
        masks = [(keys.self_mask_key(self._seed, me, self._digest, cfg.round), False)]
        for v in sorted(neighbours):
            masks.append((self._pair_keys[v], me > v))
        assert self._values is not None  # checked by the callers
        packer = BitPacker(cfg.wire_length, cfg.mod_bits)
        acc = packer.buffer[: cfg.wire_length]
        acc[:] = self._values
        MaskExpander().apply_many(acc, masks, after_chunk=packer.pack_through)
        return packer.to_bytes()

    def _check_survivors(self, survivors: tuple[int, ...]) -> None:
        refusal = survivor_refusal(self.client_id, survivors, self._shared, self._included,
                                   self.config.threshold, insecure_global=self._insecure_global)
        if refusal is not None:
            self._abort(refusal)

    def _on_consistency(self, msg: m.ConsistencyRequest) -> m.ConsistencySignature:
        self._check_survivors(msg.survivors)
        self._survivors = msg.survivors
        assert self._identity is not None
        sig = self._identity.signing_key.sign(keys.consistency_bytes(
            self._digest, self.config.round, msg.survivors, self._transcript))
        self._stage = Stage.UNMASK
        return m.ConsistencySignature(digest=self._digest, round=self.config.round,
                                      party=self.client_id, signature=sig)

    def _check_consistency(self, msg: m.UnmaskRequest) -> None:
        """Active mode: S is the set we signed and check (2) of :mod:`.survivors` holds."""
        cfg = self.config
        if msg.survivors != self._survivors:
            self._abort("the server announced different survivor sets (consistency check)")
        signed = keys.consistency_bytes(self._digest, cfg.round, msg.survivors, self._transcript)
        assert self._roster is not None
        refusal = consistency_refusal(self._roster, self._graph, self.client_id, self._included,
                                      msg.survivors, msg.signatures, signed, cfg.threshold,
                                      insecure_global=self._insecure_global)
        if refusal is not None:
            self._abort(refusal)

    def _on_unmask(self, msg: m.UnmaskRequest) -> m.UnmaskShares:
        cfg = self.config
        self._check_survivors(msg.survivors)
        if cfg.active:
            self._check_consistency(msg)
        survivors = set(msg.survivors)
        seed_shares: dict[int, bytes] = {}
        key_shares: dict[int, bytes] = {}
        pair_keys: dict[int, bytes] = {}  # dropped neighbours: our one mask with each
        for owner in sorted(self._included | {self.client_id}):
            key_share, seed_share, key_salt, seed_salt = self._held[owner]
            if owner in survivors:
                seed_shares[owner] = seed_share.expose_secret_bytes() + seed_salt
            else:
                key_shares[owner] = key_share.expose_secret_bytes() + key_salt
                pair_keys[owner] = self._pair_keys[owner].expose_secret_bytes()
        self._held.clear()
        self._pair_keys.clear()
        self._stage = Stage.DONE
        return m.UnmaskShares(digest=self._digest, round=cfg.round, party=self.client_id,
                              seed_shares=seed_shares, mask_key_shares=key_shares,
                              pair_keys=pair_keys)

    # ---- helpers -------------------------------------------------------------------------------

    def _check_header(self, msg: m.ServerMessage) -> None:
        refusal = addressing_refusal(msg, self._digest, self.config.round, self.client_id)
        if refusal is not None:
            raise ProtocolAbort(self._stage.value, refusal)

    def abandon(self, reason: str = "") -> None:
        """End this session as a dropout, dropping its secrets: for a transport whose own step
        failed (a ClientApp that trained and then failed must not be asked to train again).
        ``reason`` is for the caller's log; the session keeps no record of it."""
        self._stage = Stage.DONE
        self._held.clear()
        self._pair_keys.clear()

    def _abort(self, reason: str) -> NoReturn:
        self.abandon(reason)
        raise ProtocolAbort("client", reason)

    def export_state(self, key: SecretBytes) -> bytes:
        """This session sealed under ``key`` (see :mod:`secagg.masking.session_state`): the one
        explicit way its secrets leave it. Keep :attr:`stage` beside the blob for :meth:`restore`."""
        from secagg.masking.session_state import export_session

        return export_session(self, key)

    @classmethod
    def restore(cls, blob: bytes, key: SecretBytes, *, config: MaskingConfig, client_id: int,
                identity: Identity | None, roster: Roster | None, stage: Stage) -> ClientSession:
        """The session :meth:`export_state` sealed at ``stage``; refuses any other blob."""
        from secagg.masking.session_state import restore_session

        return restore_session(cls, blob, key, config=config, client_id=client_id,
                               identity=identity, roster=roster, stage=stage)

    def __repr__(self) -> str:
        return (f"<ClientSession client={self.client_id} round={self.config.round} "
                f"stage={self._stage.value} secrets=redacted>")


def _checked_values(config: MaskingConfig, values: npt.ArrayLike) -> npt.NDArray[np.uint32]:
    """``values`` if it is an encoded update for ``config`` (length, dtype, headroom bound)."""
    arr = np.asarray(values)
    if arr.dtype != np.uint32 or arr.shape != (config.wire_length,):
        raise InvalidParameter(
            f"values must be a uint32 vector of length {config.wire_length} "
            f"(update + weight; see encode_update), found {arr.dtype} {arr.shape}"
        )
    bound = client_value_bound(config)
    if int(arr.max(initial=0)) > bound:
        raise InvalidParameter(f"a value exceeds this client's headroom bound {bound}; "
                               "encode the update with encode_update")
    return arr


_ORDER = [Stage.ADVERTISE, Stage.SHARE, Stage.MASKED_INPUT, Stage.CONSISTENCY, Stage.UNMASK,
          Stage.DONE]

