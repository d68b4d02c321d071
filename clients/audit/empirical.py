"""The empirical audit: one run of the enterprise's DP-SGD pipeline with canaries, and its bound.

The run is :func:`secagg_clients.trainer.train_private` itself (secure noise, Poisson sampling,
Opacus clipping), on the enterprise's records plus the canaries (every canary row is in the set;
an excluded one's gradient is zeroed, see :mod:`.canaries`), with the mechanism a ledger round
claims: its sample rate q (the batch size is chosen so that q = 1/ceil(N/batch) on
the enlarged set), its noise multiplier and its steps (rounded to whole epochs). Three results:

* white-box: each gradient canary is scored by the privatised update on its coordinate, summed
  over steps as the likelihood ratio of the claimed subsampled Gaussian (the plain sum when
  q = 1); the one-run bound of :mod:`secagg.dp.audit_bound` at ``confidence``;
* black-box: each input canary is scored by minus the trained model's loss on it; same bound;
* f-DP (Mahloujifar, Melis, Chaudhuri 2024; :mod:`secagg.dp.audit_fdp`): the same guesses
  analysed with trade-off curves, at its own guess share :data:`FDP_GUESS_FRACTIONS`. Where the
  claimed mechanism is a Gaussian (q = 1: mu = sqrt(steps) / sigma), the bound on mu is turned
  into the epsilon of that Gaussian at the ledger's delta (``epsilon_gdp``); this is what gets
  close to the theory (Steinke et al.'s epsilon analysis caps a Gaussian's one-run bound far
  below its epsilon). For q < 1 the subsampled mechanism is not Gaussian-shaped, so only the
  (epsilon, delta)-curve bound is given (``epsilon``, no shape assumed);
* noise check: on the coordinates of canaries absent from a step's batch the update, less the
  other rows' clipped gradients there (:mod:`.instrument`), is noise, so a mean square clearly
  below the claimed sigma^2 (a one-sided chi-square test at :data:`NOISE_LEVEL`) shows the
  noise is smaller than recorded. It is not an epsilon bound. Halved noise is caught by it at
  every setting, and by the f-DP Gaussian bound at q = 1 with enough canaries (2,000 at a claim
  of mu = 1 miss it about 3 times in 10^4 runs in simulation); Steinke et al.'s bound alone
  misses it (it stays below the claim of sigma at sigma/2 for every sigma we simulated, up to
  2,000 canaries).

The bounds are compared with the theoretical epsilon of the claimed mechanism for the steps
run, the smaller of RDP and PRV. A bound above it is a violation: the pipeline does not do what
its ledger says. Each bound alone exceeds the theory of a correct pipeline with probability at
most 1 - confidence; :attr:`EmpiricalAudit.violation` takes any of them, so its false-alarm rate
is at most that times the number of bounds (4, or 6 at q = 1: 20 % or 30 % at the default 95 %;
:attr:`EmpiricalAudit.false_alarm_bound`, stated in the report), though they are far from
independent. Simulated, the f-DP Gaussian bound exceeded the true mu in 4 of 2,250 audits
(m = 200 and 1000, mu 0.25 to 2; at most 3 of 300 at one setting). A bound below the theory
proves nothing about tightness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from secagg.dp import Accountant, epsilon
from secagg.dp.audit_bound import AuditBound, epsilon_lower_bound_from_scores
from secagg.dp.audit_fdp import FdpAuditBound, fdp_bound_from_scores, gdp_epsilon
from secagg.errors import InvalidParameter

from ..data import LABELS, Record
from .canaries import EXCLUDED_TAG, gradient_canaries, input_canaries, tagged_rows
from .instrument import CanaryTap, Plant, Recorder, instrumented

__all__ = ["FDP_GUESS_FRACTIONS", "NOISE_LEVEL", "EmpiricalAudit", "Mechanism", "Plant",
           "audit_pipeline", "batch_size_for"]

#: significance at which the noise check reports the noise below the claim: stricter than the
#: bounds' 5 %, so a correct pipeline raises a false alarm once in a thousand audits
NOISE_LEVEL = 1e-3
#: the f-DP bound's guess share, fixed before the run: one count (10 % of the canaries guessed
#: "in", 10 % "out"), so no Bonferroni split. Its bound falls fast as its level shrinks; in
#: simulation one share of 0.2 beat grids of two to three shares around it for mu-GDP at
#: mu = 0.6, 1.67 (epsilon 8) and 2 (m = 1000-2000): P[bound >= half of epsilon 8] was 0.91
#: against 0.80 for (0.1, 0.2, 0.3)
FDP_GUESS_FRACTIONS: tuple[float, ...] = (0.2,)


@dataclass(frozen=True, slots=True)
class Mechanism:
    sample_rate: float
    noise_multiplier: float
    steps: int

    def to_dict(self) -> dict[str, float]:
        return {"sample_rate": self.sample_rate, "noise_multiplier": self.noise_multiplier,
                "steps": self.steps}


@dataclass(frozen=True)
class EmpiricalAudit:
    claimed: Mechanism  #: what the ledger round says (steps as run)
    run: Mechanism  #: what the audited run did (differs from ``claimed`` only under a plant)
    batch_size: int
    records: int
    delta: float
    confidence: float
    plant: Plant | None
    theory_rdp: float
    theory_prv: float
    white_box: AuditBound
    black_box: AuditBound
    white_box_fdp: FdpAuditBound
    black_box_fdp: FdpAuditBound
    noise_sigma_hat: float
    noise_samples: int
    noise_p_value: float
    white_scores: np.ndarray
    white_included: np.ndarray
    black_scores: np.ndarray
    black_included: np.ndarray

    @property
    def theory(self) -> float:
        return min(self.theory_rdp, self.theory_prv)

    @property
    def gaussian_mu(self) -> float | None:
        """mu of the claimed mechanism where it is a Gaussian (q = 1), else None."""
        c = self.claimed
        return math.sqrt(c.steps) / c.noise_multiplier if c.sample_rate >= 1.0 else None

    @property
    def theory_gdp(self) -> float | None:
        """The exact epsilon of the claimed Gaussian at delta (q = 1), else None."""
        mu = self.gaussian_mu
        return None if mu is None else gdp_epsilon(mu, self.delta)

    def bounds(self) -> dict[str, float]:
        """Every empirical epsilon lower bound of the audit, by name."""
        out = {"white_box": self.white_box.epsilon, "black_box": self.black_box.epsilon,
               "white_box_fdp": self.white_box_fdp.epsilon,
               "black_box_fdp": self.black_box_fdp.epsilon}
        for name, b in (("white_box_gdp", self.white_box_fdp), ("black_box_gdp",
                                                                 self.black_box_fdp)):
            if b.epsilon_gdp is not None:
                out[name] = b.epsilon_gdp
        return out

    @property
    def violations(self) -> list[str]:
        """The bounds above the claimed epsilon (each alone has a false-alarm rate of at most
        1 - confidence; see the module docstring for what simulations see)."""
        return [name for name, eps in self.bounds().items() if eps > self.theory]

    @property
    def violation(self) -> bool:
        """An empirical bound above the claimed epsilon: the ledger's claim is refuted."""
        return bool(self.violations)

    @property
    def false_alarm_bound(self) -> float:
        """The most often :attr:`violation` can flag a correct pipeline: each of the k bounds
        exceeds the claim with probability at most 1 - confidence, so any of them does with
        probability at most k * (1 - confidence) (a union bound; no smaller rate is claimed,
        the bounds come from one run and are not independent)."""
        return min(1.0, len(self.bounds()) * (1.0 - self.confidence))

    @property
    def best_bound(self) -> float:
        return max(self.bounds().values())

    @property
    def noise_too_small(self) -> bool:
        return self.noise_p_value < NOISE_LEVEL

    def to_dict(self) -> dict[str, Any]:
        def bound(b: AuditBound) -> dict[str, Any]:
            return {"epsilon": b.epsilon, "canaries": b.canaries, "guesses": b.guesses,
                    "correct": b.correct, "confidence": b.confidence,
                    "by_guesses": [{"guesses": r, "correct": v, "epsilon": e}
                                   for r, v, e in b.by_guesses]}

        def fdp(b: FdpAuditBound) -> dict[str, Any]:
            return {"method": "f-DP one-run (Mahloujifar, Melis, Chaudhuri 2024)",
                    "epsilon": b.epsilon, "guesses": b.guesses, "correct": b.correct,
                    "mu": b.mu, "epsilon_gdp": b.epsilon_gdp, "gdp_guesses": b.gdp_guesses,
                    "gdp_correct": b.gdp_correct, "canaries": b.canaries,
                    "confidence": b.confidence,
                    "by_guesses": [{"guesses": r, "correct": v, "epsilon": e, "mu": mu}
                                   for r, v, e, mu in b.by_guesses]}
        return {
            "claimed": self.claimed.to_dict(), "run": self.run.to_dict(),
            "batch_size": self.batch_size, "records": self.records, "delta": self.delta,
            "confidence": self.confidence, "plant": self.plant.value if self.plant else None,
            "theory_rdp": self.theory_rdp, "theory_prv": self.theory_prv, "theory": self.theory,
            "white_box": bound(self.white_box), "black_box": bound(self.black_box),
            "white_box_fdp": fdp(self.white_box_fdp), "black_box_fdp": fdp(self.black_box_fdp),
            "theory_gdp": self.theory_gdp, "gaussian_mu": self.gaussian_mu,
            "bounds": self.bounds(), "best_bound": self.best_bound,
            "certified_fraction": self.best_bound / self.theory if self.theory > 0 else None,
            "violations": self.violations,
            "violation": self.violation,
            "false_alarm_bound": self.false_alarm_bound,
            "noise_check": {"sigma_claimed": self.claimed.noise_multiplier,
                            "sigma_hat": self.noise_sigma_hat, "samples": self.noise_samples,
                            "p_value": self.noise_p_value, "level": NOISE_LEVEL,
                            "noise_too_small": self.noise_too_small},
        }


