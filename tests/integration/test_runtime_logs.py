"""Replica logs as the supervisor reads them, on a real Docker engine and a real process: polled
while the replica writes (lines half written included), every line comes exactly once and whole;
the final read after the end has the last line without a newline; a restarted agent (a new
runtime object) serves from the count the supervisor has stored; asking again for lines already
dropped reads the output from its start."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.core.states import ReplicaState
from runner.runtime import LaunchRequest, replica_key
from runner.runtime.base import Runtime
from runner.runtime.process import ProcessRuntime
from tests.conftest import docker_client_or_skip

REPO = Path(__file__).resolve().parents[2]
# 30 lines, a line written in two halves a while apart, then a last line without a newline.
WRITE = (
    "import sys, time\n"
    "for i in range(30):\n"
    "    print(f'line {i}', flush=True); time.sleep(0.02)\n"
    "sys.stdout.write('half'); sys.stdout.flush(); time.sleep(0.5); print(' and half', flush=True)\n"
    "sys.stdout.write('no newline'); sys.stdout.flush()\n"
)
EXPECTED = [f"line {i}" for i in range(30)] + ["half and half", "no newline"]


def request(node: str) -> LaunchRequest:
    wid = f"w-lg{uuid.uuid4().hex[:8]}"
    return LaunchRequest(
        key=replica_key(wid, 0, 1),
        workload_id=wid,
        replica_index=0,
        attempt=1,
        node=node,
        image="runner/smoke:latest",
        command=["python", "-c", WRITE],
        cpu=0.5,
    )


def docker_runtime() -> Any:
    from runner.images import build_images
    from runner.runtime.docker import DockerRuntime

    client = docker_client_or_skip()
    build_images(["smoke"], docker_client=client, log=lambda _m: None)  # cached by content hash
    return DockerRuntime("logs-test", client=client, artifacts_dir=Path(tempfile.gettempdir()))


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), "process"])
def runtimes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A factory of runtime objects over one node: a second one stands for a restarted agent."""
    made: list[Runtime] = []

    def make() -> Runtime:
        if request.param == "docker":
            rt = docker_runtime()
        else:
            rt = ProcessRuntime("logs-test", state_dir=tmp_path / "state", workdir=REPO, artifacts_dir=tmp_path)
        made.append(rt)
        return rt

    yield make
    for status in made[0].list():
        made[0].remove(status.key)


def test_polled_logs_serve_every_line_once_and_whole(runtimes: Any) -> None:
    rt = runtimes()
    req = request("logs-test")
    rt.start(req)
    seen: list[str] = []
    while not rt.status(req.key).state.is_terminal():  # the replica's own end is the deadline
        seen.extend(rt.logs(req.key, len(seen)))
        assert all(line in EXPECTED for line in seen), seen  # never a line cut short
    assert rt.wait(req.key, timeout_s=60).state == ReplicaState.EXITED
    seen.extend(rt.logs(req.key, len(seen), final=True))
    assert seen == EXPECTED


def test_a_restarted_agent_serves_from_the_stored_count_and_old_lines_are_read_again(runtimes: Any) -> None:
    rt = runtimes()
    req = request("logs-test")
    rt.start(req)
    assert rt.wait(req.key, timeout_s=60).state == ReplicaState.EXITED
    restarted = runtimes()
    assert restarted.logs(req.key, 10, final=True) == EXPECTED[10:]
    assert restarted.logs(req.key, 31, final=True) == EXPECTED[31:]
    assert restarted.logs(req.key, 0, final=True) == EXPECTED  # dropped, so read from the start again
    assert rt.logs("no-such-key", 0, final=True) == []
