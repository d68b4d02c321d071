#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh), then runs lint, type checks and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Chromium renders the audit report headless (tests/audit/test_screenshot.py); only when missing,
# and only for the tests (the demo does not need it).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing chromium (headless rendering of the audit report)"
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      --no-install-recommends chromium; } >/dev/null 2>&1 \
    || echo "[test] chromium not installed (apt-get failed); the screenshot test will skip"
fi
echo "[test] ruff"; .venv/bin/ruff check secagg clients server tests examples benchmarks scripts
echo "[test] mypy"; .venv/bin/mypy secagg clients server benchmarks
echo "[test] pytest"; .venv/bin/python -m pytest -q "$@"
