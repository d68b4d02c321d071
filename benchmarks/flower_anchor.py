"""Measure Flower 1.41's own SecAgg+ in this process: the anchor for ``secagg bench masking``.

Nothing here re-implements Flower. :func:`run_flower_secaggplus` drives Flower's real
``SecAggPlusWorkflow`` (server) against real ``ClientApp``\\ s wrapped in Flower's real
``secaggplus_mod`` (clients), connected by a small in-memory ``flwr.serverapp.grid.Grid``
(:mod:`.flower_round`) that carries every message across a simulated wire (Flower's own
protobuf serialisation, both ways) and can make chosen clients vanish at a chosen stage.
Timings come from wrapping Flower's functions for the duration of the call (the wrappers are
removed again afterwards); the computation inside them is Flower's.

Flower is an optional extra: ``pip install 'secagg[bench]'``. It is imported lazily, so importing
this module costs nothing.
"""

from __future__ import annotations

import logging
import math
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .flower_round import RoundRecord, run_round

__all__ = ["DropStage", "FlowerResult", "run_flower_secaggplus"]

DropStage = Literal["unmask", "masked-input"]
"""When the dropped clients vanish.

``"unmask"``: after uploading the masked vector, before answering the unmask request. Their
inputs are in the sum; the server recovers their self-mask seeds from neighbours' shares (the same
work it does for every survivor).
``"masked-input"``: after the key-share stage, before uploading a masked vector. Their inputs are
not in the sum; the server must also reconstruct each one's pairwise-mask key and regenerate its
pairwise masks with every neighbour (the expensive case for Flower's server).
Flower 1.41 cannot survive drops earlier than these (setup, share-keys): the round aborts for lack
of shares.
"""

_INSTALL_HINT = "the Flower anchor needs flwr 1.41, which is an optional extra: pip install 'secagg[bench]'"


@dataclass(frozen=True)
class FlowerResult:
    """One measured round of Flower's SecAgg+ (definitions: :func:`run_flower_secaggplus`)."""

    client_ms: float
    server_ms: float
    upload_bytes_per_param: float
    correct: bool
    num_shares: int
    reconstruction_threshold: int
    survivors: int
    details: dict[str, float] = field(default_factory=dict)


