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
echo "[setup] installing secagg with its dev, bench and flower extras (Flower with Ray)"
"${PIP[@]}" install -e ".[dev,bench,flower]"
# benchmarks/ and examples/ are applications of this checkout, never installed. They are imported
# as secagg_benchmarks and secagg_examples (opacus installs top-level packages named benchmarks
# and examples): links to them in .venv, on its path through a .pth file, let `secagg bench` and
# `secagg demo` (secagg.commands entry points in pyproject.toml) and the tests find them.
APPS=.venv/secagg-source-checkout
mkdir -p "$APPS"
ln -sfn "$PWD/benchmarks" "$APPS/secagg_benchmarks"
ln -sfn "$PWD/examples" "$APPS/secagg_examples"
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$PWD/$APPS" > "$SITE/secagg_source_checkout.pth"
.venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check; exit 1; }
echo "[setup] ready: .venv/bin/secagg --help"
