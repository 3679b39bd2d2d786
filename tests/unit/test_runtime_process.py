"""The process runtime on real processes: run, logs, exit codes, stop, and adoption by key."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from runner.core.states import ReplicaState
from runner.runtime import LaunchRequest, replica_key
from runner.runtime.process import ProcessRuntime

#: What the wrapper shell sets of its own (it changes into the replica's folder).
SHELL_OWN = {"PWD", "OLDPWD", "SHLVL", "_"}


def request(command: list[str], attempt: int = 1, **env: str) -> LaunchRequest:
    return LaunchRequest(
        key=replica_key("w-test", 0, attempt),
        workload_id="w-test",
        replica_index=0,
        attempt=attempt,
        node="n1",
        image="ignored",
        command=command,
        env=env,
    )


def runtime(tmp_path: Path) -> ProcessRuntime:
    return ProcessRuntime(
        "n1",
        state_dir=tmp_path / "state",
        workdir=Path(__file__).resolve().parents[2],
        artifacts_dir=tmp_path / "artifacts",
    )


def test_runs_a_command_and_keeps_its_output_and_exit_code(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    req = request(
        [sys.executable, "-c", "import os; print('hello', os.environ['GREETING']); raise SystemExit(3)"],
        GREETING="world",
    )
    rt.start(req)
    status = rt.wait(req.key, timeout_s=30)
    assert status.state == ReplicaState.EXITED
    assert status.exit_code == 3
    assert rt.logs(req.key) == ["hello world"]


def test_start_twice_adopts_instead_of_starting_again(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    req = request(["python", "-m", "workloads.smoke"], SMOKE_SLEEP="30")
    first = rt.start(req)
    # A second runtime object over the same state folder stands for a restarted agent.
    second = runtime(tmp_path).start(req)
    assert second.handle == first.handle
    assert second.state == ReplicaState.RUNNING
    assert [s.key for s in rt.list()] == [req.key]
    stopped = rt.stop(req.key, grace_s=5)
    assert stopped.state == ReplicaState.STOPPED


def test_unknown_key_is_lost(tmp_path: Path) -> None:
    assert runtime(tmp_path).status("nope").state == ReplicaState.LOST


def test_remove_forgets_the_replica(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    req = request(["true"])
    rt.start(req)
    rt.wait(req.key, timeout_s=30)
    rt.remove(req.key)
    assert rt.list() == []


def test_a_replica_gets_nothing_of_the_agents_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15, the attack: tenant code on the process runtime reads its environment for the
    agent's secrets (the Ray token's path, a store credential). It finds only its own env and
    the runtime's few fixed variables."""
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "node-ray-token"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-agents-own")
    monkeypatch.setenv("LD_PRELOAD", "")
    rt = runtime(tmp_path)
    req = request([sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"], GREETING="world")
    rt.start(req)
    assert rt.wait(req.key, timeout_s=30).exit_code == 0
    seen = json.loads(rt.logs(req.key)[-1])
    assert not {"RAY_AUTH_TOKEN_PATH", "AWS_SECRET_ACCESS_KEY", "LD_PRELOAD"} & set(seen), seen
    assert seen["GREETING"] == "world"
    assert set(seen) - {"GREETING"} <= {"PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "HOME", "LANG"} | SHELL_OWN
    assert seen["PATH"].split(":")[0] == str(Path(sys.executable).parent)
