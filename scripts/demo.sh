#!/usr/bin/env bash
# The CPU-mode demo: set up (idempotent), bring a 4-node simulated-provider cluster up, and run one
# workload of every kind through the whole path: a smoke test and a batch job (with the market's
# explanation of where it went), a 2-worker training job with checkpoints and a progress bar, an
# inference service called through its OpenAI-compatible endpoint, a gaming session near a player;
# then the tenant's bill, the providers' earnings and the audit chain; then the cluster goes down.
# A few minutes on a 2-core machine with the images built.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RUNNER_HOME="${RUNNER_HOME:-$HOME/.runner}"
runner=.venv/bin/runner
py=.venv/bin/python
section() { printf '\n\033[1m== %s ==\033[0m\n' "$*"; }
last_id() { $runner ls --json | $py -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])'; }

$runner down >/dev/null 2>&1 || true
trap '$runner down' EXIT
$runner up --cpu
$runner nodes

section "smoke workload (logs follow)"
$runner submit examples/smoke.yaml --follow

section "batch job on a simulated GPU node, and why it went there"
$runner submit examples/batch.yaml --wait
$runner explain "$(last_id)"

section "training: 2 workers on 2 providers, checkpoints every 50 steps, rank 0's progress"
$runner submit examples/training.yaml --follow
train=$(last_id)
$runner status "$train"
$runner artifacts ls "$train"

section "inference service: 2 replicas on distinct providers behind one endpoint"
$runner submit examples/inference.yaml
service=$(last_id)
endpoint=$($runner endpoint "$service" --wait | tail -n 1)
RUNNER_ENDPOINT="$endpoint" $py - <<'PY'
import os
from openai import OpenAI  # the official client, unchanged; the key is the tenant's runner API key

client = OpenAI(base_url=os.environ["RUNNER_ENDPOINT"],
                api_key=open(os.path.join(os.environ["RUNNER_HOME"], "api-key")).read().strip())
out = client.embeddings.create(model="all-MiniLM-L6-v2", input=["a GPU near you", "rented by the second"])
print(f"{len(out.data)} embeddings of {len(out.data[0].embedding)} floats from {os.environ['RUNNER_ENDPOINT']}")
PY
$runner status "$service"
$runner cancel "$service"

section "gaming session near a player in ap-northeast"
url=$($runner session start --game breakout --near ap-northeast | tail -n 1)
echo "player URL: $url"
$py -c "import httpx, sys; r = httpx.get(sys.argv[1] + 'healthz', timeout=10); print('healthz:', r.status_code)" "$url"
$runner session ls
$runner session end "$(last_id)"

section "money: the tenant's bill, the providers' earnings; the audit chain"
$runner bill
$runner earnings
$runner admin audit verify
$runner ls