def run_flower_secaggplus(
    *,
    num_clients: int,
    num_params: int,
    dropout: float,
    num_shares: int,
    reconstruction_threshold: int,
    clipping_range: float = 8.0,
    quantization_range: int = 2**20,
    modulus_range: int = 2**32,
    seed: int = 0,
    drop_stage: DropStage = "unmask",
) -> FlowerResult:
    """Run one SecAgg+ round of Flower 1.41's real code in this process and measure it.

    **What runs.** Flower's ``SecAggPlusWorkflow(num_shares, reconstruction_threshold,
    clipping_range=..., quantization_range=..., modulus_range=...)`` is called as a ``ServerApp``
    workflow would call it, with a ``LegacyContext`` holding a ``FedAvg`` that samples every client.
    Each of the ``num_clients`` nodes is a ``ClientApp(client_fn, mods=[secaggplus_mod])`` whose
    ``NumPyClient.fit`` returns a fixed float32 vector of ``num_params`` values drawn uniformly from
    [-1, 1] and ``num_examples`` drawn from [100, 1000] (so Flower's in-protocol weighting is used;
    ``max_weight`` keeps Flower's default 1000). Messages travel through :class:`_InProcessGrid`,
    which serialises each one with Flower's protobuf serde and parses it on the other side.

    **Graph.** ``num_shares == num_clients`` is the full graph. Otherwise Flower builds a ring of
    ``num_shares`` neighbours (self included). Flower needs an odd ``num_shares`` below
    ``num_clients``: for an even one its workflow bumps the graph to ``num_shares + 1`` but tells
    the clients the old number, and every client crashes in the share-keys stage. This function
    therefore runs an even ``num_shares < num_clients`` as ``num_shares + 1`` (what Flower means
    to do) and reports the number actually used in ``FlowerResult.num_shares``.

    **Dropout.** ``round(dropout * num_clients)`` clients, chosen with ``seed``, vanish at
    ``drop_stage`` (see :data:`DropStage`; default ``"unmask"``: after uploading the masked
    vector, before the unmask stage). A vanished client gets the message and never answers, which
    the grid reports to the workflow exactly as a timed-out reply.

    **client_ms.** For each client, the wall time (``time.perf_counter``) spent inside the mod's
    stage handlers ``_setup`` + ``_share_keys`` + ``_collect_masked_vectors`` (key generation,
    Shamir sharing and share encryption, share decryption + quantisation + private and pairwise
    mask expansion + serialising the masked vector with ``ndarray_to_bytes``), summed over those
    three stages, then averaged over the clients whose masked vector reached the server. Not
    included: the ``NumPyClient.fit`` call, Flower's ClientApp/Message plumbing (the mod's state
    (de)serialisation, ``recorddict_to_fitres``) and the simulated wire. The (tiny) ``_unmask``
    handler is reported apart as ``details["client_unmask_ms"]``.

    **server_ms.** Wall time of ``SecAggPlusWorkflow.unmask_stage`` minus the time inside
    ``grid.send_and_receive`` during it (simulated network and the clients' own work), minus the
    Strategy/compat plumbing that follows the reconstruction (``ndarrays_to_parameters`` of the
    result, ``strategy.aggregate_fit`` and ``parameters_to_arrayrecord``). What remains is Flower's
    unmask work: building the requests, combining Shamir shares, regenerating and removing the
    private (and, for ``"masked-input"`` drops, pairwise) masks, the modulo and the
    dequantisation. The summation of the masked vectors happens in Flower's previous stage; its
    cost (same exclusions) is ``details["server_collect_ms"]``.

    **CPU twins.** The machine may be shared: ``details["client_cpu_ms"]`` and
    ``details["server_cpu_ms"]`` are the same quantities measured with ``time.process_time``
    (CPU of this process, all threads: Flower's Shamir code uses a thread pool), which other
    processes' load does not inflate. Wall time is the headline; compare like with like.

    **upload_bytes_per_param.** Total length of the ``masked_parameters`` byte strings a client
    uploads (Flower's ``ndarray_to_bytes``: ``np.save`` of int64 arrays, plus the weight factor),
    divided by ``num_params``, averaged over uploaders.
    ``details["upload_message_bytes_per_param"]`` is the whole serialised reply message.

    **correct.** Flower's aggregate equals the weighted mean of the inputs whose masked vectors it
    summed (weights: Flower's own quantised ``num_examples / max_weight``), element-wise within
    ``1.5 * survivors * (2 * clipping_range / quantization_range) / sum(weights)`` (one
    stochastic-rounding step per input, plus float32 slack). ``survivors`` is the number of
    those inputs.

    Raises ``ImportError`` (with the install command) if flwr is missing, ``ValueError`` on
    parameters Flower cannot run, and ``RuntimeError`` if Flower's workflow halts or a client
    raises. Global ``random``/``numpy.random`` state (which Flower uses for the neighbour shuffle
    and stochastic rounding) is seeded from ``seed`` and restored afterwards; the flwr logger is
    raised to WARNING for the call and restored. Key material comes from ``os.urandom`` inside
    Flower, so only timings vary between runs with the same seed.
    """
    try:
        import flwr
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    version = str(getattr(flwr, "__version__", "unknown"))
    if not version.startswith("1.41."):
        warnings.warn(
            f"the Flower anchor was written against flwr 1.41 and drives some of its internals; "
            f"flwr {version} is installed (pip install 'secagg[bench]' pins 1.41)",
            RuntimeWarning,
            stacklevel=2,
        )

    _validate(num_clients, num_params, dropout, num_shares, reconstruction_threshold)
    if drop_stage not in ("unmask", "masked-input"):
        raise ValueError("drop_stage must be 'unmask' or 'masked-input'")
    effective_shares = num_shares
    if num_shares < num_clients and num_shares % 2 == 0:
        effective_shares = num_shares + 1
    if reconstruction_threshold >= effective_shares:
        raise ValueError("reconstruction_threshold must be smaller than num_shares")

    with _quiet_flwr_logger(), _seeded_global_rngs(seed):
        record = run_round(
            num_clients=num_clients,
            num_params=num_params,
            dropout=dropout,
            num_shares=effective_shares,
            threshold=reconstruction_threshold,
            clipping_range=clipping_range,
            quantization_range=quantization_range,
            modulus_range=modulus_range,
            seed=seed,
            drop_stage=drop_stage,
        )
    return _result(record, num_params=num_params, num_shares=effective_shares,
                   requested_shares=num_shares, threshold=reconstruction_threshold,
                   clipping_range=clipping_range, quantization_range=quantization_range,
                   drop_stage=drop_stage)


def _validate(num_clients: int, num_params: int, dropout: float, num_shares: int, threshold: int) -> None:
    if num_clients < 3:
        raise ValueError("Flower's SecAgg+ needs at least 3 clients")
    if num_params < 1:
        raise ValueError("num_params must be positive")
    if not 0.0 <= dropout < 1.0:
        raise ValueError("dropout must be in [0, 1)")
    if not 3 <= num_shares <= num_clients:
        raise ValueError("num_shares must be in [3, num_clients] (num_clients = full graph)")
    if not 2 <= threshold < num_shares:
        raise ValueError("reconstruction_threshold must be in [2, num_shares)")


