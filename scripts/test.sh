#!/usr/bin/env bash
# The test command: set up (idempotent), then every test: unit tests of the pure core and
# integration tests on a real CPU-mode cluster (Ray nodes, Docker containers, the server), after
# the lint and the format check (ruff, configured in pyproject.toml; `ruff format` fixes the latter).
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check --quiet . || { echo "test: ruff check found the problems above" >&2; exit 1; }
.venv/bin/ruff format --check --quiet . || { echo "test: not formatted (the files above): run .venv/bin/ruff format" >&2; exit 1; }
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
