"""The training image for real: built offline, run hardened as the Docker runtime runs replicas
(uid 1000, all capabilities dropped, a CPU quota), checkpointing to a bind-mounted folder;
`docker stop` gets a checkpoint and exit 143; two containers on host networking train as a gang."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import docker_client_or_skip, wait_for
from tests.workloads.test_training import TINY, free_port
from workloads.common.report import parse_report

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def docker() -> Any:
    return docker_client_or_skip()


@pytest.fixture(scope="module")
def image(docker: Any) -> str:
    from runner.images import build_images

    return build_images(["training"], docker_client=docker, log=lambda _m: None)["training"]


@pytest.fixture
def checkpoint_dir(tmp_path: Path) -> Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    path.chmod(0o777)  # the container's uid 1000 writes here, as on a node's artifact folder
    return path


@pytest.fixture
def containers(docker: Any) -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for c in started:
        c.remove(force=True)


def run(docker: Any, image: str, started: list[Any], args: list[str], env: dict[str, str], **kwargs: Any) -> Any:
    """Start a container the way runner/runtime/docker.py does (hardened, CPU-limited)."""
    container = docker.containers.run(
        image,
        ["python", "-m", "workloads.training", *args],
        environment=env,
        detach=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=4096,
        init=True,
        **kwargs,
    )
    started.append(container)
    return container


def reports(container: Any, kind: str) -> list[dict[str, Any]]:
    lines = container.logs(stdout=True, stderr=False).decode().splitlines()
    return [r for r in map(parse_report, lines) if r is not None and r["runner"] == kind]


def test_one_worker_in_a_container_checkpoints_to_a_bind_mount(
    docker: Any, image: str, checkpoint_dir: Path, containers: list[Any]
) -> None:
    c = run(
        docker,
        image,
        containers,
        [*TINY, "--threads", "0", "--steps", "30", "--log-every", "10"],
        {"RUNNER_CHECKPOINT_URI": "file:///artifacts/w-1", "RUNNER_CHECKPOINT_EVERY": "10"},
        volumes={str(checkpoint_dir): {"bind": "/artifacts", "mode": "rw"}},
        network_disabled=True,
        nano_cpus=2_000_000_000,
    )
    assert c.wait(timeout=300)["StatusCode"] == 0, c.logs().decode()
    logs = c.logs().decode()
    assert "2 torch thread(s)" in logs  # taken from the container's CPU quota (--threads 0)
    assert [p["step"] for p in reports(c, "progress")] == [1, 10, 20, 30]
    assert reports(c, "checkpoint")[-1]["uri"] == "file:///artifacts/w-1/step-00000030"
    manifest = json.loads((checkpoint_dir / "w-1" / "step-00000030" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.pt", "trainer.pt"}
    assert (checkpoint_dir / "w-1" / "step-00000030" / "model.pt").stat().st_uid == 1000
    result = reports(c, "result")[-1]
    assert result["final_loss"] < result["first_loss"]


def test_docker_stop_checkpoints_and_exits_143_in_time(
    docker: Any, image: str, checkpoint_dir: Path, containers: list[Any]
) -> None:
    c = run(
        docker,
        image,
        containers,
        [*TINY, "--steps", "100000", "--log-every", "1"],
        {"RUNNER_CHECKPOINT_URI": "file:///artifacts/w-2"},
        volumes={str(checkpoint_dir): {"bind": "/artifacts", "mode": "rw"}},
        network_disabled=True,
        nano_cpus=1_000_000_000,
    )
    wait_for(lambda: len(reports(c, "progress")) >= 5, timeout_s=120, what="training progress")
    c.stop(timeout=10)  # SIGTERM, then SIGKILL after 10 s: 137 would mean it missed the deadline
    assert c.wait(timeout=30)["StatusCode"] == 143, c.logs().decode()[-2000:]
    last_step = reports(c, "progress")[-1]["step"]
    saved = reports(c, "checkpoint")[-1]
    assert (saved["step"], saved["reason"]) == (last_step, "sigterm")
    assert (checkpoint_dir / "w-2" / f"step-{last_step:08d}" / "manifest.json").is_file()


def test_two_containers_on_host_networking_train_as_a_gang(
    docker: Any, image: str, checkpoint_dir: Path, containers: list[Any]
) -> None:
    """CPU mode's gang on one machine: host networking, MASTER_ADDR 127.0.0.1, gloo on lo."""
    env = {
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "GLOO_SOCKET_IFNAME": "lo",
        "RUNNER_CHECKPOINT_URI": "file:///artifacts/w-3",
        "RUNNER_CHECKPOINT_EVERY": "20",
    }
    volumes = {str(checkpoint_dir): {"bind": "/artifacts", "mode": "rw"}}
    args = [*TINY, "--steps", "40", "--log-every", "10"]
    rank0 = run(
        docker,
        image,
        containers,
        args,
        {**env, "RANK": "0"},
        volumes=volumes,
        network_mode="host",
        nano_cpus=1_000_000_000,
    )
    rank1 = run(
        docker,
        image,
        containers,
        args,
        {**env, "RANK": "1"},
        volumes=volumes,
        network_mode="host",
        nano_cpus=1_000_000_000,
    )
    assert rank0.wait(timeout=300)["StatusCode"] == 0, rank0.logs().decode()[-2000:]
    assert rank1.wait(timeout=60)["StatusCode"] == 0, rank1.logs().decode()[-2000:]
    result = reports(rank0, "result")[-1]
    assert result["world_size"] == 2 and result["final_loss"] < result["first_loss"] - 1.0
    assert sorted(os.listdir(checkpoint_dir / "w-3")) == ["latest.json", "step-00000020", "step-00000040"]
