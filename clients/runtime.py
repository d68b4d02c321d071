"""The enterprise's client runtime: take part in rounds on a secagg server over HTTP(S).

    from secagg_clients.runtime import RuntimeClient
    from secagg.identity import Identity, Roster

    with RuntimeClient("https://agg.example:8443", token, verify="ca.pem",
                       identity=Identity.load("energy.identity.json"),
                       roster=Roster.load("roster.json")) as rt:
        result = rt.run_round(update, weight=120)   # float32 vector; blocks until released
        new_params = params + result.mean

The client is one enterprise of a federation whose roster (every member's identity public key)
it pinned out of band. Masking rounds are active (malicious-server) rounds bound to that roster:
before taking part the client checks that the round's config carries its pinned roster's digest,
and every peer's signed keys and signatures are checked against the roster. A round in which the
server deviates (or the config is bound to another roster) ends for this client with
:class:`RoundRefused`, which says why; the process goes on to the next round.

The protocol itself is the round's mode, run by the same sans-IO sessions the server and the
simulators run: :mod:`secagg.masking` (pairwise masks; the server releases the unmasked sum) or
:mod:`secagg.ckks` (the clients hold the round key, the server sums ciphertexts and releases the
*encrypted* sum, which this runtime decrypts); this module only moves bytes. Each mode is a small
participant class in :data:`CLIENT_MODES`. Connection errors and 5xx answers are retried with
exponential backoff; waits are long polls, and a message post waits for the reply to it
(``?wait``), so a stage costs one request.

Restarts: a client's round secrets live only in this process (``ClientSession`` and the CKKS
round key refuse to be pickled, and nothing is written to disk). A client that restarts
mid-round therefore counts as a dropout for that round (the others finish without it) and joins
the next round afresh. In a CKKS round the round key goes with the process too, so a dealer
that restarts before dealing ends the round (only the dealer can make the key).
"""

from __future__ import annotations

import json
import logging
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter, ProtocolAbort, SecAggError
from secagg.identity import Identity, Roster
from secagg.masking import Aggregate, ClientSession, MaskingConfig, Stage, encode_update, wire

if TYPE_CHECKING:  # secagg.ckks loads TenSEAL: imported only when a ckks round starts
    from secagg import ckks

__all__ = ["Dropped", "RoundInfo", "RoundRefused", "RoundResult", "RuntimeClient",
           "ServerRefused"]

log = logging.getLogger(__name__)
OCTET = {"Content-Type": "application/octet-stream"}


def tls_verify(verify: bool | str) -> bool | ssl.SSLContext:
    """httpx's ``verify`` from ``True``/``False`` or a CA bundle path (a file of PEM certificates).

    The operator's HTTP client has its twin (``secagg_server.operator.tls_verify``): the two
    sides share no code outside :mod:`secagg`, which carries no transport."""
    if isinstance(verify, str):
        if not Path(verify).is_file():
            raise InvalidParameter(f"CA bundle {verify!r} does not exist; pass the PEM file that "
                                   "signed the server's certificate")
        return ssl.create_default_context(cafile=verify)
    return verify


