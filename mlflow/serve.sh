#!/usr/bin/env bash
# Serves the project's MLflow tracking store (sqlite) and artifacts on 127.0.0.1:5000.
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec .venv/bin/mlflow server --host 127.0.0.1 --port "${PORT:-5000}" --workers 1 \
  --backend-store-uri "sqlite:///$PWD/mlflow/mlflow.db" --default-artifact-root "$PWD/mlflow/artifacts"
