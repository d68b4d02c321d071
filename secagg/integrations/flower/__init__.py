"""secagg inside Flower (1.41+, Message API): a client mod and a server workflow running secagg's
masking protocol (active mode, pinned roster) where Flower's SecAgg+ runs.

Switching from Flower's own SecAgg+ is two imports::

    -from flwr.client.mod import secaggplus_mod
    -from flwr.server.workflow import SecAggPlusWorkflow
    +from secagg.integrations.flower import secaggplus_mod
    +from secagg.integrations.flower import SecAggPlusWorkflow

Clients find their identity and roster in the SuperNode's ``node_config``
(:mod:`.credentials`); the server finds the roster in ``roster=`` or the run config. Modern
strategies use :meth:`SecAggPlusWorkflow.secure_grid`; the legacy ``DefaultWorkflow`` takes the
workflow as its ``fit_workflow``.

Threshold CKKS (no key holder at all: every update is encrypted, and only a sum that a quorum of
enterprises signed is decrypted, by at least t of them) is the other pair,
:class:`ThresholdCKKSWorkflow` and :data:`threshold_ckks_mod`, used the same way.

Needs the ``flower`` extra: ``pip install 'secagg[flower]'``.
"""

from secagg.integrations.flower.ckks_driver import ThresholdRound, ThresholdRoundResult
from secagg.integrations.flower.ckks_mod import ThresholdCKKSMod, threshold_ckks_mod
from secagg.integrations.flower.ckks_workflow import ThresholdCKKSWorkflow
from secagg.integrations.flower.credentials import (
    Credentials,
    CredentialsSource,
    credentials_from_node_config,
)
from secagg.integrations.flower.driver import SecureRound, SecureRoundResult
from secagg.integrations.flower.mod import SecAggPlusMod, secaggplus_mod
from secagg.integrations.flower.workflow import SecAggPlusWorkflow, SecureGrid

__all__ = [
    "Credentials",
    "CredentialsSource",
    "SecAggPlusMod",
    "SecAggPlusWorkflow",
    "SecureGrid",
    "SecureRound",
    "SecureRoundResult",
    "ThresholdCKKSMod",
    "ThresholdCKKSWorkflow",
    "ThresholdRound",
    "ThresholdRoundResult",
    "credentials_from_node_config",
    "secaggplus_mod",
    "threshold_ckks_mod",
]
