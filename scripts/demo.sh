#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh), then runs the smart-city demo on its embedded defaults:
# a real server and three enterprise processes, DP LoRA training, 2 masked rounds (a few minutes).
# Extra arguments go to `secagg demo` (e.g. --mode ckks, --json out.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/secagg demo "$@"
