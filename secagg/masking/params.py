"""Choosing the neighbour degree k and threshold t from what the deployment expects.

Users state the number of clients, the expected dropout rate, the fraction of corrupt clients and
the acceptable failure probability; :func:`choose_parameters` returns the sparsest graph and the
threshold that meet them (SecAgg+, Bell et al. 2020, section 3; the original SecAgg of Bonawitz et
al. 2017 is the full graph). Each client's secrets are shared among its k neighbours and itself
(m = k + 1 holders) and need t of them to be reconstructed. The rules:

* honest majority of holders: t > m / 2, always;
* correctness: every client keeps >= t holders alive. Sparse graphs bound it by a union over
  clients of a binomial tail, P[Bin(m, 1 - dropout) < t] * n <= failure_probability;
* security (honest-but-curious server): no client has t corrupt holders,
  P[Bin(m, corrupt) >= t] * n <= 2^-security_bits; with an active server that may lie about
  dropouts (``active=True``), the server gets both kinds of shares only if 2t - m holders are
  corrupt, so the bound uses 2t - m. On the full graph the corrupt count is taken as a worst case,
  ceil(corrupt * n), not a probability.

When no graph meets the correctness target (small federations), the full graph with the smallest
secure t is returned and a warning says how likely the round is to fail.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from secagg.errors import InvalidParameter

__all__ = ["GraphParameters", "binomial_tail", "choose_parameters"]


@dataclass(frozen=True, slots=True)
class GraphParameters:
    neighbours: int
    threshold: int
    correctness_failure: float
    security_failure: float

    @property
    def holders(self) -> int:
        return self.neighbours + 1


def binomial_tail(m: int, p: float, at_least: int) -> float:
    """P[Bin(m, p) >= at_least], summed exactly in floating point."""
    if at_least <= 0:
        return 1.0
    if at_least > m:
        return 0.0
    return min(1.0, sum(math.comb(m, i) * p**i * (1 - p) ** (m - i) for i in range(at_least, m + 1)))


def _validate(num_clients: int, dropout_rate: float, corrupt_rate: float,
              failure_probability: float, security_bits: int) -> None:
    if num_clients < 2:
        raise InvalidParameter(f"num_clients must be >= 2 for secure aggregation, found {num_clients}")
    if not 0 <= dropout_rate < 1:
        raise InvalidParameter(f"dropout_rate must be in [0, 1), found {dropout_rate}")
    if not 0 <= corrupt_rate < 0.5:
        raise InvalidParameter(
            f"corrupt_rate must be in [0, 0.5): masking needs an honest majority, found {corrupt_rate}"
        )
    if not 0 < failure_probability < 1:
        raise InvalidParameter(f"failure_probability must be in (0, 1), found {failure_probability}")
    if not 1 <= security_bits <= 128:
        raise InvalidParameter(f"security_bits must be in [1, 128], found {security_bits}")


def _full_graph(n: int, dropout: float, corrupt: float, active: bool,
                failure_probability: float) -> GraphParameters:
    corrupt_count = math.ceil(corrupt * n)
    t_min = max(n // 2 + 1, corrupt_count + 1)
    if active:
        t_min = max(t_min, (n + corrupt_count) // 2 + 1)
    if t_min > n:
        raise InvalidParameter(
            f"no secure threshold exists for {n} clients with corrupt_rate {corrupt}: "
            "lower corrupt_rate or add clients"
        )
    # The largest t that still meets correctness: the most margin against extra corruption.
    best = next(
        (t for t in range(n, t_min - 1, -1)
         if 1 - binomial_tail(n, 1 - dropout, t) <= failure_probability),
        t_min,
    )
    fail = 1 - binomial_tail(n, 1 - dropout, best)
    if fail > failure_probability:
        warnings.warn(
            f"with {n} clients and threshold {best}, a round fails if more than {n - best} "
            f"client(s) drop: probability {fail:.2g} at dropout_rate {dropout} (target "
            f"{failure_probability:.2g}). Add clients or expect to retry failed rounds.",
            stacklevel=3,
        )
    return GraphParameters(n - 1, best, fail, 0.0)


def choose_parameters(
    *,
    num_clients: int,
    dropout_rate: float = 0.1,
    corrupt_rate: float = 0.05,
    failure_probability: float = 2.0**-20,
    security_bits: int = 40,
    active: bool = False,
    full_graph: bool = False,
) -> GraphParameters:
    """The sparsest neighbour graph (and its threshold) meeting the stated targets."""
    _validate(num_clients, dropout_rate, corrupt_rate, failure_probability, security_bits)
    n = num_clients
    if full_graph or n <= 4:
        return _full_graph(n, dropout_rate, corrupt_rate, active, failure_probability)
    security_target = 2.0**-security_bits
    for k in range(2, n - 1, 2):  # Harary graphs H(k, n) need even k below n - 1
        m = k + 1
        for t in range(m // 2 + 1, m + 1):
            correctness = n * (1 - binomial_tail(m, 1 - dropout_rate, t))
            if correctness > failure_probability:
                break  # larger t only fails more often
            corrupt_needed = 2 * t - m if active else t
            security = n * binomial_tail(m, corrupt_rate, corrupt_needed)
            if security <= security_target:
                return GraphParameters(k, t, correctness, security)
    return _full_graph(n, dropout_rate, corrupt_rate, active, failure_probability)
