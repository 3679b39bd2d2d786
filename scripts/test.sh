#!/usr/bin/env bash
# The test command: set up (idempotent), then every test: unit tests of the pure core and
# integration tests on a real CPU-mode cluster (Ray nodes, Docker containers, the server).
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
