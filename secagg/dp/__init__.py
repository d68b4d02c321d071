"""Differential privacy: sample-level accounting, distributed noise, client-level accounting.

* :mod:`secagg.dp.accounting` -- epsilon and noise calibration for DP-SGD (Opacus RDP / PRV).
* :mod:`secagg.dp.distributed` -- each client's Skellam noise share, added after quantisation and
  before masking, and its removal after unmasking.
* :mod:`secagg.dp.client_level` -- the client-level epsilon of the released sum.
* :mod:`secagg.dp.csprng` -- samplers fed by an AES-CTR keystream (no numpy/torch RNG for noise).
* :mod:`secagg.dp.ledger` -- an enterprise's durable privacy ledger (its budget and every round's
  spend), kept by the client and read by ``secagg privacy ledger``.

Importing this package does not import torch; the Opacus accountants are loaded on first use.
"""

from secagg.dp.accounting import (
    Accountant,
    GaussianSteps,
    PrivacySpend,
    epsilon,
    epsilon_of_history,
    noise_for_remaining_rounds,
    noise_multiplier,
)
from secagg.dp.client_level import client_level_epsilon, skellam_rdp
from secagg.dp.distributed import (
    DistributedNoise,
    add_noise_share,
    noisy_sum_to_float,
    remove_noise_offset,
)

__all__ = [
    "Accountant",
    "DistributedNoise",
    "GaussianSteps",
    "PrivacySpend",
    "add_noise_share",
    "client_level_epsilon",
    "epsilon",
    "epsilon_of_history",
    "noise_for_remaining_rounds",
    "noise_multiplier",
    "noisy_sum_to_float",
    "remove_noise_offset",
    "skellam_rdp",
]
