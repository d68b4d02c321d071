"""Client-level epsilon of a released sum protected by distributed Skellam noise.

The per-round Renyi DP of the Skellam mechanism Sk(mu, mu) on an integer query with L1 and L2
sensitivities D1, D2 is (Agarwal, Kairouz and Liu 2021, "The Skellam Mechanism for Differentially
Private Federated Learning", Theorem 3.5)::

    eps(alpha) = alpha * D2^2 / (4 mu) + min(((2 alpha - 1) D2^2 + 6 D1) / (16 mu^2), 3 D1 / (4 mu))

It approaches the Gaussian's alpha * D2^2 / (2 sigma^2) as mu grows. Rounds compose additively in
RDP; the conversion to (epsilon, delta) is Opacus's ``get_privacy_spent`` (no accountant of our
own). Clients are not subsampled secretly (the server sees who takes part), so no amplification.
The share clamp of :mod:`secagg.dp.distributed` adds at most rounds*n*dim*2^-64 to delta; the
epsilon returned already holds for the caller's total ``delta``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from secagg.dp.accounting import check_delta
from secagg.dp.distributed import TAIL_PROB, DistributedNoise
from secagg.errors import InvalidParameter

__all__ = ["RDP_ORDERS", "client_level_epsilon", "skellam_rdp"]

RDP_ORDERS: tuple[float, ...] = (
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0, 32.0,
    48.0, 64.0, 128.0, 256.0,
)


def skellam_rdp(
    orders: npt.ArrayLike, *, l1: float, l2: float, mu: float
) -> npt.NDArray[np.float64]:
    """RDP of one Sk(mu, mu) release at each order (formula in the module docstring)."""
    if not (mu > 0 and math.isfinite(mu)):
        raise InvalidParameter(f"Skellam mu must be a finite number > 0, found {mu}")
    a = np.asarray(orders, dtype=np.float64)
    first = a * l2 * l2 / (4.0 * mu)
    second = np.minimum(((2.0 * a - 1.0) * l2 * l2 + 6.0 * l1) / (16.0 * mu * mu),
                        3.0 * l1 / (4.0 * mu))
    return np.asarray(first + second, dtype=np.float64)


def client_level_epsilon(
    noise: DistributedNoise, *, rounds: int, delta: float, num_contributors: int | None = None
) -> float:
    """Client-level epsilon (replace-one-client) after ``rounds`` releases at ``delta``.

    ``num_contributors`` defaults to ``noise.min_clients``, the worst case the round accepts.
    """
    if not (isinstance(rounds, int) and rounds >= 1):
        raise InvalidParameter(f"rounds must be an integer >= 1, found {rounds!r}")
    check_delta(delta)
    m = noise.min_clients if num_contributors is None else num_contributors
    if not (isinstance(m, int) and noise.min_clients <= m <= noise.num_clients):
        raise InvalidParameter(
            f"num_contributors must be in [min_clients={noise.min_clients}, "
            f"num_clients={noise.num_clients}], found {m!r}"
        )
    slack = rounds * noise.num_clients * noise.dim * TAIL_PROB
    if slack >= delta / 2:
        raise InvalidParameter(
            f"delta={delta} is too small for the clamp's tail mass {slack:.3g}; raise delta"
        )
    rdp = rounds * skellam_rdp(
        RDP_ORDERS, l1=noise.sensitivity_l1, l2=noise.sensitivity_l2, mu=noise.share_mu * m
    )
    from opacus.accountants.analysis.rdp import get_privacy_spent

    eps, _ = get_privacy_spent(orders=list(RDP_ORDERS), rdp=list(rdp), delta=delta - slack)
    return float(eps)