def batch_size_for(records: int, sample_rate: float) -> int:
    """The batch size b with 1/ceil(records/b) == sample_rate (the trainer's rule)."""
    k = round(1.0 / sample_rate)
    if not math.isclose(1.0 / k, sample_rate, rel_tol=1e-9):
        raise InvalidParameter(
            f"sample_rate must be 1/k for an integer k (the client's q = 1/ceil(N/batch)), "
            f"found {sample_rate}"
        )
    fits = [b for b in range(1, records + 1) if math.ceil(records / b) == k]
    if not fits:
        raise InvalidParameter(
            f"sample_rate 1/{k} needs at least {k} records, found {records}; audit with more data"
        )
    return min(fits, key=lambda b: abs(b - records / k))


def _white_scores(x: np.ndarray, q: float, sigma: float) -> np.ndarray:
    if q >= 1.0:
        return np.asarray(x.sum(axis=0), dtype=np.float64)
    step = np.logaddexp(math.log1p(-q), math.log(q) + (x - 0.5) / sigma**2)
    return np.asarray(step.sum(axis=0), dtype=np.float64)


def _noise_check(recorder: Recorder, sigma: float) -> tuple[float, int, float]:
    from scipy.stats import chi2

    x = recorder.corrected()
    absent = ~np.stack(recorder.present) if recorder.present else np.zeros_like(x, dtype=bool)
    samples = x[absent]
    n = int(samples.size)
    if n == 0:
        return float("nan"), 0, 1.0
    s = float(np.sum(samples**2))
    return math.sqrt(s / n), n, float(chi2.cdf(s / sigma**2, n))


