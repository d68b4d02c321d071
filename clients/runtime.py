"""The enterprise's client runtime: take part in rounds on a secagg server over HTTP(S).

    from secagg_clients.runtime import RuntimeClient
    from secagg.identity import Identity, Roster
from secagg.masking import MaskingConfig

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
participant class (:mod:`secagg_clients.participants`). Waits are long polls, and a message post
waits for the reply to it (``?wait``), so a stage costs one request.

Failures: once the server has answered, connection errors, timeouts and 5xx answers are retried
with exponential backoff for ``retry_for`` seconds (a server restarting mid-round). Before it has
answered, a server that is not there (connection refused, a host name that does not resolve) is
given ``connect_grace`` seconds, and what retrying cannot heal (an untrusted certificate, http://
against an HTTPS server or the reverse) fails at once: :class:`ServerUnreachable` says which URL,
what failed and what to try (:mod:`secagg_clients.connection`).

Events: ``on_event(kind, data)`` hears ``round_opened`` and ``stage_done`` (``round`` is the
server's round index, ``round_id`` its id); ``secagg-client --events jsonl`` prints them.

Restarts: a client's round secrets live only in this process (``ClientSession`` and the CKKS
round key refuse to be pickled, and nothing is written to disk). A client that restarts
mid-round therefore counts as a dropout for that round (the others finish without it) and joins
the next round afresh. In a CKKS round the round key goes with the process too, so a dealer
that restarts before dealing ends the round (only the dealer can make the key).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from secagg.contract import Header, InboxState, ReleasedAggregate, Route
from secagg.dp.client_level import DistributedDPPolicy, client_level_epsilon
from secagg.dp.distributed import DistributedNoise, round_noise
from secagg.encoding import ParamSpec
from secagg.errors import InvalidParameter, ProtocolAbort, SecAggError
from secagg.identity import Identity, Roster
from secagg.masking import MaskingConfig

from .connection import (
    ServerRefused,
    ServerUnreachable,
    check_server_url,
    diagnose,
    tls_verify,
)
from .participants import (  # noqa: F401  (importable from here, as before)
    _CKKS,
    CLIENT_MODES,
    Participant,
    ReleaseHook,
    RoundInfo,
    _Masking,
    _Plain,
    check_enrolment,
    check_round_roster,
)

__all__ = ["Dropped", "Event", "RoundInfo", "RoundRefused", "RoundResult", "RuntimeClient",
           "ServerRefused", "ServerUnreachable", "check_enrolment", "check_round_roster",
           "tls_verify"]

log = logging.getLogger(__name__)
OCTET = {"Content-Type": "application/octet-stream"}

#: What a malformed round config from the server can raise while this client reads it (a value
#: of the wrong type, out of range, infinite, too large to pack): refused as the round's, never
#: a crash of the client.
_UNTRUSTED_CONFIG_ERRORS = (SecAggError, ValueError, TypeError, KeyError, AttributeError,
                            IndexError, ArithmeticError, struct.error)

#: ``on_event(kind, data)``: what the runtime reports as a round goes (see the module doc)
Event = Callable[[str, dict[str, Any]], None]


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
    #: the round's distributed (client-level DP) noise, None for a round without; the released
    #: sum holds one share per survivor (:attr:`noise_shares`)
    noise: DistributedNoise | None = None

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        return self.weighted_sum / self.total_weight

    @property
    def noise_shares(self) -> int:
        """Noise shares in the released sum: one per survivor (0 without distributed DP)."""
        return len(self.survivors) if self.noise is not None else 0


class RuntimeClient:
    """One enterprise's connection to a server (one bearer token)."""

    def __init__(self, server: str, token: str, *, identity: Identity, roster: Roster,
                 verify: bool | str = True, poll_wait: float = 20.0,
                 retry_for: float = 60.0, connect_grace: float = 2.0,
                 on_event: Event | None = None, layout: ParamSpec | None = None,
                 dp_policy: DistributedDPPolicy | None = None) -> None:
        """``identity``: this enterprise's :class:`~secagg.identity.Identity`; ``roster``: the
        federation's roster it pinned out of band (never one fetched from the server).

        ``layout``: this enterprise's model layout, when it knows it (the DP-LoRA client does):
        a round opened for another layout (its config's ``layout_digest``) is refused before
        anything is sent, naming both layouts (:meth:`ParamSpec.check_round`).

        ``dp_policy``: this enterprise's requirement on a round's distributed (client-level DP)
        noise (:class:`secagg.dp.client_level.DistributedDPPolicy`): a round whose noise is
        missing, malformed or weaker is refused before anything is sent
        (:meth:`check_distributed_dp`). Without one, the client takes part in any round and adds
        the noise a round announces.

        ``retry_for``: how long transient failures are retried once the server has answered;
        ``connect_grace``: how long a server that never answered may stay unreachable
        (:class:`ServerUnreachable` then); ``on_event``: see the module doc."""
        if not isinstance(identity, Identity):
            raise InvalidParameter("identity must be this enterprise's secagg.identity.Identity "
                                   "(Identity.load(path)); found " + type(identity).__name__)
        if not isinstance(roster, Roster):
            raise InvalidParameter("roster must be the federation's pinned secagg.identity.Roster "
                                   "(Roster.load(path)); found " + type(roster).__name__)
        for what, value in (("poll_wait", poll_wait), ("retry_for", retry_for),
                            ("connect_grace", connect_grace)):
            if not (isinstance(value, int | float) and 0 <= value < float("inf")):
                raise InvalidParameter(f"{what} must be a number of seconds >= 0, found {value!r}")
        self.url = check_server_url(server)
        if layout is not None and not isinstance(layout, ParamSpec):
            raise InvalidParameter("layout must be this model's secagg.encoding.ParamSpec; found "
                                   + type(layout).__name__)
        self.identity, self.roster, self.layout = identity, roster, layout
        if dp_policy is not None and not isinstance(dp_policy, DistributedDPPolicy):
            raise InvalidParameter("dp_policy must be a secagg.dp.client_level."
                                   "DistributedDPPolicy; found " + type(dp_policy).__name__)
        self.dp_policy = dp_policy
        self.poll_wait = poll_wait
        self.retry_for = retry_for
        self.connect_grace = connect_grace
        self._emit: Event = on_event or (lambda kind, data: None)
        self._answered = False  # whether the server has ever answered this client
        self._http = httpx.Client(base_url=self.url, verify=tls_verify(verify),
                                  headers={"Authorization": f"Bearer {token}"},
                                  timeout=httpx.Timeout(30.0, connect=10.0,
                                                        read=poll_wait + 30.0))

    def __enter__(self) -> RuntimeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- HTTP with retries ----------------------------------------------------------------------

    def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """Send, retrying what can heal (see the module doc); 4xx raise :class:`ServerRefused`,
        the rest :class:`ServerUnreachable`."""
        delay, start = 0.05, time.monotonic()
        while True:
            try:
                resp = self._http.request(method, url, **kw)
                self._answered = True
                if resp.status_code < 500:
                    break
                what = f"the server answered HTTP {resp.status_code}"
                hint, budget = "see the server's log", self.retry_for
            except httpx.TransportError as exc:
                problem = diagnose(exc, self._http.base_url, probe=not self._answered)
                if problem.permanent:  # retrying cannot fix trust or a wrong scheme
                    raise ServerUnreachable(self.url, problem.what, problem.hint) from None
                what, hint = problem.what, problem.hint
                healing = isinstance(exc, httpx.TimeoutException) or \
                    (self._answered and problem.transient)
                budget = self.retry_for if healing else self.connect_grace
            waited = time.monotonic() - start
            if waited + delay > budget:
                if waited > 0:
                    what += f" (retried for {waited:.1f} s)"
                raise ServerUnreachable(self.url, what, hint)
            log.info("%s %s: %s; retrying in %.2f s", method, url, what, delay)
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
        me: dict[str, Any] = self._call("GET", Route.ME).json()
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
            resp = self._call("GET", Route.NEXT_ROUND,
                              params={"after": after_index, "wait": self.poll_wait})
            if resp.status_code == 200:
                d = resp.json()
                return RoundInfo(d["round_id"], d["index"], d["mode"], d["config"], d["client_id"])
        raise TimeoutError(f"no round opened within {timeout} s")

    def peek_round(self, after_index: int = -1) -> RoundInfo | None:
        """The federation's open round with index > ``after_index`` if one is open now, else None
        (one request, no waiting): what a training client checks before it trains."""
        resp = self._call("GET", Route.NEXT_ROUND, params={"after": after_index, "wait": 0})
        if resp.status_code != 200:
            return None
        d = resp.json()
        return RoundInfo(d["round_id"], d["index"], d["mode"], d["config"], d["client_id"])

    def check_layout(self, info: RoundInfo) -> None:
        """Raise :class:`RoundRefused` if this client knows its model layout (``layout``) and
        ``info``'s round is for another: a different layout digest (both named, see
        :meth:`ParamSpec.check_round`) or, for a round that names none, another vector length.
        Nothing is sent; a client without a layout checks nothing here."""
        if self.layout is None:
            return
        try:
            self.layout.check_round(bytes.fromhex(str(info.config.get("layout_digest", ""))))
            length = info.config.get("vector_length")
            if length is not None and int(length) != self.layout.size:
                raise InvalidParameter(
                    f"the round expects {int(length)} values per update, this model has "
                    f"{self.layout.size} trainable parameters (layout "
                    f"{self.layout.digest().hex()[:16]}...): the enterprises are not fine-tuning "
                    "the same model; refusing to take part")
        except _UNTRUSTED_CONFIG_ERRORS as exc:
            log.info("round %d refused: %s", info.index, exc)
            raise RoundRefused(info.index, str(exc)) from None

    def check_distributed_dp(self, info: RoundInfo, *, delta: float = 1e-5) -> None:
        """Raise :class:`RoundRefused` (one line, nothing sent) if this client has a
        ``dp_policy`` and ``info``'s round announces no distributed DP noise, malformed noise
        parameters, or noise weaker than the policy. Without a policy, a masking round's noise
        parameters are still checked to be valid, and to have a finite client-level epsilon
        at ``delta`` (the ledger's), so the release can be recorded when it happens."""
        if info.mode != "masking":
            if self.dp_policy is not None and self.dp_policy.require:
                raise RoundRefused(info.index, f"this client's policy requires client-level "
                                   f"distributed DP noise, which a {info.mode} round does not "
                                   "add; refusing")
            return
        try:
            config = MaskingConfig.from_dict(info.config)
            noise = round_noise(config)
        except _UNTRUSTED_CONFIG_ERRORS as exc:
            raise RoundRefused(info.index, f"the round's masking config is invalid: {exc}") \
                from None
        if noise is not None:
            try:
                client_level_epsilon(noise, rounds=1, delta=delta)
            except _UNTRUSTED_CONFIG_ERRORS as exc:
                raise RoundRefused(info.index, f"the round's distributed DP noise has no finite "
                                   f"client-level epsilon at delta {delta}: {exc}") from None
        if self.dp_policy is None:
            return
        why = self.dp_policy.refusal(noise, threshold=config.threshold)
        if why is not None:
            log.info("round %d refused: %s", info.index, why)
            raise RoundRefused(info.index, why)

    def prepare(self, info: RoundInfo, update: npt.ArrayLike, weight: int = 1, *,
                delta: float = 1e-5) -> Participant:
        """This client's side of ``info``'s round, built and checked, its first message made,
        but nothing sent: the mode is one it speaks, the layout and distributed-DP settings
        (at ``delta``, the ledger's) are acceptable, and the round's config (whoever made it)
        passes the mode's checks against the pinned roster.

        Raises :class:`Dropped` for a mode it does not speak and :class:`RoundRefused` for a
        config it refuses, a malformed one included (one line naming what was wrong). Call it
        before charging the privacy ledger, then pass the result to :meth:`take_part`: whatever
        could fail before the first message is sent has failed by then."""
        factory = CLIENT_MODES.get(info.mode)
        if factory is None:
            raise Dropped(f"this client does not speak mode {info.mode!r} (knows "
                          f"{sorted(CLIENT_MODES)})")
        self.check_layout(info)
        self.check_distributed_dp(info, delta=delta)
        try:
            party = factory(info, np.asarray(update, dtype=np.float32), weight,
                            identity=self.identity, roster=self.roster)
            party.first()
        except ProtocolAbort as exc:
            raise RoundRefused(info.index, exc.reason) from None
        except _UNTRUSTED_CONFIG_ERRORS as exc:  # a malformed config from the server
            raise RoundRefused(info.index, f"the round's {info.mode} config is not acceptable: "
                               f"{type(exc).__name__}: {exc}") from None
        return party

    def take_part(self, info: RoundInfo, update: npt.ArrayLike, weight: int = 1, *,
                  on_release: ReleaseHook | None = None,
                  party: Participant | None = None) -> RoundResult:
        """Run ``info``'s protocol with ``update``; returns the released aggregate.

        ``on_release(noise, shares)`` runs, in a distributed-DP round, just before this client
        sends what lets the server unmask the noisy sum (see :class:`Participant`): record the
        release there, since a server may withhold the result after unmasking it.

        Raises :class:`Dropped` if this client is left out (it may join the next round), and
        :class:`RoundRefused` (a :class:`Dropped`) if it refused the round: the config is not
        bound to the pinned roster, or the server deviated from the protocol. ``party``: what
        :meth:`prepare` built for this round (built here when not given).
        """
        self._emit("round_opened", {"round": info.index, "round_id": info.round_id,
                                    "mode": info.mode, "client_id": info.client_id})
        if party is None:
            party = self.prepare(info, update, weight)
        party.on_release = on_release
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
        self._stage_done(info, party)
        seen = 0
        while True:
            if resp is None or resp.headers.get(Header.STATE) not in (InboxState.MESSAGE,
                                                                      InboxState.DONE):
                try:
                    resp = self._call("GET", Route.inbox(rid),
                                      params={"after": seen, "wait": self.poll_wait})
                except ServerRefused as exc:
                    if exc.status in (409, 410):
                        raise Dropped(exc.detail) from None
                    raise
            state = resp.headers.get(Header.STATE, InboxState.WAITING)
            if state == InboxState.DONE:
                break
            if state == InboxState.MESSAGE:
                seen = int(resp.headers[Header.STAGE_NO])
                answer = party.reply(resp.content)
                # some stages need nothing from some clients
                if answer is None:
                    resp = None
                else:
                    resp = self._post(rid, answer)
                    self._stage_done(info, party)
            else:
                resp = None
        resp = self._call("GET", Route.result(rid))
        try:
            meta = ReleasedAggregate.from_header(resp.headers.get(Header.RESULT, ""))
        except InvalidParameter as exc:
            raise ProtocolAbort("result", f"the server's result metadata is unreadable: "
                                f"{exc}") from None
        if meta.layout_digest != str(info.config.get("layout_digest", "")):
            raise ProtocolAbort("result", f"the result names model layout "
                                f"{meta.layout_digest[:16] or '(none)'} but the round was opened "
                                f"for {str(info.config.get('layout_digest', ''))[:16] or '(none)'}")
        weighted = party.decode(meta, resp.content)
        return RoundResult(rid, info.index, info.mode, weighted, party.total_weight(meta),
                           meta.survivors, meta.dropped, time.time(),
                           noise=getattr(party, "noise", None))

    def _stage_done(self, info: RoundInfo, party: Participant) -> None:
        self._emit("stage_done", {"round": info.index, "round_id": info.round_id,
                                  "mode": info.mode, "stage": party.last_stage})

    def _post(self, round_id: int, body: bytes) -> httpx.Response | None:
        """Post a message; the answer (ack, or the next message with ``wait``), or None when the
        server refused it as already taken (then the inbox tells how the round goes on)."""
        try:
            return self._call("POST", Route.messages(round_id), content=body,
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
