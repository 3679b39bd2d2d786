#!/usr/bin/env bash
# The CPU-mode demo: set up (idempotent), bring a 4-node simulated-provider cluster up, run the
# smoke workload (logs streamed) and a batch job placed by GPU model and region, show what
# happened, and bring the cluster down again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RUNNER_HOME="${RUNNER_HOME:-$HOME/.runner}"
runner=.venv/bin/runner

$runner down >/dev/null 2>&1 || true
trap '$runner down' EXIT
$runner up --cpu
$runner nodes
echo; echo "== smoke workload (logs follow) =="
$runner submit examples/smoke.yaml --follow
echo; echo "== batch job on a simulated GPU node =="
$runner submit examples/batch.yaml --wait
echo
$runner ls
last=$($runner ls --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
$runner status "$last"
