"""Benchmark of the masking mode against Flower's SecAgg+ in the same process.

Both sides are timed the same way: ``client_ms`` is one client's compute summed over all its
stages (quantisation, key generation, sharing, masking, packing, unmask replies), averaged over
clients; ``server_ms`` is the server's compute for the unmask stage (taking the shares,
reconstructing secrets, removing masks, reducing the sum). Both servers add up masked vectors as
they arrive, before that stage; ``server_total_ms`` reports our server's compute over all stages.
``round_s`` is the wall time of the whole simulated round (every client and the server, one after
another in this process, plus the in-memory wire encoding between them).

Dropped clients vanish either after uploading, before the unmask stage (``unmask``, the
default: the server rebuilds every survivor's self mask), or after sharing, before uploading
(``masked-input``: it must also rebuild the dropped clients' pairwise masks). Flower aborts on
any earlier dropout; both sides drop at the same stage.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.hazmat.handles import SecretBytes
from secagg.hazmat.prg import MaskExpander
from secagg.masking import MaskingConfig, Stage, plan_dropouts, simulate_round
from secagg.masking.keys import MASK_KEY_BYTES
from secagg.masking.simulate import insecure_simulated_federation

__all__ = ["MaskingBenchResult", "measure_keystream", "run_masking_bench"]


@dataclass(frozen=True)
class MaskingBenchResult:
    correct: bool
    client_ms: float
    server_ms: float
    server_total_ms: float
    upload_bytes_per_param: float
    neighbours: int
    threshold: int
    survivors: int
    mod_bits: int
    round_s: float
    #: the first round's server_total_ms: the only one with cold caches (the rounds share one
    #: config, so later ones reuse the Lagrange coefficients the first one computed)
    server_total_ms_first: float = float("nan")
    #: median compute per server stage (ms), keyed by stage name
    server_stage_ms: dict[str, float] = field(default_factory=dict)
    #: what the rounds ran on, for studies that count work per client (benchmarks/masking_scale.py)
    config: MaskingConfig | None = None
    dropouts: dict[int, Stage] = field(default_factory=dict)
    survivor_ids: tuple[int, ...] = ()


def measure_keystream(words: int = 1 << 20, repeats: int = 12) -> tuple[float, float]:
    """(mask expansion GB/s, raw AES-CTR keystream GB/s), best of ``repeats``, same sizes and
    the masking protocol's key size (AES-128)."""
    keys = [SecretBytes(os.urandom(MASK_KEY_BYTES)) for _ in range(repeats)]
    acc = np.zeros(words, dtype=np.uint32)
    expander = MaskExpander()
    expander.apply(acc, keys[0])  # warm the buffers
    zeros, out = bytes(4 * words), bytearray(4 * words + 16)
    best_mask, best_raw = float("inf"), float("inf")
    for key in keys:
        t0 = time.perf_counter()
        expander.apply(acc, key)
        best_mask = min(best_mask, time.perf_counter() - t0)
        t0 = time.perf_counter()
        enc = Cipher(algorithms.AES(key.expose_secret_bytes()), modes.CTR(bytes(16))).encryptor()
        enc.update_into(zeros, out)
        best_raw = min(best_raw, time.perf_counter() - t0)
    return 4 * words / best_mask / 1e9, 4 * words / best_raw / 1e9


def run_masking_bench(*, clients: int, params: int, dropout: float, full_graph: bool,
                      value_bits: int = 16, clip: float = 8.0, repeats: int = 3,
                      seed: int = 0, drop_stage: str = "unmask",
                      active: bool = True) -> MaskingBenchResult:
    """Median over ``repeats`` rounds of our implementation (real state machines, wire bytes).

    ``active`` (the default, what the service runs) signs adverts and the survivor set with
    roster identities and runs the consistency round; ``active=False`` is the honest-but-curious
    protocol, the same threat model as Flower's SecAgg+.
    """
    roster = insecure_simulated_federation(clients)[0] if active else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-federation dropout notes; reported elsewhere
        config = MaskingConfig.create(num_clients=clients, vector_length=params, clip=clip,
                                      value_bits=value_bits, dropout_rate=max(dropout, 0.01),
                                      full_graph=full_graph, round=1, roster=roster,
                                      active=active)
    rng = np.random.default_rng(seed)
    updates = [rng.uniform(-1, 1, params).astype(np.float32) for _ in range(clients)]
    drops = plan_dropouts(clients, dropout, Stage(drop_stage), active=active, rng=rng)
    client_ms, server_ms, server_total, round_s, correct = [], [], [], [], True
    stage_ms: dict[str, list[float]] = {}
    last: Any = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        last = simulate_round(config, updates, dropouts=drops, rng=rng)
        round_s.append(time.perf_counter() - t0)
        correct = correct and last.exact
        for stage, seconds in last.server_seconds.items():
            stage_ms.setdefault(stage, []).append(1e3 * seconds)
        client_ms.append(1e3 * statistics.mean(last.client_seconds.values()))
        server_ms.append(1e3 * last.server_seconds.get("unmask", float("nan")))
        server_total.append(1e3 * sum(last.server_seconds.values()))
    return MaskingBenchResult(
        correct=correct,
        client_ms=statistics.median(client_ms),
        server_ms=statistics.median(server_ms),
        server_total_ms=statistics.median(server_total),
        upload_bytes_per_param=last.masked_input_bytes / params,
        neighbours=config.neighbours, threshold=config.threshold,
        survivors=len(last.expected_survivors), mod_bits=config.mod_bits,
        round_s=statistics.median(round_s), server_total_ms_first=server_total[0],
        server_stage_ms={stage: statistics.median(v) for stage, v in stage_ms.items()},
        config=config, dropouts=drops, survivor_ids=tuple(last.expected_survivors),
    )
