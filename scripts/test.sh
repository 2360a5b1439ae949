#!/usr/bin/env bash
# README command 2: install everything from nothing into .venv, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=false
# Tests run in a random order (pytest-randomly); SEED=N repeats an order.
seed=${SEED:-$RANDOM}
echo "test order: --randomly-seed=$seed"
.venv/bin/python -m pytest -q -p no:cacheprovider -p randomly --randomly-seed="$seed" "$@"
