"""One client's side of one round, per protection mode: what the runtime posts and decodes.

Each mode is a small participant class in :data:`CLIENT_MODES`, built from the round the server
opened (:class:`RoundInfo`) and the update; it runs the same sans-IO session the server and the
simulators run (:mod:`secagg.masking`, :mod:`secagg.ckks`) and only turns bytes into bytes: the
runtime (:mod:`secagg_clients.runtime`) moves them over HTTP. A participant that detects the
server deviating raises :class:`secagg.errors.ProtocolAbort`; the runtime ends the round for
this client with :class:`secagg_clients.runtime.RoundRefused`.

``last_stage`` names the stage whose message the participant produced last (what the runtime
reports as ``stage_done``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from secagg.contract import ReleasedAggregate, encode_plain
from secagg.dp.distributed import (
    DistributedNoise,
    add_noise_share,
    remove_noise_offset,
    round_noise,
)
from secagg.encoding import clip_l2, dequantize_sum
from secagg.errors import InvalidParameter, ProtocolAbort
from secagg.identity import Identity, Roster
from secagg.masking import Aggregate, ClientSession, MaskingConfig, Stage, encode_update, wire
from secagg.masking import messages as m

if TYPE_CHECKING:  # secagg.ckks loads TenSEAL: imported only when a ckks round starts
    from secagg import ckks

__all__ = ["CLIENT_MODES", "Participant", "ParticipantFactory", "RoundInfo", "check_enrolment",
           "check_round_roster"]

log = logging.getLogger(__name__)

#: the masking stage a client session is in after answering -> the stage it just answered
_MASKING_DONE = {Stage.ADVERTISE: "advertise", Stage.SHARE: "share",
                 Stage.MASKED_INPUT: "masked-input", Stage.UNMASK: "consistency",
                 Stage.DONE: "unmask"}


@dataclass(frozen=True)
class RoundInfo:
    """A round the server opened: ``round_id`` (its id on the server, in URLs), ``index`` (the
    federation's round number, 0, 1, ...: what every message and report shows), ``mode``, the
    round's ``config`` and this token's ``client_id``."""

    round_id: int
    index: int
    mode: str
    config: dict[str, Any]
    client_id: int


ReleaseHook = Callable[[DistributedNoise, int], None]


class Participant(Protocol):
    """One client's side of one round in one mode (see :data:`CLIENT_MODES`)."""

    #: the stage whose message :meth:`first` / :meth:`reply` produced last
    last_stage: str
    #: called with the round's distributed noise and the noise shares the sum will hold just
    #: before the message that lets the server unmask the sum is returned (client-level DP:
    #: the caller records the release durably first); None: nothing to record
    on_release: ReleaseHook | None

    def first(self) -> bytes:
        """The message to post as soon as the round is known: built on the first call, the same
        bytes on every later one (:meth:`RuntimeClient.prepare` builds it before the ledger is
        charged, so whatever could fail before sending fails before charging)."""

    def reply(self, data: bytes) -> bytes | None:
        """Answer a stage message from the server; None when there is nothing to post."""

    def decode(self, meta: ReleasedAggregate, payload: bytes) -> npt.NDArray[np.float64]:
        """The released weighted sum ``sum_i w_i x_i`` from the round's result."""

    def total_weight(self, meta: ReleasedAggregate) -> int:
        """``sum_i w_i`` over the survivors (after :meth:`decode`)."""


class _Masking:
    """Client side of a masking round: one ClientSession, replies computed in memory.

    Once its shares are sent, the update is masked in a worker thread while the other clients
    share (:meth:`ClientSession.prepare_masked_input`), so the masked input is usually ready
    when the share delivery arrives instead of being computed then.
    """

    def __init__(self, info: RoundInfo, update: npt.NDArray[np.float32], weight: int, *,
                 identity: Identity, roster: Roster) -> None:
        self.config = MaskingConfig.from_dict(info.config)
        check_round_roster(self.config.roster_digest, roster, active=self.config.active)
        check_enrolment(info.client_id, identity, roster)
        self.noise = round_noise(self.config)
        if self.noise is not None:
            # client-level DP: clip to the round's L2 bound, quantise, add this client's
            # Skellam share (an unweighted round: the weight coordinate carries no noise)
            update, _ = clip_l2(update, self.noise.l2_clip)
            weight = 1
        values = encode_update(self.config, update, weight=weight)
        if self.noise is not None:
            values[:-1] = add_noise_share(values[:-1], self.noise)
        self.session = ClientSession(self.config, info.client_id, values, identity=identity,
                                     roster=roster)
        self._preparing: threading.Thread | None = None
        self.last_stage = ""
        self._first: bytes | None = None
        self.on_release: ReleaseHook | None = None

    def first(self) -> bytes:
        if self._first is None:
            self._first = wire.encode(self.session.start())
            self.last_stage = _MASKING_DONE[self.session.stage]
        return self._first

    def reply(self, data: bytes) -> bytes:
        if self._preparing is not None:  # the session is not thread-safe: let it finish first
            self._preparing.join()
            self._preparing = None
        answer = self.session.handle_bytes(data)
        self.last_stage = _MASKING_DONE[self.session.stage]
        if self.noise is not None and self.on_release is not None \
                and wire.peek_type(answer) is m.UnmaskShares:
            # these shares let the server unmask the noisy sum of the survivors this client
            # signed: record that release before it can happen (a server that then withholds
            # the result still cost this much)
            signed = self.session.survivors
            if signed is None:  # the consistency stage comes first; never reached
                raise ProtocolAbort("unmask", "an unmask reply before this client signed a "
                                    "survivor set")
            self.on_release(self.noise, len(signed))
        if self.session.stage is Stage.SHARE:
            self._preparing = threading.Thread(target=self._prepare, daemon=True,
                                               name="secagg-mask")
            self._preparing.start()
        return answer

    def _prepare(self) -> None:
        try:
            self.session.prepare_masked_input()
        except Exception:  # the delivery masks the update itself (and reports any error)
            log.debug("preparing the masked input failed", exc_info=True)

    def decode(self, meta: ReleasedAggregate, payload: bytes) -> npt.NDArray[np.float64]:
        total = np.frombuffer(payload, dtype="<u4")  # read in place: decoding makes a new array
        if self.noise is not None:
            # the noise shares in the sum: the survivor set this client checked and signed
            # (never fewer than the threshold), which the server's result must repeat
            signed = self.session.survivors
            if signed is None or sorted(signed) != sorted(meta.survivors):
                raise ProtocolAbort("result", f"the server's result lists survivors "
                                    f"{list(meta.survivors)} but this client signed "
                                    f"{None if signed is None else sorted(signed)}")
            shares = len(signed)
            said = meta.extra.get("distributed_dp", {}).get("noise_shares") \
                if isinstance(meta.extra.get("distributed_dp"), dict) else None
            if said != shares:
                raise ProtocolAbort("result", f"the server's result names {said!r} noise shares "
                                    f"for {shares} survivors")
            if total.shape != (self.config.vector_length,):
                raise ProtocolAbort("result", f"the masking sum has {total.size} values; the "
                                    f"round has {self.config.vector_length}")
            ints = remove_noise_offset(total, self.noise, num_contributors=shares)
            return dequantize_sum(ints, self.config.fixed_point,
                                  total_weight=self.total_weight(meta))
        agg = Aggregate(total=total, total_weight=self.total_weight(meta),
                        survivors=meta.survivors, dropped=meta.dropped, config=self.config)
        return agg.weighted_sum()

    def total_weight(self, meta: ReleasedAggregate) -> int:
        if meta.total_weight is None:
            raise ProtocolAbort("result", "the server's masking result carries no total weight")
        return int(meta.total_weight)


class _Plain:
    """No protection (benchmark baseline): upload ``SAGP | u32 weight | float32[]``."""

    on_release: ReleaseHook | None = None  # no distributed noise

    def __init__(self, info: RoundInfo, update: npt.NDArray[np.float32], weight: int, *,
                 identity: Identity | None = None, roster: Roster | None = None) -> None:
        if update.shape != (int(info.config["vector_length"]),):
            raise InvalidParameter(f"update has shape {update.shape}; the round expects "
                                   f"({info.config['vector_length']},)")
        self.body = encode_plain(update, weight)  # the one plain wire format (secagg.contract)
        self.length = update.shape[0]
        self.last_stage = ""

    def first(self) -> bytes:
        self.last_stage = "upload"
        return self.body

    def reply(self, data: bytes) -> bytes:
        raise ProtocolAbort("plain", "a plain round has one stage; the server sent another "
                            "message")

    def decode(self, meta: ReleasedAggregate, payload: bytes) -> npt.NDArray[np.float64]:
        if len(payload) != 4 * self.length:
            raise ProtocolAbort("result", f"the plain sum is {len(payload)} bytes; "
                                f"{self.length} float32 values are {4 * self.length}")
        return np.frombuffer(payload, dtype="<f4").astype(np.float64)

    def total_weight(self, meta: ReleasedAggregate) -> int:
        if meta.total_weight is None:
            raise ProtocolAbort("result", "the server's plain result carries no total weight")
        return int(meta.total_weight)


class _CKKS:
    """Client side of a CKKS round: one :class:`secagg.ckks.ClientSession`, bound to the pinned
    roster and signing with this enterprise's identity (the same session the simulator runs).

    Stages as the server runs them: post the signed key advert; on the key request (every
    advert the server accepted, each checked here against the roster) the dealer posts its
    signed key distribution and the others post nothing; on the key delivery, open the key
    (non-dealers, after checking the dealer's signature and that the box was sealed to their
    own key) and post the encrypted, signed, sketched update. The server's result is the
    encrypted aggregate: ``decode`` verifies it before decrypting (every contributor keyed and
    signed its upload, this client's own upload is in it, at least ``min_clients``, and the
    sketch check: it is the sum of exactly those uploads) and releases it rounded
    (:class:`secagg.ckks.Release`). Any refusal is a :class:`secagg.ckks.CheckFailed` (a
    :class:`ProtocolAbort`): the runtime ends the round for this client with
    :class:`RoundRefused`.

    The update is clipped to the round's ``value_bound`` like masking clips to ``clip`` (the
    bound is what keeps the encrypted sum from overflowing); the weight must fit
    ``weight_bound``.
    """

    on_release: ReleaseHook | None = None  # no distributed noise

    def __init__(self, info: RoundInfo, update: npt.NDArray[np.float32], weight: int, *,
                 identity: Identity, roster: Roster) -> None:
        from secagg.ckks import CKKSRoundConfig, ClientSession

        self.config = CKKSRoundConfig.from_dict(info.config)
        self.update = _checked_update(info, update, weight, identity=identity, roster=roster,
                                      roster_digest=self.config.roster_digest,
                                      length=self.config.update_size,
                                      weight_bound=self.config.weight_bound,
                                      value_bound=self.config.value_bound)
        self.weight = weight
        self.session: ckks.ClientSession = ClientSession(
            self.config, info.client_id, self.update, weight=float(weight), identity=identity,
            roster=roster)
        self._total_weight: int | None = None
        self.last_stage = ""
        self._first: bytes | None = None

    def first(self) -> bytes:
        if self._first is None:
            self._first = self.session.start()
            self.last_stage = "key advert"
        return self._first

    def reply(self, data: bytes) -> bytes | None:
        # key request -> the dealer's distribution (others: None); key delivery -> the upload
        answer = self.session.handle_bytes(data)
        if answer is not None:
            self.last_stage = "upload" if self.session.stage.name == "AGGREGATE" else \
                "key distribution"
        return answer

    def decode(self, meta: ReleasedAggregate, payload: bytes) -> npt.NDArray[np.float64]:
        self.session.handle_bytes(payload)  # verifies the aggregate, then decrypts and rounds
        release = self.session.result
        if sorted(release.contributors) != sorted(meta.survivors):
            raise ProtocolAbort("result", f"the server's result lists survivors "
                                f"{list(meta.survivors)} but the verified aggregate's signed "
                                f"receipts name {list(release.contributors)}")
        # Released on the preset's grid (<= 2^-20 for COMPACT); integer weights stay exact.
        self._total_weight = round(release.total_weight)
        return np.array(release.weighted_sum, dtype=np.float64)

    def total_weight(self, meta: ReleasedAggregate) -> int:
        if self._total_weight is None:
            raise RuntimeError("decode the aggregate first: the total weight is encrypted with it")
        return self._total_weight


class _CKKSThreshold:
    """Client side of a threshold CKKS round (``ckks-threshold``): one
    :class:`secagg.ckks.threshold.session.ClientSession` with this round's fresh secret, bound
    to the pinned roster and signing with this enterprise's identity.

    Stages as the server runs them: post the signed box-key advert; on the key request (every
    advert checked here against the roster) post this client's secret dealt to every advertiser,
    sealed and signed; on the share delivery (each envelope opened and checked) post the signed
    upload of ``weight * update`` and the weight; on the statement request verify the aggregate
    against the signed uploads (a full re-sum) and post the round's one signed statement; on each
    partial request (the first, and at most one retry with fewer decryptors) post the smudged
    partial decryption, only for the statement it signed and a quorum of roster members signed.
    The server releases the plaintext weighted sum and total weight; ``decode`` checks that its
    survivors are exactly the uploaders this client vouched for. Any refusal is a
    :class:`ProtocolAbort` (the runtime's :class:`RoundRefused`).

    The secret never leaves this process and is not persisted: a restarted client is a dropout.
    The update is clipped to ``value_bound``; the weight must be an integer in
    ``[1, weight_bound]``."""

    on_release: ReleaseHook | None = None  # no distributed noise

    def __init__(self, info: RoundInfo, update: npt.NDArray[np.float32], weight: int, *,
                 identity: Identity, roster: Roster) -> None:
        from secagg.ckks.threshold.session import ClientSession as ThresholdClient
        from secagg.ckks.threshold.session import ThresholdRoundConfig

        self.config = ThresholdRoundConfig.from_dict(info.config)
        self.update = _checked_update(info, update, weight, identity=identity, roster=roster,
                                      roster_digest=self.config.roster_digest,
                                      length=self.config.vector_length,
                                      weight_bound=self.config.weight_bound,
                                      value_bound=self.config.value_bound)
        self.session = ThresholdClient(self.config, info.client_id, self.update,
                                       weight=float(weight), identity=identity, roster=roster)
        self._total_weight: int | None = None
        self.last_stage = ""
        self._first: bytes | None = None

    def first(self) -> bytes:
        if self._first is None:
            self._first = self.session.start()
            self.last_stage = "advert"
        return self._first

    def reply(self, data: bytes) -> bytes | None:
        answer = self.session.handle_bytes(data)
        self.last_stage = {"dealt": "deal", "uploaded": "upload", "signed": "statement",
                           "decrypted": "partial"}.get(self.session.stage.value,
                                                       self.last_stage)
        return answer

    def decode(self, meta: ReleasedAggregate, payload: bytes) -> npt.NDArray[np.float64]:
        signed = self.session.signed_uploaders
        if signed is not None and sorted(signed) != sorted(meta.survivors):
            raise ProtocolAbort("result", f"the server's result lists survivors "
                                f"{list(meta.survivors)} but this client signed the statement "
                                f"for uploaders {list(signed)}")
        length = self.config.vector_length
        if len(payload) != 8 * length:
            raise ProtocolAbort("result", f"the threshold sum is {len(payload)} bytes; "
                                f"{length} float64 values are {8 * length}")
        total = np.frombuffer(payload, dtype="<f8").astype(np.float64)
        if not np.all(np.isfinite(total)):
            raise ProtocolAbort("result", "the threshold sum holds non-finite values")
        weight = meta.total_weight
        if weight is None or not np.isfinite(weight):
            raise ProtocolAbort("result", "the server's threshold result carries no total weight")
        rounded = round(float(weight))
        # integer weights: the decrypted total is within the round's promised error of one
        if abs(float(weight) - rounded) > max(self.config.max_error, 1e-6) \
                or rounded < len(meta.survivors):
            raise ProtocolAbort("result", f"the server's total weight {weight!r} is not the sum "
                                f"of {len(meta.survivors)} integer weights >= 1")
        self._total_weight = rounded
        return total

    def total_weight(self, meta: ReleasedAggregate) -> int:
        if self._total_weight is None:
            raise RuntimeError("decode the result first")
        return self._total_weight


class ParticipantFactory(Protocol):
    def __call__(self, info: RoundInfo, update: npt.NDArray[np.float32], weight: int, *,
                 identity: Identity, roster: Roster) -> Participant: ...


#: Protection modes this runtime speaks: mode name -> participant factory.
CLIENT_MODES: dict[str, ParticipantFactory] = {
    "masking": _Masking, "plain": _Plain, "ckks": _CKKS, "ckks-threshold": _CKKSThreshold,
}


def _checked_update(info: RoundInfo, update: npt.NDArray[np.float32], weight: int, *,
                    identity: Identity, roster: Roster, roster_digest: bytes, length: int,
                    weight_bound: float, value_bound: float) -> npt.NDArray[np.float32]:
    """What both CKKS participants check before anything is encrypted: the round is bound to
    the pinned roster and this enrolment, the update has the round's length and the weight fits
    ``weight_bound``; the update clipped to ``value_bound`` (the bound that keeps the encrypted
    sum from overflowing)."""
    from secagg.encoding import clip_linf

    check_round_roster(roster_digest, roster)
    check_enrolment(info.client_id, identity, roster)
    if update.shape != (length,):
        raise InvalidParameter(f"update has shape {update.shape}; the round expects ({length},)")
    if isinstance(weight, bool) or not 1 <= weight <= weight_bound:
        raise InvalidParameter(f"weight must be an integer in [1, weight_bound="
                               f"{weight_bound:g}], found {weight}; the operator sets "
                               "weight_bound when opening the round")
    clipped: npt.NDArray[np.float32] = clip_linf(update, value_bound)
    return clipped


def _digest_prefix(digest: bytes) -> str:
    return digest.hex()[:16] + "..." if digest else "(none)"


def check_round_roster(round_digest: bytes, roster: Roster, *, active: bool = True) -> None:
    """Raise :class:`ProtocolAbort` unless a round's config is bound to the pinned roster."""
    if not active:
        raise ProtocolAbort("config", "the server opened a passive (honest-but-curious) masking "
                            "round; this client takes part only in active rounds bound to its "
                            "pinned roster")
    pinned = roster.digest()
    if round_digest != pinned:
        raise ProtocolAbort("config", f"the round is bound to roster {_digest_prefix(round_digest)}"
                            f" but this client pinned roster {_digest_prefix(pinned)} (federation "
                            f"{roster.federation!r}); check that the server's federation was "
                            "created with the roster every enterprise compared")


def check_enrolment(client_id: int, identity: Identity, roster: Roster) -> None:
    """Raise :class:`ProtocolAbort` unless ``identity`` is the roster's member ``client_id``."""
    if client_id not in roster.ids:
        raise ProtocolAbort("config", f"the server says this token is client {client_id}, which "
                            f"the pinned roster of {roster.federation!r} does not list (ids "
                            f"{list(roster.ids)})")
    member = roster.member(client_id)
    if member.public_key != identity.public_key:
        raise ProtocolAbort("config", f"the pinned roster gives client {client_id} to "
                            f"{member.name} ({member.fingerprint}) but this identity is "
                            f"{identity.name} ({identity.fingerprint}); use this enterprise's "
                            "own token, identity file and the federation's roster together")


