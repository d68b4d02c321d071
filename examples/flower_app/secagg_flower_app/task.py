"""The model both apps share: the enterprise client's trainable parameters (LoRA adapters, sensor
projection and head) as a Flower ArrayRecord, and one enterprise per SuperNode.

The training stack (secagg_clients: torch, transformers, opacus) is imported only where it is
used: the deployment engine runs every message in a fresh ClientApp process, and the protocol
messages after the first need none of it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context

from secagg.encoding import ParamSpec
from secagg.identity import Identity, Roster
from secagg.integrations.flower import Credentials, credentials_from_node_config


def to_arrays(vector: np.ndarray, spec: ParamSpec) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(arr))
                        for name, arr in spec.unflatten(vector).items()})


def from_arrays(record: ArrayRecord, spec: ParamSpec) -> np.ndarray:
    return spec.flatten({name: array.numpy() for name, array in record.items()})


def initial_arrays(run_config: dict[str, Any]) -> ArrayRecord:
    """The common starting model every enterprise also builds (same seed)."""
    from secagg_clients.model import build_model
    from secagg_clients.updates import get_trainable_vector, trainable_spec

    model = build_model(encoder=str(run_config["encoder"]), lora_rank=int(run_config["lora-rank"]),
                        seed=0)
    spec = trainable_spec(model)
    return to_arrays(get_trainable_vector(model, spec), spec)


@lru_cache(maxsize=8)
def enterprise(partition: int, encoder: str, lora_rank: int, state_dir: str,
               budget: float) -> tuple[Any, list[Any]]:
    """This SuperNode's enterprise (one of the three shipped datasets) as an
    :class:`~secagg_clients.client.EnterpriseClient` (model and privacy ledger), and its test
    records."""
    from secagg.dp.ledger import PrivacyLedger
    from secagg_clients.client import EnterpriseClient
    from secagg_clients.data import ENTERPRISES, enterprise_path, load_records, split_records

    name = ENTERPRISES[partition % len(ENTERPRISES)]
    train, test = split_records(load_records(enterprise_path(name)))
    ledger = PrivacyLedger.open(Path(state_dir) / f"{name}.ledger.json", enterprise=name,
                                budget_epsilon=budget, delta=1e-5)
    return EnterpriseClient.create(train, ledger=ledger, encoder=encoder, lora_rank=lora_rank,
                                   seed=0), test


def client_check_dir(context: Context) -> str:
    """Where this enterprise writes its plaintext record for the check (empty: nowhere). The
    SuperNode's own node_config decides it in a deployment, so the server cannot make an
    enterprise write its model anywhere; a one-machine simulation, where every virtual SuperNode
    shares one node config, takes the run config's."""
    if "secagg-identity" in context.node_config:
        return str(context.node_config.get("check-dir", ""))
    return str(context.run_config.get("check-dir", ""))


def credentials(context: Context) -> Credentials:
    """The SuperNode's node_config (deployment); in a one-machine simulation, where every
    virtual SuperNode shares the node config, ``id-<partition>.json`` in the run's keys-dir."""
    if "secagg-identity" in context.node_config:
        return credentials_from_node_config(context)
    base = Path(str(context.run_config["keys-dir"]))
    partition = int(context.node_config["partition-id"])
    return Credentials(Identity.load(base / f"id-{partition}.json"),
                       Roster.load(base / "roster.json"))
