"""Secure aggregation by pairwise masking: SecAgg (Bonawitz et al. 2017) and SecAgg+ (Bell et al.
2020) as sans-IO state machines.

Typical use (the server and client run these same objects under any transport)::

    config = MaskingConfig.create(num_clients=n, vector_length=len(update))
    client = ClientSession(config, client_id, encode_update(config, update, weight=w))
    server = ServerSession(config)
    ...  # client.start() / server.receive() / server.advance() / client.handle()
    server.result.mean()
"""

from secagg.masking.client import ClientSession
from secagg.masking.config import MaskingConfig, Stage
from secagg.masking.params import GraphParameters, choose_parameters
from secagg.masking.server import ServerSession
from secagg.masking.simulate import DROP_STAGES, SimulationResult, plan_dropouts, simulate_round
from secagg.masking.update import Aggregate, client_value_bound, encode_update

__all__ = [
    "DROP_STAGES",
    "Aggregate",
    "ClientSession",
    "GraphParameters",
    "MaskingConfig",
    "ServerSession",
    "SimulationResult",
    "Stage",
    "choose_parameters",
    "client_value_bound",
    "encode_update",
    "plan_dropouts",
    "simulate_round",
]
