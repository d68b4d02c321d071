"""The server side: a Flower workflow that aggregates training results with secagg's masking
protocol, for modern strategies (``FedAvg`` over ``ArrayRecord``) and the legacy ``DefaultWorkflow``.

Drop-in where Flower's ``SecAggPlusWorkflow`` goes (legacy strategies)::

    from secagg.integrations.flower import SecAggPlusWorkflow

    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow())
    workflow(grid, LegacyContext(context, config=ServerConfig(num_rounds=3), strategy=strategy))

and around the grid a modern strategy talks to::

    strategy.start(grid=SecAggPlusWorkflow().secure_grid(grid, context), initial_arrays=...)

The roster (public) comes from ``roster=`` or the run config key ``secagg-roster`` (a path). Every
round runs over the whole roster in active mode: members the strategy did not sample count as
dropouts. The graph degree and threshold come from the parameter finder (for the roster's size,
``dropout_rate`` and the roster's policy) unless ``num_shares`` (k + 1) and
``reconstruction_threshold`` (t) are given; both are then validated against the roster's policy
like any other round, so a weaker graph is refused rather than used.

A client named as the culprit of a round (``ProtocolAbort.culprit``: its own signed or committed
messages prove it broke the protocol, e.g. a dealer whose shares do not rebuild its committed
secret) ends that round and is left out of every later round this workflow runs: its node gets
no train message and a setup reply signed with its identity is refused (``exclude_culprits``).

What the strategy sees: one reply per surviving node, carrying that node's metrics and the
weighted mean of the survivors' models (so FedAvg's weighted average of them is that mean). The
server never holds an individual model.
"""

from __future__ import annotations

import logging
import os

from flwr.app import RecordDict
from flwr.serverapp import Grid

from secagg.encoding.paramspec import ParamSpec
from secagg.encoding.quantize import MAX_MOD_BITS
from secagg.errors import InvalidParameter, ProtocolAbort
from secagg.identity import Roster
from secagg.masking import MaskingConfig

from .driver import SecureRound, SecureRoundResult
from .secure_workflow import ROSTER_RUN_CONFIG_KEY, SecureGrid, SecureWorkflow, model_layout

__all__ = ["ROSTER_RUN_CONFIG_KEY", "SecAggPlusWorkflow", "SecureGrid"]

_log = logging.getLogger(__name__)


class SecAggPlusWorkflow(SecureWorkflow):
    """Secure aggregation of every training round with secagg's masking protocol.

    ``max_weight`` bounds a client's weight (its ``num-examples``; larger ones are capped by the
    client); ``clipping_range`` clips every model value to [-c, c] before quantisation, as in
    Flower's workflow; ``value_bits`` is the quantisation precision (by default the finest of at
    most 22 bits that cannot overflow for the roster's size and ``max_weight``). ``timeout``
    (seconds) bounds each stage's wait for replies (None: the strategy's, or Flower's default).
    ``exclude_culprits`` leaves a client named as a round's culprit out of later rounds (see
    the module); :attr:`excluded_clients` lists their roster ids.
    """

    def __init__(self, num_shares: int | None = None, reconstruction_threshold: int | None = None,
                 *, roster: Roster | str | os.PathLike[str] | None = None,
                 max_weight: int | float = 1000, clipping_range: float = 8.0,
                 value_bits: int | None = None, dropout_rate: float = 0.1,
                 timeout: float | None = None, exclude_culprits: bool = True) -> None:
        for name, value in (("num_shares", num_shares),
                            ("reconstruction_threshold", reconstruction_threshold)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidParameter(
                    f"{name} must be an int or None (let the parameter finder choose), found "
                    f"{value!r}; a proportion of the clients is not accepted")
        if isinstance(max_weight, float) and max_weight.is_integer():
            max_weight = int(max_weight)  # Flower's default is the float 1000.0
        if isinstance(max_weight, bool) or not isinstance(max_weight, int) or max_weight < 1:
            raise InvalidParameter(f"max_weight must be a whole number >= 1, found {max_weight!r}")
        super().__init__(roster=roster, timeout=timeout)
        self.max_weight: int = max_weight
        self.neighbours = None if num_shares is None else num_shares - 1
        self.threshold = reconstruction_threshold
        self.exclude_culprits = exclude_culprits
        #: roster ids named as the culprit of an earlier round (left out while exclude_culprits)
        self.excluded_clients: set[int] = set()
        self._excluded_nodes: set[int] = set()
        self.last_result: SecureRoundResult | None = None
        self.clipping_range = clipping_range
        self.value_bits = value_bits
        self.dropout_rate = dropout_rate

    # ---- the round ------------------------------------------------------------------------------

    def config_for(self, roster: Roster, layout: ParamSpec, *, server_round: int) -> MaskingConfig:
        """The round's config (fresh session nonce), validated against the roster's policy."""
        n = len(roster)
        value_bits = self.value_bits
        if value_bits is None:
            value_bits = min(22, MAX_MOD_BITS - (n * self.max_weight).bit_length())
            if value_bits < 8:
                raise InvalidParameter(
                    f"{n} clients of weight up to max_weight={self.max_weight} leave fewer than "
                    "8 bits per value in a 32-bit sum; lower max_weight")
        return MaskingConfig.create(
            num_clients=n, vector_length=layout.size, clip=self.clipping_range,
            value_bits=value_bits, max_weight=self.max_weight, dropout_rate=self.dropout_rate,
            roster=roster, neighbours=self.neighbours, threshold=self.threshold,
            round=server_round, layout=layout)

    def run_round(self, grid: Grid, contents: dict[int, RecordDict], *, roster: Roster,
                  server_round: int, timeout: float | None,
                  group_id: str = "") -> SecureRoundResult:
        """One secure round with the nodes of ``contents`` (node id -> the strategy's content,
        holding the global model as its one ArrayRecord)."""
        layout = model_layout(contents)
        if self.exclude_culprits:
            left_out = sorted(set(contents) & self._excluded_nodes)
            if left_out:
                _log.warning("secure round %d: leaving out node(s) %s, named as the culprit of "
                             "an earlier round", server_round, left_out)
            contents = {n: c for n, c in contents.items() if n not in self._excluded_nodes}
        config = self.config_for(roster, layout, server_round=server_round)
        remaining = len(roster) - len(self.excluded_clients)
        if self.exclude_culprits and remaining < config.threshold:
            raise ProtocolAbort("setup", f"clients {sorted(self.excluded_clients)} are left out "
                                f"as culprits of earlier rounds; the {remaining} remaining "
                                f"member(s) cannot reach the threshold {config.threshold}")
        secure = SecureRound(grid, config=config, roster=roster, layout=layout,
                             timeout=timeout,
                             excluded=frozenset(self.excluded_clients if self.exclude_culprits
                                                else ()))
        try:
            self.last_result = secure.run(contents, group_id=group_id)
            return self.last_result
        except ProtocolAbort as exc:
            if exc.culprit is not None and self.exclude_culprits:
                self.excluded_clients.add(exc.culprit)
                node = secure.node_of.get(exc.culprit)
                if node is not None:
                    self._excluded_nodes.add(node)
            raise