class ServerRefused(Exception):
    """The server answered 4xx: ``code`` and ``detail`` come from its JSON error body."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"server refused ({status} {code}): {detail}")
        self.status, self.code, self.detail = status, code, detail


class Dropped(Exception):
    """This client is out of the round (missed a deadline, restarted, or the round failed)."""


class RoundRefused(Dropped):
    """This client refused to go on with a round: the protocol detected something wrong.

    The round's config is bound to another roster than the pinned one, the server relayed a
    key, share box, survivor set or signature that does not verify, or it deviated from the
    protocol in another way (a :class:`secagg.errors.ProtocolAbort` in the session). The client
    revealed nothing more and takes no further part in the round; the others may still finish
    it without this client. A subclass of :class:`Dropped` (code that goes on after a dropped
    round goes on after a refused one); ``reason`` says why, ``round_index`` which round.
    """

    def __init__(self, round_index: int, reason: str) -> None:
        super().__init__(f"round {round_index} refused by this client: {reason}")
        self.round_index, self.reason = round_index, reason


@dataclass(frozen=True)
class RoundInfo:
    round_id: int
    index: int
    mode: str
    config: dict[str, Any]
    client_id: int


@dataclass(frozen=True)
class RoundResult:
    """The released aggregate of one round."""

    round_id: int
    index: int
    mode: str
    weighted_sum: npt.NDArray[np.float64]
    total_weight: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    received_at: float  # time.time() when the aggregate arrived

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        return self.weighted_sum / self.total_weight


class Participant(Protocol):
    """One client's side of one round in one mode (see :data:`CLIENT_MODES`)."""

    def first(self) -> bytes:
        """The message to post as soon as the round is known."""

    def reply(self, data: bytes) -> bytes | None:
        """Answer a stage message from the server; None when there is nothing to post."""

    def decode(self, meta: dict[str, Any], payload: bytes) -> npt.NDArray[np.float64]:
        """The released weighted sum ``sum_i w_i x_i`` from the round's result."""

    def total_weight(self, meta: dict[str, Any]) -> int:
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
        values = encode_update(self.config, update, weight=weight)
        self.session = ClientSession(self.config, info.client_id, values, identity=identity,
                                     roster=roster)
        self._preparing: threading.Thread | None = None

    def first(self) -> bytes:
        return wire.encode(self.session.start())

    def reply(self, data: bytes) -> bytes:
        if self._preparing is not None:  # the session is not thread-safe: let it finish first
            self._preparing.join()
            self._preparing = None
        answer = self.session.handle_bytes(data)
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

    def decode(self, meta: dict[str, Any], payload: bytes) -> npt.NDArray[np.float64]:
        total = np.frombuffer(payload, dtype="<u4")  # read in place: decoding makes a new array
        agg = Aggregate(total=total, total_weight=int(meta["total_weight"]),
                        survivors=tuple(meta["survivors"]), dropped=tuple(meta["dropped"]),
                        config=self.config)
        return agg.weighted_sum()

    def total_weight(self, meta: dict[str, Any]) -> int:
        return int(meta["total_weight"])


class _Plain:
    """No protection (benchmark baseline): upload ``SAGP | u32 weight | float32[]``."""

    def __init__(self, info: RoundInfo, update: npt.NDArray[np.float32], weight: int, *,
                 identity: Identity | None = None, roster: Roster | None = None) -> None:
        if update.shape != (int(info.config["vector_length"]),):
            raise ValueError(f"update has shape {update.shape}; the round expects "
                             f"({info.config['vector_length']},)")
        self.body = struct.pack("<4sI", b"SAGP", weight) + update.astype("<f4").tobytes()

    def first(self) -> bytes:
        return self.body

    def reply(self, data: bytes) -> bytes:
        raise Dropped("a plain round has one stage; the server sent another message")

    def decode(self, meta: dict[str, Any], payload: bytes) -> npt.NDArray[np.float64]:
        return np.frombuffer(payload, dtype="<f4").astype(np.float64)

    def total_weight(self, meta: dict[str, Any]) -> int:
        return int(meta["total_weight"])


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

    def __init__(self, info: RoundInfo, update: npt.NDArray[np.float32], weight: int, *,
                 identity: Identity, roster: Roster) -> None:
        from secagg.ckks import CKKSRoundConfig, ClientSession
        from secagg.encoding import clip_linf

        self.config = CKKSRoundConfig.from_dict(info.config)
        check_round_roster(self.config.roster_digest, roster)
        check_enrolment(info.client_id, identity, roster)
        if update.shape != (self.config.update_size,):
            raise InvalidParameter(f"update has shape {update.shape}; the round expects "
                                   f"({self.config.update_size},)")
        if isinstance(weight, bool) or not 1 <= weight <= self.config.weight_bound:
            raise InvalidParameter(f"weight must be an integer in [1, weight_bound="
                                   f"{self.config.weight_bound:g}], found {weight}; the operator "
                                   "sets weight_bound when opening the round")
        self.update = clip_linf(update, self.config.value_bound)
        self.weight = weight
        self.session: ckks.ClientSession = ClientSession(
            self.config, info.client_id, self.update, weight=float(weight), identity=identity,
            roster=roster)
        self._total_weight: int | None = None

    def first(self) -> bytes:
        return self.session.start()

    def reply(self, data: bytes) -> bytes | None:
        # key request -> the dealer's distribution (others: None); key delivery -> the upload
        return self.session.handle_bytes(data)

    def decode(self, meta: dict[str, Any], payload: bytes) -> npt.NDArray[np.float64]:
        self.session.handle_bytes(payload)  # verifies the aggregate, then decrypts and rounds
        release = self.session.result
        if sorted(release.contributors) != sorted(meta["survivors"]):
            raise ProtocolAbort("result", f"the server's result lists survivors "
                                f"{meta['survivors']} but the verified aggregate's signed "
                                f"receipts name {list(release.contributors)}")
        # Released on the preset's grid (<= 2^-20 for COMPACT); integer weights stay exact.
        self._total_weight = round(release.total_weight)
        return np.array(release.weighted_sum, dtype=np.float64)

    def total_weight(self, meta: dict[str, Any]) -> int:
        if self._total_weight is None:
            raise RuntimeError("decode the aggregate first: the total weight is encrypted with it")
        return self._total_weight


