"""The enterprise side: multimodal DP-LoRA fine-tuning (peft + Opacus), update exchange, ledger.

Heavy libraries (torch, peft, transformers, opacus) load when a name is first used, so importing
``clients`` is cheap. ``secagg`` never imports this package.
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
    "ENTERPRISES": "clients.data", "LABELS": "clients.data", "Record": "clients.data",
    "load_enterprise": "clients.data", "load_records": "clients.data",
    "split_records": "clients.data",
    "BudgetExceeded": "clients.ledger", "PrivacyLedger": "clients.ledger",
    "EncoderKind": "clients.model", "build_model": "clients.model",
    "load_tokenizer": "clients.model", "make_dataset": "clients.model",
    "DPConfig": "clients.trainer", "NoiseMode": "clients.trainer", "evaluate": "clients.trainer",
    "train_private": "clients.trainer",
    "EnterpriseClient": "clients.client", "RoundUpdate": "clients.client",
    "apply_aggregate": "clients.updates", "extract_update": "clients.updates",
    "trainable_spec": "clients.updates",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'clients' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
