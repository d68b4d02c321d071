"""The enterprise side: multimodal DP-LoRA fine-tuning (peft + Opacus), update exchange, enrolment.

Installed as ``secagg_clients`` (the repository folder is ``clients/``). Heavy libraries (torch,
peft, transformers, opacus) load when a name is first used, so importing ``secagg_clients`` is
cheap. It imports :mod:`secagg` and never the server side; :mod:`secagg` never imports it
(``tests/test_layers.py`` checks every import). The privacy ledger it keeps is
:mod:`secagg.dp.ledger`, so ``secagg privacy ledger`` reads it without this package.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ENTERPRISES",
    "LABELS",
    "BudgetExceeded",
    "DPConfig",
    "EncoderKind",
    "EnterpriseClient",
    "NoiseMode",
    "PrivacyLedger",
    "Record",
    "RoundUpdate",
    "apply_aggregate",
    "build_model",
    "evaluate",
    "extract_update",
    "load_enterprise",
    "load_records",
    "load_tokenizer",
    "make_dataset",
    "split_records",
    "train_private",
    "trainable_spec",
]

_WHERE = {
    "ENTERPRISES": ".data", "LABELS": ".data", "Record": ".data",
    "load_enterprise": ".data", "load_records": ".data",
    "split_records": ".data",
    "BudgetExceeded": "secagg.dp.ledger", "PrivacyLedger": "secagg.dp.ledger",
    "EncoderKind": ".model", "build_model": ".model",
    "load_tokenizer": ".model", "make_dataset": ".model",
    "DPConfig": ".trainer", "NoiseMode": ".trainer", "evaluate": ".trainer",
    "train_private": ".trainer",
    "EnterpriseClient": ".client", "RoundUpdate": ".client",
    "apply_aggregate": ".updates", "extract_update": ".updates",
    "trainable_spec": ".updates",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
