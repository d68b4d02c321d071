"""The server side of threshold CKKS in Flower: a workflow whose every training round is
aggregated under encryption, and decrypted only as a sum that enough enterprises vouched for.

For modern strategies (``FedAvg`` over ``ArrayRecord``)::

    from secagg.integrations.flower import ThresholdCKKSWorkflow

    strategy.start(grid=ThresholdCKKSWorkflow().secure_grid(grid, context), initial_arrays=...)

and as the legacy ``DefaultWorkflow``'s ``fit_workflow``. The clients run
:data:`~secagg.integrations.flower.threshold_ckks_mod`.

Each round is one :class:`~secagg.ckks.threshold.session.ThresholdRoundConfig` over the whole
pinned roster (members the strategy did not sample count as dropouts): every enterprise draws a
fresh CKKS secret, deals it t-out-of-n to the others in sealed, roster-signed envelopes this
server relays but cannot open, uploads its weighted model encrypted under its own secret, signs
a statement naming the sum it agrees to decrypt, and sends a smudged partial decryption of that
sum only. The corrupt count, the statement quorum and the least number of uploaders come from
the roster's policy. ``value_bound`` clips every model value (as Flower's ``clipping_range``);
``weight_bound`` caps a client's weight (its ``num-examples``); ``target_error`` is the
worst-case error of each released coordinate relative to the sum's range
``n * weight_bound * max(value_bound, 1)``.

Unlike the masking workflow this one names no culprits: a threshold round ends without release
when an enterprise breaks the protocol, but the protocol does not prove which one (no
verifiable partial decryptions), so nobody is left out of later rounds.
"""

from __future__ import annotations

import os
import secrets

from flwr.app import RecordDict
from flwr.serverapp import Grid

from secagg.encoding.paramspec import ParamSpec
from secagg.errors import InvalidParameter
from secagg.identity import Roster

from .ckks_driver import ThresholdRound, ThresholdRoundResult
from .secure_workflow import SecureWorkflow, model_layout

__all__ = ["ThresholdCKKSWorkflow"]


class ThresholdCKKSWorkflow(SecureWorkflow):
    """Secure aggregation of every training round with secagg's threshold CKKS (see the module).

    ``threshold``: partial decryptions a release needs (default: a majority, the least any
    enterprise accepts). ``timeout`` (seconds) bounds each stage's wait for replies (None: the
    strategy's, or Flower's default).
    """

    def __init__(self, *, roster: Roster | str | os.PathLike[str] | None = None,
                 value_bound: float = 8.0, weight_bound: int | float = 1000,
                 threshold: int | None = None, target_error: float | None = None,
                 timeout: float | None = None) -> None:
        if isinstance(weight_bound, float) and weight_bound.is_integer():
            weight_bound = int(weight_bound)
        if isinstance(weight_bound, bool) or not isinstance(weight_bound, int) \
                or weight_bound < 1:
            raise InvalidParameter(f"weight_bound must be a whole number >= 1 (the largest "
                                   f"num-examples a client counts with), found {weight_bound!r}")
        if threshold is not None and (isinstance(threshold, bool)
                                      or not isinstance(threshold, int)):
            raise InvalidParameter(f"threshold must be an int or None, found {threshold!r}")
        super().__init__(roster=roster, timeout=timeout)
        self.value_bound = float(value_bound)
        self.weight_bound: int = weight_bound
        self.threshold = threshold
        self.target_error = target_error
        self.last_result: ThresholdRoundResult | None = None

    def config_for(self, roster: Roster, layout: ParamSpec, *, server_round: int) -> object:
        """The round's :class:`~secagg.ckks.threshold.session.ThresholdRoundConfig` (fresh
        session nonce), planned and validated against the roster's policy."""
        from secagg.ckks.threshold.session import ThresholdRoundConfig

        extra: dict[str, object] = {}
        if self.threshold is not None:
            extra["threshold"] = self.threshold
        if self.target_error is not None:
            extra["target_error"] = self.target_error
        return ThresholdRoundConfig.for_roster(
            roster, round=server_round, vector_length=layout.size,
            session=secrets.token_bytes(32), value_bound=self.value_bound,
            weight_bound=float(self.weight_bound), layout_digest=layout.digest(), **extra)

    def run_round(self, grid: Grid, contents: dict[int, RecordDict], *, roster: Roster,
                  server_round: int, timeout: float | None,
                  group_id: str = "") -> ThresholdRoundResult:
        """One threshold round with the nodes of ``contents`` (node id -> the strategy's content,
        holding the global model as its one ArrayRecord)."""
        from secagg.ckks.threshold.session import ThresholdRoundConfig

        layout = model_layout(contents)
        config = self.config_for(roster, layout, server_round=server_round)
        assert isinstance(config, ThresholdRoundConfig)
        secure = ThresholdRound(grid, config=config, roster=roster, layout=layout,
                                timeout=timeout)
        self.last_result = secure.run(contents, group_id=group_id)
        return self.last_result
