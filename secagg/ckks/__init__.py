"""CKKS aggregation: presets with the 128-bit check, a client-only key ceremony, compact
ciphertexts, a server-side sum from public material only, and safe (rounded) release.

``import secagg`` does not import this package (it loads TenSEAL). Typical round::

    config = CKKSRoundConfig(params=Preset.COMPACT.params, update_size=spec.size,
                             client_ids=(1, 2, 3), dealer=1, min_clients=2, round=0,
                             session=secrets.token_bytes(32))
    server = CKKSServer(config); clients = {i: CKKSClient(config, i) for i in config.client_ids}

then adverts -> ``server.key_request()`` -> ``dealer.deal`` -> ``server.key_delivery(i)`` ->
``client.receive_key`` -> ``client.encrypt_update`` -> ``server.receive_upload`` ->
``server.aggregate()`` -> ``client.decrypt_aggregate``; see ``secagg.ckks.simulate``.
"""

from secagg.ckks.client import CKKSClient, ClientStage
from secagg.ckks.config import CKKSRoundConfig
from secagg.ckks.keys import CKKSKey
from secagg.ckks.layout import Layout
from secagg.ckks.presets import HE_STANDARD_128_MAX_LOGQ, CKKSParams, Preset
from secagg.ckks.release import Release
from secagg.ckks.server import CKKSServer, ServerStage

__all__ = [
    "HE_STANDARD_128_MAX_LOGQ",
    "CKKSClient",
    "CKKSKey",
    "CKKSParams",
    "CKKSRoundConfig",
    "CKKSServer",
    "ClientStage",
    "Layout",
    "Preset",
    "Release",
    "ServerStage",
]
