"""Drive one whole CKKS round in memory with the real client and server objects.

The loop here is the transport: it passes bytes between :class:`CKKSClient` and
:class:`CKKSServer` exactly as the HTTP server will, and times each party's work. Used by
``secagg simulate ckks``, ``secagg bench ckks`` and the tests.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from secagg.ckks.client import CKKSClient
from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.presets import CKKSParams
from secagg.ckks.release import Release
from secagg.ckks.server import CKKSServer
from secagg.errors import RejectedMessage

__all__ = ["RoundResult", "key_ceremony", "make_config", "run_round"]


@dataclass(slots=True)
class RoundResult:
    """What happened in a simulated round, with per-party timings in seconds."""

    release: Release
    upload_bytes: dict[int, int]
    aggregate_bytes: int
    ceremony_s: float
    client_encrypt_s: dict[int, float]
    server_sum_s: float
    client_decrypt_s: float
    rejected: dict[int, str] = field(default_factory=dict)
    server: CKKSServer | None = None
    clients: dict[int, CKKSClient] = field(default_factory=dict)


def make_config(
    params: CKKSParams,
    *,
    update_size: int,
    num_clients: int,
    min_clients: int | None = None,
    value_bound: float = 1.0,
    weight_bound: float = 1.0,
    round: int = 0,
) -> CKKSRoundConfig:
    ids = tuple(range(1, num_clients + 1))
    return CKKSRoundConfig(
        params=params,
        update_size=update_size,
        client_ids=ids,
        dealer=ids[0],
        min_clients=min_clients if min_clients is not None else max(2, num_clients // 2 + 1),
        round=round,
        session=secrets.token_bytes(32),
        value_bound=value_bound,
        weight_bound=weight_bound,
    )


def key_ceremony(server: CKKSServer, clients: Mapping[int, CKKSClient]) -> None:
    """Adverts, the dealer's key distribution and its relay: every client ends up keyed."""
    for client in clients.values():
        server.receive_advert(client.advertise())
    dealer = server.config.dealer
    server.receive_key_distribution(clients[dealer].deal(server.key_request()))
    for i, client in clients.items():
        if i != dealer:
            client.receive_key(server.key_delivery(i))


def run_round(
    config: CKKSRoundConfig,
    updates: Mapping[int, npt.NDArray[np.floating]],
    *,
    weights: Mapping[int, float] | None = None,
    drop: Sequence[int] = (),
    tamper: Mapping[int, Callable[[bytes], bytes]] | None = None,
    on_client_done: Callable[[int], None] | None = None,
) -> RoundResult:
    """One round: ceremony, uploads (``drop`` never upload; ``tamper`` rewrites an upload in
    transit), server sum, and the dealer's decryption of the aggregate."""
    server = CKKSServer(config)
    clients = {i: CKKSClient(config, i) for i in config.client_ids}
    t0 = time.perf_counter()
    key_ceremony(server, clients)
    ceremony = time.perf_counter() - t0

    uploads: dict[int, bytes] = {}
    enc_s: dict[int, float] = {}
    for i in config.client_ids:
        if i in drop:
            continue
        w = 1.0 if weights is None else weights[i]
        t = time.perf_counter()
        uploads[i] = clients[i].encrypt_update(updates[i], weight=w)
        enc_s[i] = time.perf_counter() - t
        if tamper and i in tamper:
            uploads[i] = tamper[i](uploads[i])
        if on_client_done is not None:
            on_client_done(i)

    rejected: dict[int, str] = {}
    t = time.perf_counter()
    for i, blob in uploads.items():
        try:
            server.receive_upload(blob, sender=i)
        except RejectedMessage as exc:
            rejected[i] = exc.reason
    aggregate = server.aggregate()
    server_s = time.perf_counter() - t

    t = time.perf_counter()
    release = clients[config.dealer].decrypt_aggregate(aggregate)
    dec_s = time.perf_counter() - t
    return RoundResult(
        release=release,
        upload_bytes={i: len(b) for i, b in uploads.items()},
        aggregate_bytes=len(aggregate),
        ceremony_s=ceremony,
        client_encrypt_s=enc_s,
        server_sum_s=server_s,
        client_decrypt_s=dec_s,
        rejected=rejected,
        server=server,
        clients=clients,
    )
