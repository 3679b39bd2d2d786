#!/usr/bin/env bash
# Set up a fresh machine for runner, idempotently: the Docker engine (Debian's docker.io, started
# if it does not answer), debootstrap for offline base images, a venv with runner and its test
# extras, and the workload images (cached by content hash, so a second run takes seconds).
#
# Output: one line per step with its time. The full output of every step (apt, pip, debootstrap,
# each `docker build`) goes to ${RUNNER_CACHE:-~/.cache/runner}/setup.log, rewritten on each run;
# a step that fails prints the log's last 30 lines and its path, and setup exits non-zero.
# `scripts/setup.sh --verbose` (or RUNNER_VERBOSE=1) streams all of it here instead. On a
# terminal a step shows a spinner and its seconds so far; elsewhere (CI) plain lines only.
#
# RUNNER_NO_SKIP=1 (CI's switch: every test must run) makes a Docker engine that will not start
# an error; otherwise runner falls back to the process runtime and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

verbose=${RUNNER_VERBOSE:-0}
for arg in "$@"; do
  case $arg in
    -v | --verbose) verbose=1 ;;
    *) echo "usage: scripts/setup.sh [--verbose]   (or RUNNER_VERBOSE=1)" >&2; exit 2 ;;
  esac
done
case $verbose in 1 | true | yes | on) verbose=1 ;; *) verbose=0 ;; esac

cache=${RUNNER_CACHE:-$HOME/.cache/runner}
mkdir -p "$cache"
log=$cache/setup.log
: >"$log"
# The spinner only where someone watches: on a terminal, never in CI logs or pipes.
live=0
if [ "$verbose" = 0 ] && [ -t 1 ] && [ "${TERM:-dumb}" != dumb ]; then live=1; fi
if [ "$verbose" = 1 ]; then
  echo "setup: streaming everything (also written to $log)"
else
  echo "setup: full output in $log (--verbose or RUNNER_VERBOSE=1 shows it here)"
fi

spinner=
stop_spinner() {
  if [ -n "$spinner" ]; then
    kill "$spinner" 2>/dev/null || true
    wait "$spinner" 2>/dev/null || true
    spinner=
    printf '\r\033[K'
  fi
}
trap stop_spinner EXIT
trap 'stop_spinner; exit 130' INT TERM

# A spinner and the seconds so far, rewriting one line; it ends with setup ($$) at the latest.
spin() {
  local msg=$1 start=$2 i=0 frames='|/-\'
  while kill -0 $$ 2>/dev/null; do
    printf '\r%s setup: %s ... %d s' "${frames:i++%4:1}" "$msg" $((SECONDS - start))
    sleep 0.25
  done
}

# step [--soft] MESSAGE COMMAND...: run COMMAND with its output in the log and one line here.
# A failure shows the log's tail and exits, or with --soft only says so and goes on. COMMAND
# runs where `set -e` does not apply (bash ignores it under `||`), so step functions chain
# their commands with && themselves.
step() {
  local soft=0
  if [ "$1" = --soft ]; then soft=1; shift; fi
  local msg=$1 start=$SECONDS rc=0
  shift
  printf '\n== setup: %s (%s)\n' "$msg" "$(date '+%F %T')" >>"$log"
  if [ "$verbose" = 1 ]; then
    echo "setup: $msg"
    "$@" 2>&1 </dev/null | tee -a "$log" || rc=$?
    if [ "$rc" = 0 ]; then echo "setup: $msg: done in $((SECONDS - start)) s"; fi
  else
    if [ "$live" = 1 ]; then
      spin "$msg" "$start" &
      spinner=$!
    else
      printf 'setup: %s ... ' "$msg"
    fi
    "$@" >>"$log" 2>&1 </dev/null || rc=$?
    if [ "$live" = 1 ]; then
      stop_spinner
      printf 'setup: %s ... ' "$msg"
    fi
    if [ "$rc" = 0 ]; then echo "done in $((SECONDS - start)) s"; fi
  fi
  if [ "$rc" = 0 ]; then return 0; fi
  if [ "$verbose" = 0 ]; then echo "failed after $((SECONDS - start)) s (exit $rc)"; fi
  if [ "$soft" = 1 ]; then
    if [ "$verbose" = 0 ]; then echo "setup: its output is in $log" >&2; fi
    return 0
  fi
  if [ "$verbose" = 0 ]; then
    echo "setup: the last $(tail -n 30 "$log" | wc -l) lines of $log:" >&2
    tail -n 30 "$log" | sed 's/^/  | /' >&2
  fi
  echo "setup: '$msg' failed (exit $rc); full log: $log" >&2
  exit "$rc"
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
present=()

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the gaming tests' browser
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)  # the store's PostgreSQL tests
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)  # a head's image registry
# The multi-host harness: namespaces and veths (iproute2), nsenter (util-linux), a firewall rule.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
install_packages() {
  as_root apt-get update -q &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || sudo -v  # a password prompt, if any, before the output goes to the log
  step "installing Debian packages ${missing[*]}" install_packages
else
  present+=("Debian packages")
fi

docker_up() { docker info >/dev/null 2>&1; }
start_dockerd() {
  as_root sh -c 'nohup dockerd >/var/log/runner-dockerd.log 2>&1 &' || return
  for _ in $(seq 1 120); do docker_up && return 0; sleep 0.5; done
  echo "dockerd did not answer within 60 s; the end of /var/log/runner-dockerd.log:"
  as_root tail -n 20 /var/log/runner-dockerd.log
  return 1
}
if docker_up; then
  present+=("Docker engine")
else
  step --soft "starting dockerd (its own log: /var/log/runner-dockerd.log)" start_dockerd
fi
if ! docker_up; then
  if [ "${RUNNER_NO_SKIP:-0}" = 1 ]; then
    echo "setup: RUNNER_NO_SKIP=1 but the Docker engine did not start (see /var/log/runner-dockerd.log)" >&2
    exit 1
  fi
  echo "setup: no Docker engine; runner will run workloads as host processes" >&2
fi

if [ ! -x .venv/bin/python ]; then
  step "creating .venv" python3 -m venv .venv
fi
# pip takes ~15 s to find that nothing changed; the stamp (in .venv, so a new venv has none)
# skips it while pyproject.toml and the extras are what was installed. The install is
# editable: code changes need no reinstall.
extras='.[test,gaming,inference,s3]'
stamp=.venv/.runner-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
pip_install() {
  .venv/bin/pip install --disable-pip-version-check --progress-bar off -e "$extras" &&
    echo "$want" >"$stamp"
}
if [ -x .venv/bin/runner ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  present+=(".venv with runner (pyproject.toml unchanged)")
else
  step "installing runner and its extras into .venv (pip)" pip_install
fi
if [ ${#present[@]} -gt 0 ]; then
  joined=$(printf ', %s' "${present[@]}")
  echo "setup: already in place: ${joined:2}"
fi

if docker_up; then
  # Its own rows (Rich: a spinner and elapsed time per image), appending to the same log.
  images_args=(--log-file "$log")
  if [ "$verbose" = 1 ]; then images_args+=(--verbose); fi
  .venv/bin/runner images build "${images_args[@]}"
fi
