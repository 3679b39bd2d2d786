"""``python -m workloads.inference`` as the runner starts it: settings from the contract's
environment, report lines on stdout, clear exits for bad settings, SIGTERM within 10 seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for
from tests.workloads.test_inference_api import MODEL, free_port
from workloads.inference.backend import load_backend
from workloads.inference.errors import BackendLoadError, SettingsError
from workloads.inference.settings import ServerSettings, usable_cpus

REPO = Path(__file__).resolve().parents[2]


def start(env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    full.update(PYTHONUNBUFFERED="1", HOST="127.0.0.1", **env)
    with open(out, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "workloads.inference"], cwd=REPO, env=full, stdout=log, stderr=subprocess.STDOUT
        )


def reports(out: Path) -> list[dict[str, object]]:
    lines = [line for line in out.read_text(errors="replace").splitlines() if line.startswith('{"runner"')]
    return [json.loads(line) for line in lines]


def test_settings_come_from_the_contracts_environment() -> None:
    s = ServerSettings.from_env(
        {
            "PORT": "9001",
            "RUNNER_MODEL": "file:///ckpt/w-1",
            "RUNNER_MAX_BATCH_SIZE": "8",
            "RUNNER_MAX_WAIT_MS": "2.5",
            "RUNNER_MAX_QUEUE": "64",
            "RUNNER_WORKLOAD_ID": "w-1",
        }
    )
    assert (s.port, s.model, s.max_batch_size, s.max_wait_ms, s.max_queue) == (9001, "file:///ckpt/w-1", 8, 2.5, 64)
    assert s.workload_id == "w-1" and s.host == "0.0.0.0"
    # A checkpoint bound at the runner's mount point is still served under the spec's URI.
    from workloads.inference.completion import CheckpointBackend

    assert CheckpointBackend(s).model_id == "file:///ckpt/w-1"
    moved = ServerSettings.from_env(
        {
            "RUNNER_MODEL": "file:///mnt/runner/model",
            "RUNNER_MODEL_ID": "file:///root/.runner/artifacts/local/w-1/step-00000040",
        }
    )
    assert CheckpointBackend(moved).uri == "file:///mnt/runner/model"
    assert CheckpointBackend(moved).model_id == "file:///root/.runner/artifacts/local/w-1/step-00000040"
    bare = ServerSettings.from_env({})
    assert (bare.port, bare.model, bare.max_batch_size, bare.max_wait_ms, bare.max_queue) == (
        8000,
        MODEL,
        32,
        5.0,
        1024,
    )
    assert ServerSettings.from_env({"PORT": "9001"}, port=7000, host="127.0.0.1").port == 7000
    assert ServerSettings.from_env({"RUNNER_MODEL_WORKERS": "3"}).workers_for("cpu") == 3
    assert ServerSettings.from_env({}).workers_for("cuda") == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RUNNER_MAX_BATCH_SIZE": "big"}, "RUNNER_MAX_BATCH_SIZE must be a whole number, got 'big'"),
        ({"RUNNER_MAX_BATCH_SIZE": "0"}, "RUNNER_MAX_BATCH_SIZE must be >= 1, got 0"),
        ({"RUNNER_MAX_WAIT_MS": "-1"}, "RUNNER_MAX_WAIT_MS must be a finite number >= 0"),
        ({"RUNNER_MAX_WAIT_MS": "nan"}, "RUNNER_MAX_WAIT_MS must be a finite number >= 0"),
        ({"PORT": "70000"}, "PORT must be 1..65535, got 70000"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ServerSettings.from_env(env)


def test_usable_cpus_follows_a_cgroup_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert usable_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_usable_cpus_follows_a_cgroup_v1_quota(tmp_path: Path) -> None:
    """Hosts on the hybrid layout (Docker on cgroup v1) give containers cpu.cfs_quota_us instead."""
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_an_unknown_model_is_refused_before_anything_loads() -> None:
    with pytest.raises(BackendLoadError, match="RUNNER_MODEL='gpt-4' is not a model this image serves"):
        load_backend(ServerSettings(model="gpt-4"))


def test_bad_environment_exits_2_and_unknown_model_exits_1(tmp_path: Path) -> None:
    bad = start({"RUNNER_MAX_QUEUE": "lots"}, tmp_path / "bad.log")
    assert bad.wait(timeout=60) == 2
    assert "RUNNER_MAX_QUEUE must be a whole number" in (tmp_path / "bad.log").read_text()
    unknown = start({"RUNNER_MODEL": "gpt-4"}, tmp_path / "unknown.log")
    assert unknown.wait(timeout=60) == 1
    assert "is not a model this image serves" in (tmp_path / "unknown.log").read_text()


def test_serves_reports_and_stops_on_sigterm_within_ten_seconds(tmp_path: Path) -> None:
    port, out = free_port(), tmp_path / "server.log"
    proc = start(
        {"PORT": str(port), "RUNNER_WORKLOAD_ID": "w-abc", "RUNNER_REPLICA_INDEX": "1", "RUNNER_REPORT_EVERY_S": "0.5"},
        out,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def status() -> int:
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code
            except httpx.HTTPError:
                return 0

        wait_for(lambda: status() == 200 or proc.poll() is not None, timeout_s=120, what="/healthz 200")
        assert status() == 200, out.read_text()
        resp = httpx.post(f"{url}/v1/embeddings", json={"input": ["one", "two"], "model": MODEL}, timeout=30)
        assert resp.status_code == 200 and len(resp.json()["data"]) == 2
        ready = next(r for r in reports(out) if r["runner"] == "ready")
        assert ready["model"] == MODEL and ready["workload"] == "w-abc" and ready["replica"] == "1"
        assert ready["port"] == port and ready["device"] == "cpu"
        busy = wait_for(
            lambda: [r for r in reports(out) if r["runner"] == "metrics" and r["items_per_s"]],
            timeout_s=10,
            what="a metrics report that saw the request",
        )
        assert busy[0]["queue_depth"] == 0 and busy[0]["requests_per_s"] > 0
        assert any(r.get("batch_size_mean") for r in reports(out))  # the batches were reported
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        assert time.monotonic() - started < 10
        assert code in (0, -signal.SIGTERM), out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
