#!/usr/bin/env bash
# Sets up .venv with everything secagg needs, on a fresh machine or an existing one.
# torch goes in first, pinned to the CPU build: a bare `torch` requirement with nothing
# installed would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch 2.13.0 (CPU build)"
  "${PIP[@]}" install "torch==2.13.0"
fi
echo "[setup] installing secagg with its dev and bench extras"
"${PIP[@]}" install -e ".[dev,bench]"
.venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check; exit 1; }
echo "[setup] ready: .venv/bin/secagg --help"
