#!/usr/bin/env bash
# The new-data story, end to end: new products arrive -> `dvc commit` -> the Dagster daemon's
# dvc_data_sensor starts catalogue_refresh -> the champion embeds only the new items (no training)
# -> CURRENT moves -> the running `ampere serve` finds a new product -> `ampere audit <index>`.
# Prints the freshness: seconds from `dvc commit` to the first /search that returns a new item.
# Run after scripts/run_main.sh. ADD products (default 10) with SEED (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" DAGSTER_HOME="$PWD/dagster_home" HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=false
ADD=${ADD:-10}
SEED=${SEED:-1}
PORT=${PORT:-3000}
SERVE_PORT=${SERVE_PORT:-8000}
mkdir -p workspace

echo "== starting dagster dev (webserver + daemon) on 127.0.0.1:$PORT and ampere serve on 127.0.0.1:$SERVE_PORT"
set -m
dagster dev -h 127.0.0.1 -p "$PORT" >workspace/dagster_dev.log 2>&1 &
DAGSTER_PID=$!
ampere serve --port "$SERVE_PORT" >workspace/serve.log 2>&1 &
SERVE_PID=$!
trap 'kill -TERM -- -$SERVE_PID -$DAGSTER_PID 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 180); do
  curl -sf "http://127.0.0.1:$PORT/server_info" >/dev/null && curl -sf "http://127.0.0.1:$SERVE_PORT/health" >/dev/null && break
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/server_info" >/dev/null || { echo "dagster dev did not start"; tail -50 workspace/dagster_dev.log; exit 1; }
curl -sf "http://127.0.0.1:$SERVE_PORT/health" >/dev/null || { echo "ampere serve did not start"; tail -50 workspace/serve.log; exit 1; }

echo "== before: $(ampere status)"
echo "== adding $ADD products (seed $SEED) to data/ and recording the new DVC version"
ampere data synth --add --products "$ADD" --seed "$SEED" --out data
NEW=$(tail -n 1 data/items.jsonl | python -c 'import json,sys;print(json.load(sys.stdin)["item_id"])')
COMMITTED=$(date +%s.%N)
dvc commit -f -q data.dvc
git commit -q -m "data: $ADD new products" data.dvc 2>/dev/null || true  # the audit checks data.dvc at the recorded revision
MD5=$(python -c 'import yaml;print(yaml.safe_load(open("data.dvc"))["outs"][0]["md5"])')
echo "new data version: $MD5 — waiting for /search to find $NEW (dvc_data_sensor looks every 30 s)"
until curl -sf -X POST -H 'content-type: application/json' -d "{\"item_id\": \"$NEW\", \"k\": 1}" \
    "http://127.0.0.1:$SERVE_PORT/search" >/dev/null; do
  if (( $(date +%s) - ${COMMITTED%.*} > 1800 )); then echo "not searchable within 1800 s"; exit 1; fi
  sleep 1
done
FOUND=$(date +%s.%N)
python -c "print(f'freshness: {$FOUND - $COMMITTED:.1f} s from dvc commit to the first /search that returns $NEW')"
dvc push -q data.dvc

echo "== after: $(ampere status)"
ampere index history | tail -2
ampere audit "$(ampere index current)"
