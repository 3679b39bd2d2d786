"""Every kind's replica is a locked-down container, by the engine's own record, and the attacks on
it fail (issue 15, point 2).

One replica of each kind runs on the CPU-mode cluster with its real image: a batch job, a
training job, an inference service (the real model server), a gaming session. For each, the
engine's ``inspect`` must show a non-root user, no capabilities, no-new-privileges, a read-only
root filesystem with a tmpfs scratch, and memory, CPU and pid limits (a replica whose spec names
no memory gets the default). Then, inside the container as its own user, the attacks: write to
the image's files, hold a capability; each must fail, and the kernel must say no set-uid binary
can raise the process's rights; writing to the scratch works (the control).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from runner.core.contract import memory_limit_mb
from runner.core.spec import parse_workload
from tests.conftest import docker_client_or_skip, wait_for
from tests.integration.test_inference import SERVICE
from tests.integration.test_training import training
from tests.integration.test_workloads import smoke

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


@pytest.fixture(scope="module", autouse=True)
def images(cluster_settings: Any, runtime_name: str) -> None:
    docker_client_or_skip()
    if runtime_name != "docker":
        pytest.skip("the hardening is the Docker runtime's; this cluster runs processes")
    from runner.images import build_images

    build_images(["smoke", "training", "inference", "gaming"], log=lambda _m: None)  # cached by content hash


@pytest.fixture(scope="module")
def replicas(client: Any) -> Iterator[dict[str, Any]]:
    """A running container of each kind (the engine's object), by kind."""
    batch = smoke(env={"SMOKE_SLEEP": "300"}, resources={"cpu": 0.5})  # no memory named: the default
    train = training(100_000, workers=1, every=100_000)
    service = {**SERVICE, "name": "hardened", "replicas": {"min": 1, "max": 1}, "resources": {"cpu": 0.5}}
    ids = {
        "batch": client.submit(batch)["id"],
        "training": client.submit(train)["id"],
        "inference": client.submit(service)["id"],
        "gaming": client.session_start("breakout", "eu-west", cpu=0.5)["id"],
    }
    specs = {"batch": batch, "training": train, "inference": service}
    engine = docker_client_or_skip()

    def running(workload_id: str) -> Any:
        found = engine.containers.list(filters={"label": f"runner.workload={workload_id}", "status": "running"})
        return found[0] if found else None

    try:
        containers = {
            kind: wait_for(lambda w=wid: running(w), timeout_s=240, what=f"a running {kind} container")
            for kind, wid in ids.items()
        }
        yield {"containers": containers, "specs": specs}
    finally:
        for kind, wid in ids.items():
            if kind == "gaming":
                client.session_end(wid)
            else:
                client.cancel(wid)
        for wid in ids.values():
            client.wait(wid, timeout_s=120)


KINDS = ("batch", "training", "inference", "gaming")


@pytest.mark.parametrize("kind", KINDS)
def test_the_engine_records_every_limit_and_drop(replicas: dict[str, Any], kind: str) -> None:
    container = replicas["containers"][kind]
    container.reload()
    host, config = container.attrs["HostConfig"], container.attrs["Config"]
    assert config["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"] and not host["Privileged"]
    assert "no-new-privileges" in (host["SecurityOpt"] or [])
    assert host["ReadonlyRootfs"] is True and "/tmp" in (host["Tmpfs"] or {})
    assert host["PidsLimit"] == 4096 and host["NanoCpus"] > 0 and host["Memory"] > 0
    if kind in replicas["specs"]:
        spec = parse_workload(replicas["specs"][kind])
        assert host["Memory"] == memory_limit_mb(spec) * 1024 * 1024
    assert host["LogConfig"]["Config"] == {"max-file": "2", "max-size": "64m"}


def sh(container: Any, script: str) -> tuple[int, str]:
    """``script`` run in the container as its own user (what the image's code could do)."""
    code, out = container.exec_run(["sh", "-c", script], user="1000:1000")
    return code, out.decode(errors="replace")


@pytest.mark.parametrize("kind", KINDS)
def test_attacks_from_inside_the_container_fail(replicas: dict[str, Any], kind: str) -> None:
    container = replicas["containers"][kind]
    # The control: the scratch takes writes.
    assert sh(container, "echo ok > /tmp/scratch && cat /tmp/scratch") == (0, "ok\n")
    # The image's own files cannot be changed, even where the image lets its user write (its
    # own folders: the control that only the read-only root stops it).
    assert sh(container, "stat -c %u /app /home/runner/.bashrc") == (0, "1000\n1000\n")
    for path in ("/app/pwned", "/home/runner/.bashrc"):
        code, out = sh(container, f"echo pwned >> {path}")
        assert code != 0 and "Read-only file system" in out, (path, code, out)
    # No capability in any set, and no way to gain one: no-new-privileges holds for set-uid files.
    code, status = sh(container, "cat /proc/self/status")
    caps = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Cap")}
    assert code == 0 and all(int(v, 16) == 0 for v in caps.values()), caps
    assert "NoNewPrivs:\t1" in status  # a set-uid binary runs without its owner's rights
    assert sh(container, "id -u") == (0, "1000\n")
