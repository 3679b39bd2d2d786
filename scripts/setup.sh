#!/usr/bin/env bash
# Set up a fresh machine for runner, idempotently: the Docker engine (Debian's docker.io, started
# if it does not answer), debootstrap for offline base images, a venv with runner and its test
# extras, and the workload images (cached by content hash, so a second run takes a second).
#
# RUNNER_REQUIRE_DOCKER=1 makes a Docker engine that will not start an error; otherwise runner
# falls back to the process runtime and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the gaming tests' browser
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)  # the store's PostgreSQL tests
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

docker_up() { docker info >/dev/null 2>&1; }
if ! docker_up; then
  echo "setup: starting dockerd"
  as_root sh -c 'nohup dockerd >/var/log/runner-dockerd.log 2>&1 &'
  for _ in $(seq 1 120); do docker_up && break; sleep 0.5; done
fi
if ! docker_up; then
  if [ "${RUNNER_REQUIRE_DOCKER:-0}" = 1 ]; then
    echo "setup: RUNNER_REQUIRE_DOCKER=1 but the Docker engine did not start (see /var/log/runner-dockerd.log)" >&2
    exit 1
  fi
  echo "setup: no Docker engine; runner will run workloads as host processes" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
echo "setup: installing runner into .venv"
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,gaming,inference,s3]'

if docker_up; then
  echo "setup: building images (cached when unchanged)"
  .venv/bin/runner images build
fi