@contextmanager
def _quiet_flwr_logger() -> Iterator[None]:
    logger = logging.getLogger("flwr")
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


@contextmanager
def _seeded_global_rngs(seed: int) -> Iterator[None]:
    py_state = random.getstate()
    np_state = np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)  # Flower draws from numpy's global RandomState
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _result(r: RoundRecord, *, num_params: int, num_shares: int, requested_shares: int,
            threshold: int, clipping_range: float, quantization_range: int,
            drop_stage: DropStage) -> FlowerResult:
    """The published numbers from one round's record (definitions: :func:`run_flower_secaggplus`)."""
    node_ids, inputs, num_examples, dropped = r.node_ids, r.inputs, r.num_examples, r.dropped
    upload_bytes, timer, client_timer, max_weight = r.upload_bytes, r.timer, r.client_timer, r.max_weight
    uploaders = [nid for nid in node_ids if nid in upload_bytes]
    survivors = len(uploaders)
    target = float(quantization_range)
    weights = {nid: round(num_examples[nid] / max_weight * quantization_range) / target for nid in uploaders}
    weight_sum = sum(weights.values())
    expected = np.zeros(num_params, dtype=np.float64)
    for nid in uploaders:
        expected += weights[nid] * inputs[nid].astype(np.float64)
    expected /= weight_sum
    got = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in r.aggregate])
    step = 2.0 * clipping_range / quantization_range
    tolerance = 1.5 * survivors * step / weight_sum
    max_error = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else math.inf
    correct = got.shape == expected.shape and max_error <= tolerance

    def client_total(nid: int, stages: tuple[str, ...], cpu: bool = False) -> float:
        get = client_timer.get_cpu if cpu else client_timer.get
        return sum(get(f"{nid}:{s}") for s in stages)

    main_stages = ("setup", "share_keys", "collect_masked_vectors")
    client_ms = 1e3 * float(np.mean([client_total(nid, main_stages) for nid in uploaders]))

    def server_compute(stage: str, cpu: bool = False) -> float:
        get = timer.get_cpu if cpu else timer.get
        return (
            get(f"stage:{stage}")
            - get(f"grid:{stage}")
            - get(f"plumbing:{stage}")
            - (get("strategy:aggregate_fit") if stage == "unmask" else 0.0)
        )

    unmask_clients = [nid for nid in node_ids if f"{nid}:unmask" in client_timer.wall]
    details: dict[str, float] = {
        "requested_num_shares": float(requested_shares),
        "dropped": float(len(dropped)),
        "drop_stage_masked_input": 1.0 if drop_stage == "masked-input" else 0.0,
        "max_abs_error": max_error,
        "error_tolerance": tolerance,
        "round_wall_ms": 1e3 * r.round_s,
        "client_cpu_ms": 1e3
        * float(np.mean([client_total(nid, main_stages, cpu=True) for nid in uploaders])),
        "server_cpu_ms": 1e3 * server_compute("unmask", cpu=True),
        "server_unmask_wall_ms": 1e3 * timer.get("stage:unmask"),
        "server_unmask_grid_ms": 1e3 * timer.get("grid:unmask"),
        "server_unmask_plumbing_ms": 1e3
        * (timer.get("plumbing:unmask") + timer.get("strategy:aggregate_fit")),
        "upload_message_bytes_per_param": float(
            np.mean([upload_bytes[nid][1] for nid in uploaders]) / num_params
        ),
        "client_unmask_ms": 1e3 * float(np.mean([client_timer.get(f"{n}:unmask") for n in unmask_clients]))
        if unmask_clients
        else 0.0,
    }
    details["server_unmask_combine_shares_ms"] = 1e3 * timer.get("server:combine_shares:unmask")
    details["server_unmask_prg_ms"] = 1e3 * timer.get("server:pseudo_rand_gen:unmask")
    details["server_unmask_key_agreement_ms"] = 1e3 * timer.get("server:generate_shared_key:unmask")
    for stage in ("setup", "share_keys", "collect_masked_vectors"):
        details[f"server_{stage}_ms"] = 1e3 * server_compute(stage)
        details[f"client_{stage}_ms"] = 1e3 * float(
            np.mean([client_timer.get(f"{nid}:{stage}") for nid in uploaders])
        )
    details["server_collect_ms"] = details["server_collect_masked_vectors_ms"]
    return FlowerResult(
        client_ms=client_ms,
        server_ms=1e3 * server_compute("unmask"),
        upload_bytes_per_param=float(np.mean([upload_bytes[nid][0] for nid in uploaders]) / num_params),
        correct=bool(correct),
        num_shares=num_shares,
        reconstruction_threshold=threshold,
        survivors=survivors,
        details=details,
    )