def audit_pipeline(
    records: Sequence[Record], *, sample_rate: float, noise_multiplier: float, steps: int,
    delta: float, canaries: int = 100, plant: Plant | None = None, confidence: float = 0.95,
    encoder: str = "minilm", clip_norm: float = 1.0, seed: int = 0, progress: bool = True,
) -> EmpiricalAudit:
    """Train once with ``canaries`` gradient and ``canaries`` input canaries; bound epsilon."""
    from ..model import build_model, load_tokenizer, make_dataset
    from ..trainer import DPConfig, train_private

    if not (isinstance(canaries, int) and canaries >= 2):
        raise InvalidParameter(f"canaries must be an integer >= 2, found {canaries!r}")
    if plant is Plant.SAMPLE_RATE_MISREPORTED and sample_rate >= 1.0:
        raise InvalidParameter(
            "plant sample-rate-misreported runs full batches under a smaller recorded q, but "
            "this round already records q = 1; audit a round with q < 1"
        )
    rng = np.random.default_rng(seed)
    model = build_model(encoder=encoder, seed=seed)
    tap = CanaryTap(model)
    grads = gradient_canaries(model, count=canaries, clip_norm=clip_norm, rng=rng)
    odd, odd_in = input_canaries(count=canaries, rng=rng)
    tokenizer = load_tokenizer()
    max_length = 32
    # every canary row is in the set; the excluded ones' gradients are zeroed (see .canaries)
    data = make_dataset(list(records) + list(odd), tokenizer, max_length=max_length)
    data.tensors[2][len(records) + np.flatnonzero(~odd_in), 0] = EXCLUDED_TAG
    extra = tagged_rows(np.arange(canaries), max_length=max_length,
                        cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                        num_labels=len(LABELS))
    dataset = torch.utils.data.TensorDataset(
        *(torch.cat([a, b]) for a, b in zip(data.tensors, extra, strict=True)))
    n = len(dataset)
    k = round(1.0 / sample_rate)
    epochs = max(1, round(steps / k))
    claimed = Mechanism(sample_rate, noise_multiplier, epochs * k)
    run_q, run_epochs = sample_rate, epochs
    if plant is Plant.SAMPLE_RATE_MISREPORTED:
        run_q, run_epochs = 1.0, epochs * k  # same steps, every record in every batch
    sigma_run = noise_multiplier / 2 if plant is Plant.NOISE_HALVED else noise_multiplier
    batch = batch_size_for(n, run_q)
    config = DPConfig(epochs=run_epochs, batch_size=batch, max_grad_norm=clip_norm, delta=delta,
                      noise_multiplier=sigma_run)
    recorder = Recorder(grads, clip_norm)
    with instrumented(tap, grads, recorder, no_clipping=plant is Plant.NO_CLIPPING):
        report = train_private(tap, dataset, config, progress=progress)
    run = Mechanism(report.sample_rate, report.noise_multiplier, report.steps)

    x = recorder.corrected()
    white = _white_scores(x, claimed.sample_rate, claimed.noise_multiplier)
    black = -_losses(tap, make_dataset(odd, tokenizer, max_length=max_length))
    sigma_hat, samples, p_noise = _noise_check(recorder, claimed.noise_multiplier)
    gaussian = claimed.sample_rate >= 1.0  # the claimed mechanism is mu-GDP
    theory = {acc: epsilon(sample_rate=claimed.sample_rate, noise_multiplier=noise_multiplier,
                           steps=claimed.steps, delta=delta, accountant=acc)
              for acc in (Accountant.RDP, Accountant.PRV)}
    return EmpiricalAudit(
        claimed=claimed, run=run, batch_size=batch, records=n, delta=delta,
        confidence=confidence, plant=plant, theory_rdp=theory[Accountant.RDP],
        theory_prv=theory[Accountant.PRV],
        white_box=epsilon_lower_bound_from_scores(white, grads.included, delta=delta,
                                                  confidence=confidence),
        black_box=epsilon_lower_bound_from_scores(black, odd_in, delta=delta,
                                                  confidence=confidence),
        white_box_fdp=fdp_bound_from_scores(white, grads.included, delta=delta,
                                            confidence=confidence, gaussian=gaussian,
                                            fractions=FDP_GUESS_FRACTIONS),
        black_box_fdp=fdp_bound_from_scores(black, odd_in, delta=delta, confidence=confidence,
                                            gaussian=gaussian, fractions=FDP_GUESS_FRACTIONS),
        noise_sigma_hat=sigma_hat, noise_samples=samples, noise_p_value=p_noise,
        white_scores=white, white_included=grads.included, black_scores=black,
        black_included=odd_in,
    )


@torch.no_grad()
def _losses(model: torch.nn.Module, data: torch.utils.data.TensorDataset) -> np.ndarray:
    model.eval()
    ids, mask, sensors, labels = data.tensors
    loss = torch.nn.functional.cross_entropy(model(ids, mask, sensors), labels, reduction="none")
    return np.asarray(loss.double().numpy(), dtype=np.float64)
