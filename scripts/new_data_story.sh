#!/usr/bin/env bash
# The new-data story, end to end: new products arrive -> `dvc commit` -> the Dagster daemon's
# dvc_data_sensor requests a run -> a challenger trains -> promotion decides -> the served index
# is swapped only if the challenger won -> `ampere audit champion` shows the new chain.
# Run after scripts/run_main.sh. ADD products (default 10) with SEED (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" DAGSTER_HOME="$PWD/dagster_home" HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=false
ADD=${ADD:-10}
SEED=${SEED:-1}
PORT=${PORT:-3000}
mkdir -p workspace

echo "== starting dagster dev (webserver + daemon) on 127.0.0.1:$PORT"
set -m
dagster dev -h 127.0.0.1 -p "$PORT" >workspace/dagster_dev.log 2>&1 &
DAGSTER_PID=$!
trap 'kill -TERM -- -$DAGSTER_PID 2>/dev/null || true; wait $DAGSTER_PID 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PORT/server_info" >/dev/null && break
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/server_info" >/dev/null || { echo "dagster dev did not start"; tail -50 workspace/dagster_dev.log; exit 1; }

echo "== before: $(ampere status)"
echo "== adding $ADD products (seed $SEED) to data/ and recording the new DVC version"
ampere data synth --add --products "$ADD" --seed "$SEED" --out data
dvc commit -f -q data.dvc
dvc push -q data.dvc
MD5=$(python -c 'import yaml;print(yaml.safe_load(open("data.dvc"))["outs"][0]["md5"])')
echo "new data version: $MD5 — waiting for dvc_data_sensor to request a run (every 30 s) and for it to finish"
ampere wait-run --tag "ampere/data_version=$MD5" --timeout 1800

echo "== after: $(ampere status)"
ampere index history | tail -3
ampere audit champion
