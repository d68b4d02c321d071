#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh), then runs the main demo on its embedded defaults:
# one secure-aggregation round with 20 clients, a fifth of them dropping at random stages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/secagg simulate masking --clients 20 --params 200000 --dropout 0.2 --stage random --seed 1 "$@"
