"""A network's nodes run workloads in containers only (issue 15): the process runtime is a shell
on the host, CPU mode's alone, where every node is the operator's own machine. A head refuses
``--runtime process``, and its agents are made with Docker whatever the home's runtime says, so
``auto`` never falls back to host processes on a provider's machine without an engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.settings import Settings


@pytest.mark.parametrize("runtime", ["auto", "process", "docker"])
def test_a_networks_nodes_run_docker_whatever_the_home_says(tmp_path: Path, runtime: str) -> None:
    assert Settings(home=tmp_path, advertise="10.0.0.1", runtime=runtime).node_runtime == "docker"


@pytest.mark.parametrize("runtime", ["auto", "process", "docker"])
def test_cpu_mode_keeps_its_runtime(tmp_path: Path, runtime: str) -> None:
    assert Settings(home=tmp_path, runtime=runtime).node_runtime == runtime


def test_a_head_refuses_the_process_runtime_before_it_starts_anything(tmp_path: Path) -> None:
    env = {**os.environ, "RUNNER_HOME": str(tmp_path), "COLUMNS": "250"}
    done = subprocess.run(
        [sys.executable, "-m", "runner.cli", "up", "--advertise", "127.0.0.2", "--runtime", "process"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--runtime process: a network's nodes run workloads in containers only" in done.stderr + done.stdout
    assert not (tmp_path / "head.json").exists() and not (tmp_path / "runner.db").exists()
