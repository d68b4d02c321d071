"""Shared output helpers for commands: JSON reports and small text tables."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["flatten_keys", "print_table", "write_json"]


def flatten_keys(report: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: the dotted names the benchmark contracts use."""
    flat: dict[str, Any] = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_keys(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: str | Path, report: Mapping[str, Any]) -> None:
    """Write ``report`` nested, plus every nested key again under its flat dotted name.

    Tools can read ``report["flower"]["client_ms"]`` or ``report["flower.client_ms"]``.
    """
    out = dict(_clean(report))
    for key, value in flatten_keys(report).items():
        if "." in key:
            out[key] = _clean(value)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2, sort_keys=False) + "\n")


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> None:
    """Print an aligned plain-text table."""
    text = [[str(c) for c in r] for r in ([header] if header else []) + [list(r) for r in rows]]
    if not text:
        return
    widths = [max(len(r[i]) for r in text if i < len(r)) for i in range(len(text[0]))]
    for n, row in enumerate(text):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
        if header and n == 0:
            print("  ".join("-" * w for w in widths))
