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
  P[Bin(m, corrupt) >= t] * n; with a malicious server that may lie about dropouts
  (``active=True``), the per-neighbourhood consistency quorum lets it collect both kinds of shares
  of a client only if 2t - m of that client's holders are corrupt, so the bound uses 2t - m;
* isolation: a client whose k neighbours are all corrupt is exposed whatever t is (its pairwise
  masks are all known to the coalition, and it reveals its own seed share when it survives), so
  n * corrupt^k is added to the failure probability. Without this term, dropout_rate=0 led to
  t = k + 1 with k far too small.

Both events are summed and compared with 2^-security_bits; a (k, t) over the target is never
returned. On the full graph the corrupt count is taken as a worst case, ceil(corrupt * n), not a
probability.

When no graph meets the correctness target (small federations), the full graph with the smallest
secure t is returned and a warning says how likely the round is to fail.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from secagg.errors import InvalidParameter

__all__ = ["GraphParameters", "binomial_tail", "choose_parameters", "security_failure"]


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
    sparse_graph: bool = False,
) -> GraphParameters:
    """The sparsest neighbour graph (and its threshold) meeting the stated targets.

    ``sparse_graph=True`` insists on a SecAgg+ graph even where none meets the correctness
    target (small federations): the security target is still met, and a warning says how likely
    a round is to fail from dropouts.
    """
    _validate(num_clients, dropout_rate, corrupt_rate, failure_probability, security_bits)
    n = num_clients
    if full_graph and sparse_graph:
        raise InvalidParameter("full_graph and sparse_graph are mutually exclusive")
    if sparse_graph:
        return _sparse_only(n, dropout_rate, corrupt_rate, active, failure_probability,
                            2.0**-security_bits)
    if full_graph or n <= 4:
        return _full_graph(n, dropout_rate, corrupt_rate, active, failure_probability)
    security_target = 2.0**-security_bits
    for k in range(2, n - 1, 2):  # Harary graphs H(k, n) need even k below n - 1
        m = k + 1
        isolation = n * corrupt_rate**k
        if isolation > security_target:
            continue
        for t in range(m // 2 + 1, m + 1):
            correctness = n * (1 - binomial_tail(m, 1 - dropout_rate, t))
            if correctness > failure_probability:
                break  # larger t only fails more often
            corrupt_needed = 2 * t - m if active else t
            security = n * binomial_tail(m, corrupt_rate, corrupt_needed) + isolation
            if security <= security_target:
                return GraphParameters(k, t, correctness, security)
    return _full_graph(n, dropout_rate, corrupt_rate, active, failure_probability)


def _sparse_only(n: int, dropout: float, corrupt: float, active: bool,
                 failure_probability: float, security_target: float) -> GraphParameters:
    best: GraphParameters | None = None
    for k in range(2, n - 1, 2):
        m = k + 1
        isolation = n * corrupt**k
        if isolation > security_target:
            continue
        for t in range(m // 2 + 1, m + 1):
            security = n * binomial_tail(m, corrupt, 2 * t - m if active else t) + isolation
            if security <= security_target:
                fail = n * (1 - binomial_tail(m, 1 - dropout, t))
                if fail <= failure_probability:
                    return GraphParameters(k, t, fail, security)
                if best is None or fail < best.correctness_failure:
                    best = GraphParameters(k, t, fail, security)
                break
    if best is None:
        raise InvalidParameter(f"no sparse graph over {n} clients meets the security target at "
                               f"corrupt_rate {corrupt}; use the full graph or add clients")
    warnings.warn(
        f"sparse graph k={best.neighbours}, t={best.threshold} over {n} clients: a round fails "
        f"from dropouts with probability up to {min(1.0, best.correctness_failure):.2g} at "
        f"dropout_rate {dropout} (target {failure_probability:.2g})", stacklevel=3)
    return best


def security_failure(*, num_clients: int, neighbours: int, threshold: int, corrupt_rate: float,
                     active: bool) -> float:
    """The failure probability :func:`choose_parameters` bounds, for a given (k, t).

    Sparse graphs: n * P[Bin(k+1, gamma) >= 2t - (k+1)] (t without a roster) + n * gamma^k.
    The full graph is judged by the worst-case corrupt count ceil(gamma * n): 0.0 when the
    threshold withstands it, 1.0 when it does not. Clients use it to refuse a server's (k, t)
    that is weaker than the roster's policy.
    """
    n, k, t = num_clients, neighbours, threshold
    m = k + 1
    need = 2 * t - m if active else t
    if k >= n - 1:
        return 0.0 if need > math.ceil(corrupt_rate * n) else 1.0
    return min(1.0, n * binomial_tail(m, corrupt_rate, need) + n * corrupt_rate**k)
