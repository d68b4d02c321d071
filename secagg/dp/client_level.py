"""Client-level epsilon of a released sum protected by distributed Skellam noise.

The per-round Renyi DP of the Skellam mechanism Sk(mu, mu) on an integer query with L1 and L2
sensitivities D1, D2 is (Agarwal, Kairouz and Liu 2021, "The Skellam Mechanism for Differentially
Private Federated Learning", Theorem 3.5, stated for integer orders alpha > 1)::

    eps(alpha) = alpha * D2^2 / (4 mu) + min(((2 alpha - 1) D2^2 + 6 D1) / (16 mu^2), 3 D1 / (4 mu))

so the accountant evaluates it at integer orders only (:data:`RDP_ORDERS`: 2..128 and 256, the
grid TFF's distributed-DP accounting uses). It approaches the Gaussian's alpha D2^2 / (2 sigma^2)
as mu grows. Rounds compose additively in RDP; the conversion to (epsilon, delta) is Opacus's
``get_privacy_spent`` (no conversion of our own). Clients are not subsampled secretly (the server
sees who takes part), so no amplification.

The clamp. Each share is clamped to [-c, c] (:mod:`secagg.dp.distributed`); the clamped mechanism
equals the exact Skellam mechanism except on an event of probability tau <= R*n*d*2^-64 over R
rounds of n clients and d coordinates, whatever the data. The standard argument then gives: if the
exact mechanism is (eps, delta')-DP, the clamped one is (eps, delta' + (1 + e^eps) tau)-DP. The
epsilon returned here is the smallest eps found with RDP-to-DP at delta' = delta - (1 + e^eps) tau
(a fixed point, reached from below), so it holds for the caller's total ``delta``.

Dropouts. The released sum holds one noise share per survivor; the noise is calibrated for the
fewest the round accepts (the masking threshold), and the epsilon of a round is computed from the
number of shares actually in its sum (``num_contributors``), which the ledger records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secagg.dp.accounting import check_delta
from secagg.dp.distributed import TAIL_PROB, DistributedNoise
from secagg.errors import InvalidParameter

__all__ = ["RDP_ORDERS", "DistributedDPPolicy", "SkellamRelease", "client_level_epsilon",
           "compose_client_level", "skellam_rdp"]

#: Integer Renyi orders (Theorem 3.5 of Agarwal et al. 2021 is stated for integer alpha > 1).
RDP_ORDERS: tuple[int, ...] = (*range(2, 129), 256)


def skellam_rdp(
    orders: npt.ArrayLike, *, l1: float, l2: float, mu: float
) -> npt.NDArray[np.float64]:
    """RDP of one Sk(mu, mu) release at each integer order (formula in the module docstring).

    A fractional order is refused: the theorem is not stated for it."""
    if not (mu > 0 and math.isfinite(mu)):
        raise InvalidParameter(f"Skellam mu must be a finite number > 0, found {mu}")
    a = np.asarray(orders, dtype=np.float64)
    if a.size and (not np.all(a == np.round(a)) or float(a.min()) < 2):
        raise InvalidParameter("Skellam RDP orders must be integers >= 2 (Agarwal et al. 2021, "
                               f"Theorem 3.5), found {np.asarray(orders).tolist()}")
    first = a * l2 * l2 / (4.0 * mu)
    second = np.minimum(((2.0 * a - 1.0) * l2 * l2 + 6.0 * l1) / (16.0 * mu * mu),
                        3.0 * l1 / (4.0 * mu))
    return np.asarray(first + second, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class SkellamRelease:
    """One released sum: integer sensitivities, the Poisson parameter of the whole sum's noise
    (``mu`` = per-share mu times the shares in it) and the clamp's tail probability for it."""

    l1: float
    l2: float
    mu: float
    tail: float

    @classmethod
    def of(cls, noise: DistributedNoise, num_contributors: int) -> SkellamRelease:
        return cls(l1=noise.sensitivity_l1, l2=noise.sensitivity_l2,
                   mu=noise.share_mu * num_contributors,
                   tail=noise.num_clients * noise.dim * TAIL_PROB)


def _to_dp(rdp: npt.NDArray[np.float64], delta: float) -> float:
    import warnings

    from opacus.accountants.analysis.rdp import get_privacy_spent

    with warnings.catch_warnings():  # "optimal order is the largest/smallest alpha": the grid
        warnings.simplefilter("ignore", UserWarning)  # is fixed by the theorem's integer orders
        eps, _ = get_privacy_spent(orders=list(RDP_ORDERS), rdp=list(rdp), delta=delta)
    return float(eps)


