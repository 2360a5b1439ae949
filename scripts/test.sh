#!/usr/bin/env bash
# README command 2: install everything from nothing into .venv, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=false
# pytest-randomly shuffles the order on every run (it prints its seed; `--randomly-seed=N` repeats an order)
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
