"""``secagg bench ckks``: our CKKS round against NVIDIA FLARE's TenSEAL recipe, same process.

Both sides get the same float32 updates and the same per-client weights (FLARE's local
iteration counts, drawn from 1..8), and both release the weighted mean. Measured per side:

* ``bytes_per_param_ratio``: one client's upload in bytes / (4 * params), i.e. vs float32.
  Ours counts the whole framed, signed upload message; FLARE's counts its serialised vectors.
* ``client_encrypt_s``: mean over clients of the time from the float32 update to upload bytes.
* ``server_sum_s``: from all uploads (bytes) to the aggregate (bytes): parse, check, sum,
  serialise. FLARE's includes its FOBS decomposition (vector + context per tensor), as FLARE
  ships it; ``nvflare.server_sum_without_context_s`` leaves that step out, and
  ``server_sum_vs_nvflare_without_context`` compares against it (the stricter ratio).
* ``max_abs_error``: max |released weighted mean - numpy float64 weighted mean|.

``--preset packed`` runs the compact wire format (one real per coefficient, residues bit-packed,
a prime chosen by :meth:`secagg.ckks.presets.CKKSParams.for_round` for this round's 10 clients,
clip 1, weights <= 8, and ``--target-error``); its ``bytes_per_param_ratio`` target is <= 1.0.

``--mode threshold`` (issue 14, item 4) runs threshold CKKS instead of the dealer mode
(:mod:`secagg.ckks.threshold`): every client is an enterprise with its own secret, dealt to the
others by replicated t-out-of-n sharing through sealed, roster-signed bundles; uploads are
one bit-packed polynomial per chunk under the round's common ``a_k``, signed
(:mod:`secagg.ckks.threshold.wire`); the server verifies and sums them; ``--drop-at-decrypt K``
enterprises (default ``n - t``) are absent at decryption, and the ``n - K`` others send signed,
smudged partial decryptions that the server verifies and combines. Each client encrypts
``w_i * x_i`` and its weight ``w_i`` (one more real), so the weights stay encrypted as in the dealer
mode; the released mean is the decrypted sum over the decrypted total weight. The parameters come
from :func:`secagg.ckks.threshold.plan` with clip ``8`` (the weighted values' range) and the target
error scaled so that ``max_abs_error`` of the mean is at most ``1e-6`` of the clip range (1.0)
(the total weight is at least the number of clients). Its default digit embedding releases the
exact sum of the quantised values, so that bound is worst-case: four reals share a coefficient
above the smudging noise (:mod:`secagg.ckks.threshold.digits`).
Extra keys: ``decrypt_s`` = the partial decryptions counted *sequentially* (the sum over the
decryptors of each one's time from the aggregate to its signed partial bytes, including its
statement step: verifying every signed upload, re-summing them against the aggregate and signing
the round's statement) plus the server's combine (verify, add, decode, divide);
``decrypt_parallel_s`` = the slowest decryptor plus the combine (the decryptors working in
parallel); ``statement_s`` (mean statement step per signer), ``statement_download_bytes`` (what
each signer receives for it: the aggregate and every upload), ``statement_quorum`` and
``min_uploaders`` (the setup's decryption policy, :mod:`secagg.ckks.threshold.policy`);
``threshold``, ``decryptors``, ``dropped_at_decrypt``, ``key_setup_s`` (dealing, sealing and
opening all bundles, sequentially) and the parameter table.

Contract keys (flat, dotted): ``bytes_per_param_ratio``, ``client_encrypt_s``, ``server_sum_s``,
``max_abs_error``, ``nvflare.<same four>``, ``size_vs_nvflare`` (FLARE bytes / ours).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.encoding.clipping import clip_linf
from secagg.errors import InvalidParameter

__all__ = ["TARGETS", "run_bench"]

#: DESIGN.md targets for CKKS, checked and reported, never asserted.
TARGETS = {
    "bytes_per_param_ratio_max": 2.1,
    "packed_bytes_per_param_ratio_max": 1.0,  # --preset packed (issue 14)
    "max_abs_error_max": 1e-6,
    "size_vs_nvflare_min": 6.0,
    "server_sum_vs_nvflare_max": 0.75,
    # --mode threshold (issue 14, "done when"): ratio <= 2.5, server sum no slower than FLARE's
    "threshold_bytes_per_param_ratio_max": 2.5,
    "threshold_server_sum_vs_nvflare_max": 1.0,
}
#: the promised max_abs_error of the released mean, relative to the clip range (1.0)
MAX_ABS_ERROR_REL = 1e-6
_VALUE_BOUND = 1.0

_WEIGHT_BOUND = 8.0
#: ``--preset packed``: CKKSParams.for_round's target error, relative to the sum's range
#: M = clients * 8 * 1. The bench's weights (1..8, mean 4.5) make the total weight W about M / 2,
#: so the released mean is within about 2 * 5e-7 = 1e-6 of the clip range (1.0).
PACKED_TARGET_ERROR = 5e-7


def _progress(total: int, desc: str, enabled: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    """A tqdm bar on stderr (or no-ops): returns (step, close)."""
    if not enabled:
        return (lambda: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, unit="client")
    return (lambda: bar.update(1)), bar.close


def _data(
    clients: int, params: int, seed: int
) -> tuple[dict[int, npt.NDArray[np.float32]], dict[int, float]]:
    rng = np.random.default_rng(seed)  # benchmark data, not secret
    updates = {
        i: clip_linf(rng.normal(0.0, 0.02, params).astype(np.float32), 1.0) for i in range(1, clients + 1)
    }
    weights = {i: float(rng.integers(1, int(_WEIGHT_BOUND) + 1)) for i in updates}
    return updates, weights


def _ours(
    updates: dict[int, npt.NDArray[np.float32]],
    weights: dict[int, float],
    expected: npt.NDArray[np.float64],
    preset: str,
    progress: bool,
    target_error: float,
) -> dict[str, Any]:
    from secagg.ckks.presets import CKKSParams, Preset
    from secagg.ckks.simulate import make_config, run_round

    if preset == "packed":
        params = CKKSParams.for_round(clients=len(updates), value_bound=1.0, weight_bound=_WEIGHT_BOUND,
                                      target_error=target_error)
    else:
        params = Preset.from_name(preset).params
    size = expected.size
    config = make_config(
        params,
        update_size=size,
        num_clients=len(updates),
        min_clients=2,
        value_bound=1.0,
        weight_bound=_WEIGHT_BOUND,
    )
    step, close = _progress(len(updates), "secagg ckks: encrypt", progress)
    try:
        result = run_round(config, updates, weights=weights, on_client_done=lambda _i: step())
    finally:
        close()
    if result.rejected:
        raise InvalidParameter(f"bench round rejected uploads: {result.rejected}")
    upload = float(np.mean(list(result.upload_bytes.values())))
    return {
        "preset": params.describe(),
        "bytes_per_param_ratio": upload / (4 * size),
        "client_encrypt_s": float(np.mean(list(result.client_encrypt_s.values()))),
        "server_sum_s": result.server_sum_s,
        "max_abs_error": float(np.max(np.abs(result.release.mean() - expected))),
        "upload_bytes": int(upload),
        "aggregate_bytes": result.aggregate_bytes,
        "key_ceremony_s": result.ceremony_s,
        "client_decrypt_s": result.client_decrypt_s,
    }


def _threshold(
    updates: dict[int, npt.NDArray[np.float32]],
    weights: dict[int, float],
    expected: npt.NDArray[np.float64],
    threshold: int,
    drop_at_decrypt: int,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    from secagg.ckks.threshold import (
        RingContext,
        ThresholdParty,
        aggregate,
        chunks_for,
        combine,
        decode_partial,
        decode_upload,
        decryption_policy,
        encode_aggregate,
        encode_partial,
        encode_upload,
        open_bundle,
        plan,
        round_seed,
        seal_bundle,
        setup_digest,
    )
    from secagg.hazmat.agreement import X25519KeyPair
    from secagg.identity import Identity, Roster

    ids = tuple(sorted(updates))
    n, size = len(ids), expected.size
    length = size + 1  # the update times the weight, then the weight
    clip = _WEIGHT_BOUND * _VALUE_BOUND
    # sum error <= rel_error * clip (worst case); the mean divides it by W >= n (weights >= 1)
    rel_error = MAX_ABS_ERROR_REL * _VALUE_BOUND * n / clip
    params = plan(parties=n, threshold=threshold, clip=clip, params_count=length,
                  rel_error=rel_error)
    ring = RingContext(params)
    identities = {i: Identity.generate(f"enterprise-{i}") for i in ids}
    roster = Roster("bench-threshold", tuple(identities[i].member(i) for i in ids))
    # the roster's policy (corrupt_rate 0.05): corrupt = ceil(0.05 n), refused above t - 1
    policy = decryption_policy(n, threshold, corrupt_rate=roster.corrupt_rate)
    digest = setup_digest(roster.digest(), ids, threshold, repr(params), policy=policy)
    round_id = 1
    chunks = chunks_for(ring, length)

    # key setup: every enterprise deals its secret, sealed and signed, through the server
    t = time.perf_counter()
    parties = {i: ThresholdParty(ring, i, ids, threshold, identity=identities[i], roster=roster,
                                 policy=policy) for i in ids}
    boxes = {i: X25519KeyPair.generate() for i in ids}
    step, close = _progress(n, "threshold ckks: deal", progress)
    try:
        for i in ids:
            for j, bundle in parties[i].deal().items():
                env = seal_bundle(bundle, identity=identities[i].signing_key,
                                  recipient_box=boxes[j].public_bytes, session=digest)
                parties[j].receive(open_bundle(env, me=j, box=boxes[j], roster=roster,
                                               session=digest, ring=ring))
            step()
    finally:
        close()
    key_setup_s = time.perf_counter() - t

    # uploads: float32 update -> signed, bit-packed bytes
    seed_k = round_seed(digest, round_id)
    assert seed_k == parties[ids[0]].round_seed(round_id)
    blobs: dict[int, bytes] = {}
    enc_s: list[float] = []
    step, close = _progress(n, "threshold ckks: encrypt", progress)
    try:
        for i in ids:
            t = time.perf_counter()
            vec = np.empty(length, dtype=np.float64)
            vec[:size] = updates[i]
            vec[:size] *= weights[i]
            vec[size] = weights[i]
            c0 = parties[i].encrypt(vec, seed_k)
            blobs[i] = encode_upload(ring, identity=identities[i], config_digest=digest,
                                     round_id=round_id, sender=i, residues=c0)
            enc_s.append(time.perf_counter() - t)
            step()
    finally:
        close()

    # server: verify and unpack every upload, sum, serialise the aggregate
    t = time.perf_counter()
    decoded = {i: decode_upload(blobs[i], ring, roster=roster, config_digest=digest,
                                round_id=round_id, chunks=chunks, sender=i).residues
               for i in ids}
    summed = aggregate(ring, decoded)
    aggregate_blob = encode_aggregate(ring, config_digest=digest, round_id=round_id,
                                      uploaders=ids, residues=summed)
    server_sum_s = time.perf_counter() - t

    # decryption: n - K enterprises answer. Each first verifies the aggregate against the signed
    # uploads (a full re-sum) and signs the round's statement; the server forwards the
    # statements; each partial is signed bytes
    pick = np.random.default_rng(seed + 1)  # which enterprises vanish (benchmark choice)
    dropped = tuple(sorted(int(x) for x in pick.choice(ids, size=drop_at_decrypt, replace=False)))
    group = tuple(i for i in ids if i not in dropped)
    signers = group if len(group) >= policy.quorum else ids  # the quorum may exceed t
    statements: dict[int, bytes] = {}
    statement_s: dict[int, float] = {}
    step, close = _progress(len(signers), "threshold ckks: verify and sign", progress)
    try:
        for j in signers:
            t = time.perf_counter()
            statements[j] = parties[j].sign_statement(aggregate_blob, blobs, round_id=round_id)
            statement_s[j] = time.perf_counter() - t
            step()
    finally:
        close()
    partial_blobs: dict[int, bytes] = {}
    partial_s: dict[int, float] = {}
    step, close = _progress(len(group), "threshold ckks: partial decrypt", progress)
    try:
        for j in group:
            t = time.perf_counter()
            shares = parties[j].partial_decrypt(aggregate_blob, statements, group,
                                                round_id=round_id)
            partial_blobs[j] = encode_partial(ring, identity=identities[j], config_digest=digest,
                                              round_id=round_id, sender=j, uploaders=ids,
                                              decryptors=group, residues=shares)
            partial_s[j] = time.perf_counter() - t
            step()
    finally:
        close()
    t = time.perf_counter()
    partials = {j: decode_partial(partial_blobs[j], ring, roster=roster, config_digest=digest,
                                  round_id=round_id, chunks=chunks, uploaders=ids,
                                  decryptors=group, sender=j).residues for j in group}
    total = combine(ring, summed, partials, decryptors=group, threshold=threshold, length=length)
    mean = total[:size] / total[size]
    combine_s = time.perf_counter() - t

    upload = float(np.mean([len(b) for b in blobs.values()]))
    table = params.table()
    return {
        "mode": "threshold",
        "preset": f"threshold t={threshold} of {n}, N={params.poly_modulus_degree}, primes "
        f"{list(params.coeff_modulus_bits)} (data {params.level_bits} bits, bit-packed), scale "
        f"2^{params.scale_bits}, smudging 2^{params.smudging_bits} "
        f"(2^{table['statistical_distance_log2']} statistical distance), "
        f"{params.embedding} embedding",
        "bytes_per_param_ratio": upload / (4 * size),
        "client_encrypt_s": float(np.mean(enc_s)),
        "server_sum_s": server_sum_s,
        "max_abs_error": float(np.max(np.abs(mean - expected))),
        "promised_max_abs_error": MAX_ABS_ERROR_REL * _VALUE_BOUND,
        "decrypt_s": float(sum(partial_s.values()) + sum(statement_s[j] for j in group))
        + combine_s,
        "decrypt_parallel_s": float(max(partial_s[j] + statement_s[j] for j in group))
        + combine_s,
        "partial_decrypt_s": float(np.mean(list(partial_s.values()))),
        "statement_s": float(np.mean(list(statement_s.values()))),
        "statement_download_bytes": len(aggregate_blob) + sum(len(b) for b in blobs.values()),
        "statement_quorum": policy.quorum,
        "min_uploaders": policy.min_uploaders,
        "combine_s": combine_s,
        "threshold": threshold,
        "decryptors": list(group),
        "dropped_at_decrypt": list(dropped),
        "upload_bytes": int(upload),
        "aggregate_bytes": len(aggregate_blob),
        "partial_bytes": int(np.mean([len(b) for b in partial_blobs.values()])),
        "key_ceremony_s": key_setup_s,
        "key_setup_s": key_setup_s,
        "threshold_params": table,
    }


def _nvflare(
    updates: dict[int, npt.NDArray[np.float32]],
    weights: dict[int, float],
    expected: npt.NDArray[np.float64],
    progress: bool,
) -> dict[str, Any]:
    from .nvflare_anchor import NVFlareCKKS, split_tensors

    flare = NVFlareCKKS()
    uploads, enc_s = [], []
    step, close = _progress(len(updates), "nvflare ckks: encrypt", progress)
    try:
        for i, vec in updates.items():
            tensors = split_tensors(vec)
            t = time.perf_counter()
            uploads.append(flare.encrypt(tensors, weights[i]))
            enc_s.append(time.perf_counter() - t)
            step()
    finally:
        close()
    t = time.perf_counter()
    summed = flare.aggregate(uploads, [weights[i] for i in updates])
    sum_only_s = time.perf_counter() - t
    aggregate = flare.decompose(summed)
    server_s = time.perf_counter() - t
    decrypted = flare.decrypt(aggregate)
    flat = np.concatenate(
        [np.asarray(decrypted[n]).ravel() for n in split_tensors(next(iter(updates.values())))]
    )
    upload = float(np.mean([sum(len(b) for b in u.values()) for u in uploads]))
    return {
        "recipe": "TenSEAL ckks_vector per tensor, N=8192, coeff [60,40,40], scale 2^40, "
        "symmetric, context serialised per tensor in the aggregate",
        "bytes_per_param_ratio": upload / (4 * expected.size),
        "client_encrypt_s": float(np.mean(enc_s)),
        "server_sum_s": server_s,
        "server_sum_without_context_s": sum_only_s,
        "max_abs_error": float(np.max(np.abs(flat - expected))),
        "upload_bytes": int(upload),
        "aggregate_bytes": sum(len(v) + len(c) for v, c in aggregate.values()),
        "tensors": len(aggregate),
        "server_context_bytes": flare.p.server_context_bytes,
    }


def run_bench(
    *,
    clients: int,
    params: int,
    compare: str = "nvflare",
    preset: str = "compact",
    seed: int = 0,
    progress: bool = True,
    target_error: float = PACKED_TARGET_ERROR,
    mode: str = "dealer",
    threshold: int | None = None,
    drop_at_decrypt: int | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the report (contract keys at the top level).

    ``mode="dealer"`` (the default) runs the dealer-keyed round with ``preset``;
    ``mode="threshold"`` runs threshold CKKS with ``threshold`` (default
    :func:`secagg.ckks.threshold.default_threshold`) and ``drop_at_decrypt`` enterprises absent at
    decryption (default ``clients - threshold``)."""
    if clients < 2:
        raise InvalidParameter(f"--clients must be >= 2, found {clients}")
    if params < 1:
        raise InvalidParameter(f"--params must be >= 1, found {params}")
    if seed < 0:
        raise InvalidParameter(f"--seed must be >= 0, found {seed}")
    if compare not in ("nvflare", "none"):
        raise InvalidParameter(f"--compare must be 'nvflare' or 'none', found '{compare}'")
    if mode not in ("dealer", "threshold"):
        raise InvalidParameter(f"--mode must be 'dealer' or 'threshold', found '{mode}'")
    if mode == "dealer" and (threshold is not None or drop_at_decrypt is not None):
        raise InvalidParameter("--threshold and --drop-at-decrypt need --mode threshold")
    if mode == "threshold":
        from secagg.ckks.threshold import default_threshold

        threshold = default_threshold(clients) if threshold is None else threshold
        if not 2 <= threshold <= clients:
            raise InvalidParameter(f"--threshold must be in [2, --clients={clients}], found {threshold}")
        drop_at_decrypt = clients - threshold if drop_at_decrypt is None else drop_at_decrypt
        if not 0 <= drop_at_decrypt <= clients - threshold:
            raise InvalidParameter(
                f"--drop-at-decrypt must be in [0, clients - threshold = {clients - threshold}], found "
                f"{drop_at_decrypt}; below the threshold the round ends with NotEnoughParticipants")
    updates, weights = _data(clients, params, seed)
    total_w = sum(weights.values())
    expected = sum(weights[i] * updates[i].astype(np.float64) for i in updates) / total_w
    if mode == "threshold":
        assert threshold is not None and drop_at_decrypt is not None
        ours = _threshold(updates, weights, np.asarray(expected), threshold, drop_at_decrypt, seed,
                          progress)
    else:
        ours = {"mode": "dealer",
                **_ours(updates, weights, np.asarray(expected), preset, progress, target_error)}
    report: dict[str, Any] = {"clients": clients, "params": params, **ours}
    if compare == "nvflare":
        flare = _nvflare(updates, weights, np.asarray(expected), progress)
        report["nvflare"] = flare
        report["size_vs_nvflare"] = flare["upload_bytes"] / ours["upload_bytes"]
        report["server_sum_vs_nvflare"] = ours["server_sum_s"] / flare["server_sum_s"]
        # The stricter comparison: FLARE without shipping a context per tensor.
        report["server_sum_vs_nvflare_without_context"] = (
            ours["server_sum_s"] / flare["server_sum_without_context_s"]
        )
        report["client_encrypt_vs_nvflare"] = ours["client_encrypt_s"] / flare["client_encrypt_s"]
        if mode == "threshold":
            return _threshold_targets(report)
        report["targets_met"] = {
            "bytes_per_param_ratio": ours["bytes_per_param_ratio"] <= TARGETS[
                "packed_bytes_per_param_ratio_max" if preset == "packed" else "bytes_per_param_ratio_max"],
            "max_abs_error": ours["max_abs_error"] <= TARGETS["max_abs_error_max"],
            "size_vs_nvflare": report["size_vs_nvflare"] >= TARGETS["size_vs_nvflare_min"],
            "client_encrypt_s": ours["client_encrypt_s"] <= flare["client_encrypt_s"],
            "server_sum_s": report["server_sum_vs_nvflare"] <= TARGETS["server_sum_vs_nvflare_max"],
        }
    return _threshold_targets(report) if mode == "threshold" else report


def _threshold_targets(report: dict[str, Any]) -> dict[str, Any]:
    """Issue 14's "done when" for threshold mode, met or missed (the server-sum one only with
    --compare nvflare)."""
    met = {
        "bytes_per_param_ratio": report["bytes_per_param_ratio"]
        <= TARGETS["threshold_bytes_per_param_ratio_max"],
        "max_abs_error": report["max_abs_error"] <= report["promised_max_abs_error"],
        "completed_with_dropped": len(report["dropped_at_decrypt"])
        == report["clients"] - report["threshold"],
    }
    if "server_sum_vs_nvflare" in report:
        met["server_sum_s"] = report["server_sum_vs_nvflare"] <= TARGETS[
            "threshold_server_sum_vs_nvflare_max"]
    report["targets_met"] = met
    return report
