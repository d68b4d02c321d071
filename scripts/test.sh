#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh), then runs lint, type checks and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff"; .venv/bin/ruff check secagg clients server tests examples benchmarks scripts
echo "[test] mypy"; .venv/bin/mypy secagg clients server benchmarks
echo "[test] pytest"; .venv/bin/python -m pytest -q "$@"
