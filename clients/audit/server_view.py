"""The server view: attack everything the server holds after a round, beside an unprotected round.

Three rounds carry the same updates, one per simulated client, the victim's computed on the
enterprise's own records (the members):

* **masking**: a real active-mode round of :mod:`secagg.masking` (the state machines, the wire
  encoding, the roster-signed adverts) played in memory by :class:`~secagg.masking.attack_arena.Arena`.
  The attacker gets the server's whole transcript -- every byte every client sent it: signed
  adverts, sealed share boxes, masked uploads, consistency signatures and the unmask shares. It
  rebuilds every secret that the transcript holds at least ``t`` shares of (the victim's
  self-mask seed: the protocol reveals it for every survivor), strips what it can and decodes
  the rest as its best estimate of the victim's update. The same attack is run with ``t - 1``
  of the victim's share holders colluding (their held shares and mask keys added), and, as the
  positive control that shows the attack is real, with ``t`` of them: that one must recover the
  update exactly (up to quantisation).
* **CKKS**: a real round of :mod:`secagg.ckks` (TenSEAL/SEAL ciphertexts, the dealer's key
  ceremony). The attacker holds the public parameters and the victim's ciphertexts; without the
  secret key its best decryption is one under a key of its own. Positive control: the same
  decryption with the round's key returns the update.
* **plaintext** (the contrast: FedAvg as Flower sends it): the server reads the update.

Each estimate is scored against the truth by Pearson correlation and relative L2 error, and by
a gradient membership-inference attack: every candidate record (the victim's members and
held-out records of the same enterprise) is scored by the cosine between its own gradient and
the estimated update (members' gradients are summed into it). AUC 0.5 is chance. The released
aggregate is scored too: what masking is allowed to reveal (differential privacy, not masking,
bounds that).

The model whose updates these are is a softmax-regression head on public features of each record
(hashed words and word pairs of the text, the normalised sensors), d = :data:`FEATURES` x labels
weights: the size is stated in the report. The records' split, the model and the updates are
seeded (``seed``); the rounds' keys are fresh, as in a real round, so the protected rows move by
chance from run to run (within the chance band) while the plaintext rows repeat exactly. A run
takes about a second.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from secagg.errors import InvalidParameter

from ..data import LABELS, Record, sensor_features

__all__ = ["FEATURES", "AttackResult", "ServerView", "auc", "featurize", "server_view"]

#: hashed text buckets, random Fourier features of the sensors, bias: the attacked model's input
TEXT_BUCKETS = 128
SENSOR_FOURIER = 512
#: bandwidth of the sensor Fourier features (normalised sensor units)
SENSOR_BANDWIDTH = 3.0
FEATURES = TEXT_BUCKETS + SENSOR_FOURIER + 1


def auc(scores_pos: npt.ArrayLike, scores_neg: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted one half)."""
    pos = np.asarray(scores_pos, dtype=np.float64)
    neg = np.asarray(scores_neg, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise InvalidParameter("auc needs at least one positive and one negative score")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def featurize(records: Sequence[Record]) -> npt.NDArray[np.float64]:
    """Public features per record: hashed words and word pairs (unit norm), random Fourier
    features of the normalised sensors (a fixed public projection), a bias."""
    proj = np.random.default_rng(20261130)  # public and fixed: part of the model's definition
    omega = proj.normal(0.0, SENSOR_BANDWIDTH, size=(6, SENSOR_FOURIER))
    phase = proj.uniform(0.0, 2 * np.pi, size=SENSOR_FOURIER)
    out = np.zeros((len(records), FEATURES))
    for n, r in enumerate(records):
        words = re.findall(r"[a-z0-9]+", r.text.lower())
        for tok in words + [a + "_" + b for a, b in itertools.pairwise(words)]:
            h = int.from_bytes(hashlib.blake2s(tok.encode(), digest_size=4).digest(), "big")
            out[n, h % TEXT_BUCKETS] += 1.0
        norm = np.linalg.norm(out[n, :TEXT_BUCKETS])
        if norm > 0:
            out[n, :TEXT_BUCKETS] /= norm
        s = np.asarray(sensor_features(r.sensors))
        out[n, TEXT_BUCKETS:-1] = np.cos(s @ omega + phase) * math.sqrt(2.0 / SENSOR_FOURIER)
        out[n, -1] = 1.0
    return out


def _gradients(w: npt.NDArray[np.float64], x: npt.NDArray[np.float64],
               y: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Per-record cross-entropy gradients of the softmax head ``w`` (labels x features), flat."""
    logits = x @ w.T
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return np.asarray(np.einsum("nc,nf->ncf", p, x).reshape(len(y), -1), dtype=np.float64)


def _pearson(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / den) if den > 0 else 0.0


@dataclass(frozen=True, slots=True)
class AttackResult:
    """One attacker's best estimate of the victim's update, scored against the truth."""

    protection: str  #: "masking", "ckks" or "plaintext"
    attacker: str  #: what the attacker holds
    correlation: float  #: Pearson correlation of estimate and truth (0: chance)
    relative_error: float  #: ||estimate - truth|| / ||truth||
    mia_auc: float  #: gradient membership inference on the estimate (0.5: chance)
    recovered: bool  #: the exact update read (masking: every mask stripped; else corr > 0.999)
    positive_control: bool = False  #: an attacker beyond the threat model (must succeed)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"protection": self.protection, "attacker": self.attacker,
                "correlation": self.correlation, "relative_error": self.relative_error,
                "mia_auc": self.mia_auc, "recovered": self.recovered,
                "positive_control": self.positive_control, "detail": self.detail}


@dataclass(frozen=True)
class ServerView:
    clients: int
    vector_length: int
    members: int
    nonmembers: int
    threshold: int
    neighbours: int
    seed: int
    ckks_preset: str
    results: tuple[AttackResult, ...]
    aggregate_auc: float  #: the same MIA on the released mean (allowed: DP bounds it)
    chance_band: float  #: |corr| a random estimate stays under with probability ~1e-6

    @property
    def auc_sd(self) -> float:
        """Standard deviation of the AUC of a chance-level attacker (Mann-Whitney null)."""
        m, n = self.members, self.nonmembers
        return math.sqrt((m + n + 1) / (12.0 * m * n))

    def get(self, protection: str, *, control: bool = False) -> list[AttackResult]:
        return [r for r in self.results
                if r.protection == protection and r.positive_control == control]

    @property
    def protected_leak(self) -> bool:
        """Some attacker within the threat model recovered the update, correlated with it beyond
        chance, or inferred membership from its estimate beyond chance (4 null sd)."""
        return any((r.recovered or abs(r.correlation) > self.chance_band
                    or r.mia_auc > 0.5 + 4 * self.auc_sd)
                   for r in self.results
                   if r.protection != "plaintext" and not r.positive_control)

    @property
    def controls_ok(self) -> bool:
        """Every positive control (and the plaintext contrast) read the update."""
        return all(r.recovered for r in self.results
                   if r.positive_control or r.protection == "plaintext")

    def to_dict(self) -> dict[str, Any]:
        return {"clients": self.clients, "vector_length": self.vector_length,
                "model": f"softmax head, {FEATURES} features ({TEXT_BUCKETS} hashed text, "
                f"{SENSOR_FOURIER} sensor Fourier, bias) x {len(LABELS)} labels",
                "members": self.members, "nonmembers": self.nonmembers,
                "masking": {"threshold": self.threshold, "neighbours": self.neighbours},
                "ckks_preset": self.ckks_preset, "seed": self.seed,
                "aggregate_mia_auc": self.aggregate_auc, "chance_band": self.chance_band,
                "mia_auc_null_sd": self.auc_sd,
                "protected_leak": self.protected_leak, "controls_ok": self.controls_ok,
                "results": [r.to_dict() for r in self.results]}


# ---- masking -----------------------------------------------------------------------------------

def _masking_estimates(updates: npt.NDArray[np.float64], victim: int, seed: int
                       ) -> tuple[Any, dict[str, tuple[npt.NDArray[np.float64], bool, str]]]:
    from secagg.encoding.packing import unpack_bits
    from secagg.hazmat import shamir
    from secagg.hazmat.agreement import X25519KeyPair
    from secagg.hazmat.handles import SecretBytes
    from secagg.hazmat.prg import MaskExpander
    from secagg.masking import keys
    from secagg.masking import messages as m
    from secagg.masking.attack_arena import Arena
    from secagg.masking.config import MaskingConfig, Stage
    from secagg.masking.simulate import insecure_simulated_federation

    n, d = updates.shape
    roster, identities = insecure_simulated_federation(n)
    with warnings.catch_warnings():  # the dropout warning of a small round: not the audit's topic
        warnings.filterwarnings("ignore", category=UserWarning)
        cfg = MaskingConfig.create(
            num_clients=n, vector_length=d, clip=1.0, value_bits=16,
            roster=roster, session=hashlib.sha256(
                b"secagg-audit-server-view" + seed.to_bytes(8, "big")).digest()[:16])
    arena = Arena(cfg, list(updates), roster=roster, identities=identities,
                  rng=np.random.default_rng(seed))
    held: dict[int, dict[int, Any]] = {}  # colluders' shares, read before the unmask wipes them

    def snapshot(i: int, data: bytes) -> bytes:
        if arena.clients[i]._held:
            held[i] = dict(arena.clients[i]._held)
        return data

    arena.on_server = snapshot
    arena.run()
    if arena.round_error or arena.server.stage is not Stage.DONE:
        raise InvalidParameter(f"the audited masking round did not complete: {arena.round_error}")
    digest, t = arena.digest, cfg.threshold
    victim_session = arena.clients[victim]
    upload = arena.messages(victim, m.MaskedInput)[0]
    advert = arena.messages(victim, m.AdvertiseKeys)[0]
    holders = sorted(victim_session._included)
    fp = cfg.fixed_point
    out: dict[str, tuple[npt.NDArray[np.float64], bool, str]] = {}
    for colluders in ([], holders[: t - 1], holders[:t]):
        shares: dict[str, dict[int, SecretBytes]] = {"key": {}, "seed": {}}
        for sender in arena.sent:  # the transcript: every unmask reply the server received
            for reply in arena.messages(sender, m.UnmaskShares):
                if victim in reply.seed_shares:
                    shares["seed"][sender + 1] = SecretBytes(
                        reply.seed_shares[victim][: shamir.SHARE_BYTES])
                if victim in reply.mask_key_shares:
                    shares["key"][sender + 1] = SecretBytes(
                        reply.mask_key_shares[victim][: shamir.SHARE_BYTES])
        for c in colluders:
            mine = held.get(c, {}).get(victim)
            if mine is not None:
                shares["key"][c + 1], shares["seed"][c + 1] = mine[0], mine[1]

        def rebuild(kind: str, shares: dict[str, dict[int, SecretBytes]] = shares
                    ) -> SecretBytes | None:
            got = shares[kind]
            if len(got) < t:
                return None
            return shamir.combine(dict(list(got.items())[:t]), threshold=t, secret_bytes=32)

        y = unpack_bits(upload.payload, cfg.mod_bits, cfg.wire_length)
        seed_secret = rebuild("seed")
        if seed_secret is not None and keys.seed_commitment(
                seed_secret, victim, digest, cfg.round) == advert.seed_commitment:
            MaskExpander().apply(y, keys.self_mask_key(seed_secret, victim, digest, cfg.round),
                                 subtract=True)
        else:
            seed_secret = None
        key_secret = rebuild("key")
        own = X25519KeyPair.from_private_bytes(key_secret) if key_secret is not None else None
        left = 0
        for j in holders:
            peer_public = victim_session._adverts[j].mask_public
            if own is not None and own.public_bytes == advert.mask_public:
                k = keys.pairwise_mask_key(own, peer_public, victim, j, digest, cfg.round)
            elif j in colluders:
                k = keys.pairwise_mask_key(arena.clients[j]._mask, advert.mask_public, j, victim,
                                           digest, cfg.round)
            else:
                left += 1
                continue
            MaskExpander().apply(y, k, subtract=victim < j)
        y &= np.uint32((1 << cfg.mod_bits) - 1)
        exact = bool(np.array_equal(y, arena.values[victim]))
        estimate = np.clip(y[:-1].astype(np.float64) / fp.scale - fp.clip, -fp.clip, fp.clip)
        who = ("server alone (its full transcript)" if not colluders else
               f"server + {len(colluders)} colluding share holders of the victim")
        detail = (f"{len(shares['seed'])} shares of the self-mask seed "
                  f"({'rebuilt' if seed_secret is not None else 'not rebuilt'}), "
                  f"{len(shares['key'])} of the mask key (t = {t}); "
                  f"{left} of {len(holders)} pairwise masks left on the upload")
        out[who] = (estimate, exact, detail)
    return cfg, out


# ---- CKKS --------------------------------------------------------------------------------------

def _ckks_estimates(updates: npt.NDArray[np.float64], seed: int
                    ) -> tuple[str, dict[str, tuple[npt.NDArray[np.float64], str]]]:
    from secagg.ckks.messages import Upload
    from secagg.ckks.presets import Preset
    from secagg.ckks.simulate import make_config, run_round
    from secagg.hazmat.handles import SecretBytes
    from secagg.hazmat.seal_codec import SealSession

    n, d = updates.shape
    params = Preset.COMPACT.params
    config = make_config(params, update_size=d, num_clients=n)
    victim = config.client_ids[-1]  # not the dealer
    captured: dict[str, bytes] = {}

    def keep(blob: bytes) -> bytes:
        captured["upload"] = blob
        return blob

    # the victim (the last id: not the dealer) carries updates[0]
    order = [config.client_ids[-1], *config.client_ids[:-1]]
    result = run_round(config, {i: updates[k] for k, i in enumerate(order)},
                       tamper={victim: keep})
    upload = Upload.from_bytes(captured["upload"])
    public = SealSession(poly_modulus_degree=params.poly_modulus_degree,
                         coeff_modulus_bits=params.coeff_modulus_bits,
                         level_primes=params.level_primes, scale_bits=params.scale_bits)
    cts = [public.load(c, what="victim upload") for c in upload.chunks]
    client = result.clients[victim]
    layout = client._layout
    rng = np.random.default_rng(seed)
    guessed = public.keys_from_seed(SecretBytes(rng.bytes(64), label="attacker-key"))
    out: dict[str, tuple[npt.NDArray[np.float64], str]] = {}
    for who, key in (("server: public parameters + the victim's ciphertexts", guessed),
                     ("holder of the round's secret key", client._require_key().seal)):
        plain = [key.decrypt_exact(ct) for ct in cts]
        values, weight, _count = layout.unpack(plain)
        est = np.nan_to_num(values / weight if abs(weight) > 1e-9 else values)
        out[who] = (np.clip(est, -1e6, 1e6),
                    f"{len(cts)} ciphertext(s) of {len(captured['upload'])} bytes, "
                    f"N={params.poly_modulus_degree}, decrypted weight field {weight:.3g}")
    return params.name, out


# ---- the section -------------------------------------------------------------------------------

def server_view(records: Sequence[Record], *, clients: int = 6, members: int = 16,
                nonmembers: int = 64, seed: int = 0) -> ServerView:
    """Run the three rounds on ``records``: the victim's update is one FedSGD step on
    ``members`` of them; ``nonmembers`` more are held out; the rest feed the other clients."""
    need = members + nonmembers + members
    if len(records) < need:
        raise InvalidParameter(f"the server view needs at least {need} records, found "
                               f"{len(records)}")
    if clients < 3:
        raise InvalidParameter(f"the server view needs at least 3 clients, found {clients}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))
    x = featurize(records)[order]
    y = np.asarray([records[i].label for i in order], dtype=np.int64)
    xm, ym = x[:members], y[:members]
    xn, yn = x[members:members + nonmembers], y[members:members + nonmembers]
    pool_x, pool_y = x[members + nonmembers:], y[members + nonmembers:]
    c = len(LABELS)
    w0 = rng.normal(0.0, 0.05, size=(c, FEATURES))
    # each client's update: one FedSGD step (minus the mean gradient) on its own records
    updates = np.zeros((clients, c * FEATURES))
    updates[0] = -_gradients(w0, xm, ym).mean(axis=0)
    for k in range(1, clients):
        pick = rng.choice(len(pool_x), size=members, replace=False)
        updates[k] = -_gradients(w0, pool_x[pick], pool_y[pick]).mean(axis=0)
    truth = updates[0]
    # the attacker's reference: the mean gradient of records it knows are not the victim's
    # (the other records of the pool stand for public data of the same kind)
    reference = -_gradients(w0, pool_x, pool_y).mean(axis=0)
    g_mem = -_gradients(w0, xm, ym) - reference
    g_non = -_gradients(w0, xn, yn) - reference

    def mia(estimate: npt.NDArray[np.float64]) -> float:
        """Score each candidate by the cosine of its centred gradient with the centred estimate."""
        e = estimate - reference
        e = e / (np.linalg.norm(e) or 1.0)

        def cos(g: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            return np.asarray(g @ e / np.maximum(np.linalg.norm(g, axis=1), 1e-12))
        return auc(cos(g_mem), cos(g_non))

    def scored(protection: str, who: str, est: npt.NDArray[np.float64], recovered: bool,
               control: bool, detail: str) -> AttackResult:
        rel = float(np.linalg.norm(est - truth) / np.linalg.norm(truth))
        return AttackResult(protection, who, _pearson(est, truth), rel, mia(est), recovered,
                            control, detail)

    results: list[AttackResult] = []
    cfg, masked = _masking_estimates(updates, victim=0, seed=seed)
    for n, (who, (est, exact, detail)) in enumerate(masked.items()):
        results.append(scored("masking", who, est, exact, n == 2, detail))
    preset, ck = _ckks_estimates(updates, seed)
    for n, (who, (est, detail)) in enumerate(ck.items()):
        corr = _pearson(est, truth)
        results.append(scored("ckks", who, est, corr > 0.999, n == 1, detail))
    results.append(scored("plaintext", "server of an unprotected round (FedAvg: reads the "
                          "update)", truth.copy(), True, False, "the upload is the update"))
    d = truth.size
    return ServerView(
        clients=clients, vector_length=d, members=members, nonmembers=nonmembers,
        threshold=cfg.threshold, neighbours=cfg.neighbours, seed=seed, ckks_preset=preset,
        results=tuple(results), aggregate_auc=mia(updates.mean(axis=0)),
        chance_band=4.9 / math.sqrt(d),
    )
