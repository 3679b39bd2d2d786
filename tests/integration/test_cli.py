"""The CLI end to end, as a user runs it: `runner` subprocesses against the session cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
RUNNER = [sys.executable, "-m", "runner.cli"]


def run(args: list[str], settings: Settings | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if settings is not None:
        env.update(
            RUNNER_HOME=str(settings.home),
            RUNNER_SERVER_PORT=str(settings.server_port),
            RUNNER_RAY_PORT=str(settings.ray_port),
        )
    return subprocess.run([*RUNNER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_validate_accepts_every_example() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        result = run(["validate", str(path)])
        assert result.returncode == 0, result.stderr
        assert "ok" in result.stdout


def test_validate_names_file_and_field_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "train.yaml"
    bad.write_text("name: t\nkind: batch\nimage: img\nresources:\n  gpu: {models: [H100], count: 0}\n")
    result = run(["validate", str(bad)])
    assert result.returncode == 2
    assert f"{bad}: resources.gpu.count: must be >= 1, got 0" in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr


def test_schema_is_json_with_every_kind() -> None:
    result = run(["schema"])
    assert result.returncode == 0
    assert {"batch", "training", "inference", "gaming"} <= set(result.stdout.split('"')), "kinds in schema"
    json.loads(result.stdout)


def test_no_server_is_exit_4(tmp_path: Path) -> None:
    result = run(["ls"], Settings(home=tmp_path, server_port=1, ray_port=1))
    assert result.returncode == 4
    assert "runner up --cpu" in result.stderr


@pytest.mark.cluster
def test_submit_wait_ls_status_logs(cluster_settings: Settings) -> None:
    result = run(["submit", "examples/smoke.yaml", "--wait", "--json"], cluster_settings)
    assert result.returncode == 0, result.stderr
    workload = json.loads(result.stdout.strip().splitlines()[-1])
    assert workload["state"] == "SUCCEEDED"
    wid = workload["id"]

    listed = json.loads(run(["ls", "--json"], cluster_settings).stdout)
    assert wid in [w["id"] for w in listed]

    status = run(["status", wid], cluster_settings)
    assert status.returncode == 0
    for state in ("PENDING", "PLACED", "STARTING", "SUCCEEDED"):
        assert state in status.stdout

    logs = run(["logs", wid], cluster_settings)
    assert json.loads(logs.stdout.strip().splitlines()[-1])["smoke"] == "ok"


@pytest.mark.cluster
def test_follow_streams_logs_and_failed_workload_exits_3(cluster_settings: Settings, tmp_path: Path) -> None:
    spec = tmp_path / "fail.yaml"
    spec.write_text((ROOT / "examples" / "smoke.yaml").read_text() + "\nenv:\n  SMOKE_FAIL: 1\n")
    spec.write_text(spec.read_text().replace("max_attempts: 2", "max_attempts: 1"))
    result = run(["submit", str(spec), "--follow"], cluster_settings)
    assert result.returncode == 3, result.stderr
    assert "smoke: torch" in result.stdout  # the logs were streamed
    assert "FAILED" in result.stderr


@pytest.mark.cluster
def test_nodes_and_cancel(cluster_settings: Settings, tmp_path: Path) -> None:
    nodes = {n["name"]: n for n in json.loads(run(["nodes", "--json"], cluster_settings).stdout)}
    fleet = {"fra-h100-1", "ams-4090-1", "nyc-a100-1", "tyo-4090-1"}  # other tests may have joined more
    assert fleet <= set(nodes) and all(nodes[name]["alive"] for name in fleet)

    spec = tmp_path / "long.yaml"
    spec.write_text((ROOT / "examples" / "smoke.yaml").read_text() + "\nenv:\n  SMOKE_SLEEP: 300\n")
    submitted = json.loads(run(["submit", str(spec), "--json"], cluster_settings).stdout.strip().splitlines()[-1])
    cancelled = run(["cancel", submitted["id"]], cluster_settings)
    assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout
    from runner.client import Client

    assert Client.from_settings(cluster_settings).wait(submitted["id"], timeout_s=60)["state"] == "CANCELLED"
    assert run(["status", "w-nope"], cluster_settings).returncode == 2