class ParticipantFactory(Protocol):
    def __call__(self, info: RoundInfo, update: npt.NDArray[np.float32], weight: int, *,
                 identity: Identity, roster: Roster) -> Participant: ...


#: Protection modes this runtime speaks: mode name -> participant factory.
CLIENT_MODES: dict[str, ParticipantFactory] = {
    "masking": _Masking, "plain": _Plain, "ckks": _CKKS,
}


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


class RuntimeClient:
    """One enterprise's connection to a server (one bearer token)."""

    def __init__(self, server: str, token: str, *, identity: Identity, roster: Roster,
                 verify: bool | str = True, poll_wait: float = 20.0,
                 retry_for: float = 60.0) -> None:
        """``identity``: this enterprise's :class:`~secagg.identity.Identity`; ``roster``: the
        federation's roster it pinned out of band (never one fetched from the server)."""
        if not isinstance(identity, Identity):
            raise InvalidParameter("identity must be this enterprise's secagg.identity.Identity "
                                   "(Identity.load(path)); found " + type(identity).__name__)
        if not isinstance(roster, Roster):
            raise InvalidParameter("roster must be the federation's pinned secagg.identity.Roster "
                                   "(Roster.load(path)); found " + type(roster).__name__)
        self.identity, self.roster = identity, roster
        self.poll_wait = poll_wait
        self.retry_for = retry_for
        self._http = httpx.Client(base_url=server.rstrip("/"), verify=tls_verify(verify),
                                  headers={"Authorization": f"Bearer {token}"},
                                  timeout=httpx.Timeout(30.0, read=poll_wait + 30.0))

    def __enter__(self) -> RuntimeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- HTTP with retries ----------------------------------------------------------------------

    def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """Send, retrying connection errors and 5xx with backoff; 4xx raise ServerRefused."""
        delay, give_up = 0.05, time.monotonic() + self.retry_for
        while True:
            try:
                resp = self._http.request(method, url, **kw)
                if resp.status_code < 500:
                    break
                why = f"HTTP {resp.status_code}"
            except httpx.TransportError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # retrying cannot fix trust
                    raise ConnectionError(
                        f"{method} {url}: the server's TLS certificate is not trusted; pass the "
                        "CA bundle that signed it (--ca-cert / verify='ca.pem')") from None
                why = type(exc).__name__
            if time.monotonic() + delay > give_up:
                raise ConnectionError(f"{method} {url} failed for {self.retry_for:.0f} s "
                                      f"(last: {why})")
            log.info("%s %s: %s; retrying in %.2f s", method, url, why, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        if resp.status_code >= 400:
            try:
                err = resp.json()
                code, detail = str(err.get("error")), str(err.get("detail"))
            except ValueError:
                code, detail = "http_error", resp.text[:200]
            raise ServerRefused(resp.status_code, code, detail)
        return resp

    # ---- API ------------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        me: dict[str, Any] = self._call("GET", "/v1/me").json()
        return me

    def check_enrolment(self) -> dict[str, Any]:
        """:meth:`whoami`, and check that this token's client id is this identity's entry in the
        pinned roster (else :class:`InvalidParameter` saying which pieces do not belong
        together). The rounds check it again; this only catches a mix-up before any round."""
        me = self.whoami()
        try:
            check_enrolment(int(me["client_id"]), self.identity, self.roster)
        except ProtocolAbort as exc:
            raise InvalidParameter(exc.reason) from None
        if me.get("federation") != self.roster.federation:
            raise InvalidParameter(f"the token is for federation {me.get('federation')!r} but "
                                   f"the pinned roster is for {self.roster.federation!r}")
        return me

    def wait_for_round(self, after_index: int = -1, timeout: float | None = None) -> RoundInfo:
        """Block until the federation opens a round with index > ``after_index``."""
        end = None if timeout is None else time.monotonic() + timeout
        while end is None or time.monotonic() < end:
            resp = self._call("GET", "/v1/rounds/next",
                              params={"after": after_index, "wait": self.poll_wait})
            if resp.status_code == 200:
                d = resp.json()
                return RoundInfo(d["round_id"], d["index"], d["mode"], d["config"], d["client_id"])
        raise TimeoutError(f"no round opened within {timeout} s")

    def take_part(self, info: RoundInfo, update: npt.ArrayLike, weight: int = 1) -> RoundResult:
        """Run ``info``'s protocol with ``update``; returns the released aggregate.

        Raises :class:`Dropped` if this client is left out (it may join the next round), and
        :class:`RoundRefused` (a :class:`Dropped`) if it refused the round: the config is not
        bound to the pinned roster, or the server deviated from the protocol.
        """
        factory = CLIENT_MODES.get(info.mode)
        if factory is None:
            raise Dropped(f"this client does not speak mode {info.mode!r} (knows "
                          f"{sorted(CLIENT_MODES)})")
        try:
            party = factory(info, np.asarray(update, dtype=np.float32), weight,
                            identity=self.identity, roster=self.roster)
        except ProtocolAbort as exc:
            raise RoundRefused(info.index, exc.reason) from None
        try:
            return self._run(info, party)
        except SecAggError as exc:  # the session refused what the server sent: stop here
            reason = exc.reason if isinstance(exc, ProtocolAbort) else str(exc)
            log.info("round %d refused: %s", info.index, reason)
            raise RoundRefused(info.index, reason) from None

    def _run(self, info: RoundInfo, party: Participant) -> RoundResult:
        rid = info.round_id
        # Each post also waits for the round's next message to us (one request per stage); when
        # it brings none (nothing within poll_wait, a refused retry, an older server), the inbox.
        resp: httpx.Response | None = self._post(rid, party.first())
        seen = 0
        while True:
            if resp is None or resp.headers.get("X-Secagg-State") not in ("message", "done"):
                try:
                    resp = self._call("GET", f"/v1/rounds/{rid}/inbox",
                                      params={"after": seen, "wait": self.poll_wait})
                except ServerRefused as exc:
                    if exc.status in (409, 410):
                        raise Dropped(exc.detail) from None
                    raise
            state = resp.headers.get("X-Secagg-State", "waiting")
            if state == "done":
                break
            if state == "message":
                seen = int(resp.headers["X-Secagg-Stage-No"])
                answer = party.reply(resp.content)
                # some stages need nothing from some clients
                resp = None if answer is None else self._post(rid, answer)
            else:
                resp = None
        resp = self._call("GET", f"/v1/rounds/{rid}/result")
        meta = json.loads(resp.headers["X-Secagg-Result"])
        weighted = party.decode(meta, resp.content)
        return RoundResult(rid, info.index, info.mode, weighted, party.total_weight(meta),
                           tuple(meta["survivors"]), tuple(meta["dropped"]), time.time())

    def _post(self, round_id: int, body: bytes) -> httpx.Response | None:
        """Post a message; the answer (ack, or the next message with ``wait``), or None when the
        server refused it as already taken (then the inbox tells how the round goes on)."""
        try:
            return self._call("POST", f"/v1/rounds/{round_id}/messages", content=body,
                              headers=OCTET, params={"wait": self.poll_wait})
        except ServerRefused as exc:
            if exc.code in ("replayed", "round_done"):
                # Our earlier attempt landed and its ack was lost (or the round finished without
                # needing it): the inbox, not this refusal, says whether we are in the result.
                return None
            if exc.status in (409, 410):
                raise Dropped(exc.detail) from None
            raise

    def run_round(self, update: npt.ArrayLike, weight: int = 1, *, after_index: int = -1,
                  timeout: float | None = None) -> RoundResult:
        """Wait for the next round and take part in it."""
        return self.take_part(self.wait_for_round(after_index, timeout), update, weight)
