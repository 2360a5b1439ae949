#!/usr/bin/env bash
# README command 2: install everything from nothing into .venv, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The page test drives Debian's chromium through the DevTools protocol (no browser download).
if ! command -v chromium >/dev/null; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium
fi
export HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=false
# Tests run in a random order (pytest-randomly); SEED=N repeats an order.
seed=${SEED:-$RANDOM}
echo "test order: --randomly-seed=$seed"
.venv/bin/python -m pytest -q -p no:cacheprovider -p randomly --randomly-seed="$seed" "$@"
