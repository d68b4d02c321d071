"""CKKS aggregation against a malicious server: presets with the 128-bit check, a roster-
authenticated key ceremony among the clients, compact ciphertexts, a server-side sum from public
material only, a verifiable aggregate, and safe (rounded) release.

``import secagg`` does not import this package (it loads TenSEAL). Two sans-IO sessions, the
shape of :mod:`secagg.masking`'s, run a round under any transport::

    roster = Roster.load("federation.roster.json")   # pinned by every enterprise, out of band
    config = CKKSRoundConfig(params=Preset.COMPACT.params, update_size=spec.size,
                             client_ids=roster.ids, dealer=roster.ids[0], min_clients=2,
                             round=0, session=secrets.token_bytes(32),
                             roster_digest=roster.digest())
    server = ServerSession(config, roster=roster)                       # the aggregator
    client = ClientSession(config, my_id, update, weight=n_examples,   # each enterprise
                           identity=Identity.load("me.identity"), roster=roster)

    server.receive(client.start())           # advert           (every client)
    out = server.advance()                   # key request      -> every advertised client
    reply = client.handle_bytes(out[my_id])  # dealer: key distribution; others: None
    server.receive(reply)                    # (the dealer's)
    out = server.advance()                   # key delivery     -> every keyed client
    server.receive(client.handle_bytes(out[my_id]))   # the signed, sketched upload
    out = server.advance()                   # aggregate        -> every contributor
    client.handle_bytes(out[my_id])          # verify, decrypt, round: client.result.mean()

Uploads below the size of the float32 update: ``params=CKKSParams.for_round(clients=len(ids),
value_bound=..., weight_bound=..., target_error=1e-6)`` picks the prime and scale for the round
and sends one real per coefficient, bit-packed (:mod:`secagg.ckks.presets`,
:mod:`secagg.ckks.packing`); its published config names ``"preset": "packed"``.

Server side: ``receive`` raises :class:`~secagg.errors.RejectedMessage` and changes nothing on bad
input (that client becomes a dropout), ``advance`` raises
:class:`~secagg.errors.NotEnoughParticipants` when too few remain, ``expected`` says
who is awaited, ``max_message_bytes()`` bounds bodies, ``result`` holds the encrypted aggregate.
Client side: every refusal is a :class:`CheckFailed` naming the check; see
:mod:`secagg.ckks.client` for what is checked when, :mod:`secagg.ckks.sketch` for the verifiable
aggregate and its soundness, and :mod:`secagg.ckks.adversary` for the attacks and their tests.
:mod:`secagg.ckks.simulate` drives both sessions in memory.
"""

from secagg.ckks.checks import Check, CheckFailed, MessageRefused
from secagg.ckks.client import ClientSession, ClientStage
from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.keys import CKKSKey
from secagg.ckks.layout import Layout
from secagg.ckks.presets import HE_STANDARD_128_MAX_LOGQ, CKKSParams, Preset
from secagg.ckks.release import Release
from secagg.ckks.server import ServerResult, ServerSession, ServerStage

__all__ = [
    "HE_STANDARD_128_MAX_LOGQ",
    "CKKSKey",
    "CKKSParams",
    "CKKSRoundConfig",
    "Check",
    "CheckFailed",
    "ClientSession",
    "ClientStage",
    "Layout",
    "MessageRefused",
    "Preset",
    "Release",
    "ServerResult",
    "ServerSession",
    "ServerStage",
]