def compose_client_level(releases: Iterable[SkellamRelease], *, delta: float) -> float:
    """Client-level epsilon at ``delta`` of all ``releases`` composed (RDP at integer orders,
    summed), with the clamps' tail charged as (1 + e^eps) * tau."""
    check_delta(delta)
    rdp = np.zeros(len(RDP_ORDERS))
    tail = 0.0
    count = 0
    for r in releases:
        rdp = rdp + skellam_rdp(RDP_ORDERS, l1=r.l1, l2=r.l2, mu=r.mu)
        tail += r.tail
        count += 1
    if count == 0:
        return 0.0
    eps = _to_dp(rdp, delta - 2.0 * tail)  # e^eps >= 1: a lower bound to start from
    for _ in range(100):
        slack = (1.0 + math.exp(min(eps, 700.0))) * tail
        if slack >= delta / 2:
            raise InvalidParameter(
                f"delta={delta} is too small for the clamp's tail: (1 + e^{eps:.3g}) * "
                f"{tail:.3g} = {slack:.3g}; raise delta or the noise")
        new = _to_dp(rdp, delta - slack)
        if new <= eps:  # the exact mechanism is (eps, delta - slack)-DP: eps holds at delta
            return eps
        eps = new
    raise InvalidParameter("client-level epsilon did not settle (clamp tail too large for delta)")


def client_level_epsilon(
    noise: DistributedNoise, *, rounds: int, delta: float, num_contributors: int | None = None
) -> float:
    """Client-level epsilon (replace-one-client) after ``rounds`` releases at ``delta``.

    ``num_contributors`` (the noise shares in each released sum) defaults to
    ``noise.min_clients``, the worst case the round accepts.
    """
    if not (isinstance(rounds, int) and rounds >= 1):
        raise InvalidParameter(f"rounds must be an integer >= 1, found {rounds!r}")
    m = noise.min_clients if num_contributors is None else num_contributors
    if not (isinstance(m, int) and noise.min_clients <= m <= noise.num_clients):
        raise InvalidParameter(
            f"num_contributors must be in [min_clients={noise.min_clients}, "
            f"num_clients={noise.num_clients}], found {m!r}"
        )
    return compose_client_level([SkellamRelease.of(noise, m)] * rounds, delta=delta)


@dataclass(frozen=True, slots=True)
class DistributedDPPolicy:
    """What an enterprise requires of a masking round's distributed noise before taking part.

    ``min_noise_multiplier``: the least noise multiplier (aggregate std / integer sensitivity at
    the fewest noise shares the round accepts); ``max_l2_clip``: the largest L2 clip it accepts
    (None: any); ``max_round_epsilon``: the most client-level epsilon one round may cost at
    ``delta`` (None: not checked); ``require``: refuse a masking round that announces no
    distributed noise at all."""

    min_noise_multiplier: float
    delta: float = 1e-5
    max_l2_clip: float | None = None
    max_round_epsilon: float | None = None
    require: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_noise_multiplier) and self.min_noise_multiplier > 0):
            raise InvalidParameter("min_noise_multiplier must be a finite number > 0, found "
                                   f"{self.min_noise_multiplier}")
        check_delta(self.delta)
        for name in ("max_l2_clip", "max_round_epsilon"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise InvalidParameter(f"{name} must be a finite number > 0 or None, found {v}")

    def refusal(self, noise: DistributedNoise | None, *, threshold: int) -> str | None:
        """Why a round with ``noise`` (None: none announced) and masking ``threshold`` is weaker
        than this policy, in one line; None if it is not."""
        if noise is None:
            if self.require:
                return ("the round announces no distributed DP noise but this client's policy "
                        f"requires noise_multiplier >= {self.min_noise_multiplier:g}; ask the "
                        "operator to open it with --option dp_noise_multiplier=Z")
            return None
        if noise.min_clients > threshold:
            return (f"the round's noise is calibrated for {noise.min_clients} shares but the "
                    f"masking threshold {threshold} lets a sum of fewer be unmasked")
        if noise.noise_multiplier < self.min_noise_multiplier:
            return (f"the round's distributed DP noise_multiplier {noise.noise_multiplier:g} is "
                    f"below this client's policy {self.min_noise_multiplier:g}; refusing")
        if self.max_l2_clip is not None and noise.l2_clip > self.max_l2_clip:
            return (f"the round's L2 clip {noise.l2_clip:g} exceeds this client's policy "
                    f"{self.max_l2_clip:g}; refusing")
        if self.max_round_epsilon is not None:
            eps = client_level_epsilon(noise, rounds=1, delta=self.delta)
            if eps > self.max_round_epsilon:
                return (f"one round costs client-level epsilon {eps:.4g} at delta={self.delta:g}"
                        f", above this client's policy {self.max_round_epsilon:g}; refusing")
        return None
