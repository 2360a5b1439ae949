#!/usr/bin/env bash
# README command 2: install everything from nothing into .venv, build the documentation site, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The documentation site (docs/, mkdocs.yml) must build with --strict: broken links, a reference page the
# generator cannot produce or a docstring mkdocstrings cannot read fail here. Built into a temporary folder.
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true .venv/bin/mkdocs build --strict --quiet --site-dir "$site"
# Servers the tests start on 127.0.0.1, from Debian's packages: chromium (the page test drives it
# through the DevTools protocol) and PostgreSQL (the MLflow and Dagster stores; tests run initdb + pg_ctl).
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi
export HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=false
# Tests run in a random order (pytest-randomly); SEED=N repeats an order.
seed=${SEED:-$RANDOM}
echo "test order: --randomly-seed=$seed"
.venv/bin/python -m pytest -q -p no:cacheprovider -p randomly --randomly-seed="$seed" "$@"
