"""The control plane's training pieces that need no cluster: what a worker's launch request gets,
which failures are final, the events rank 0's reports make, the CLI's progress figures, the
runtime's host-network checks, and the interface that holds an address."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runner.cli.training import duration, follow_lines, progress_text, rank_and_attempt, training_lines
from runner.core import training
from runner.core.errors import ImageError, PortInUseError, UserError
from runner.core.events import StartFailure
from runner.core.spec import parse_workload
from runner.runtime import LaunchRequest
from runner.runtime.base import Mount, check_host_ports, prepare_mounts
from runner.runtime.netif import interface_of


def replica(**fields: Any) -> Any:
    base = {
        "workload_id": "w-1",
        "index": 0,
        "attempt": 1,
        "node": "n1",
        "state": "RUNNING",
        "exit_code": None,
        "finished_at": None,
        "error": "",
        "start_failure": "",
        "reports": {},
    }
    return SimpleNamespace(**{**base, **fields})


def spec(**changes: Any) -> Any:
    return parse_workload({"name": "t", "kind": "training", "image": "runner/training:latest", "workers": 2, **changes})


def test_master_ports_stay_below_the_ephemeral_range_and_change_with_the_attempt() -> None:
    ports = [training.master_port(f"w-{i}", a) for i in range(500) for a in (1, 2)]
    assert all(29500 <= p < 32768 for p in ports)
    assert training.master_port("w-1", 1) == training.master_port("w-1", 1) != training.master_port("w-1", 2)


def test_a_worker_gets_host_networking_and_rank_0_the_ports() -> None:
    s = spec(ports=[6006])
    rank0 = training.launch_fields(s, replica(index=0))
    rank1 = training.launch_fields(s, replica(index=1))
    assert rank0["host_network"] and rank1["host_network"]
    assert rank0["ports"] == [(training.master_port("w-1", 1), "tcp"), (6006, "tcp")] and rank1["ports"] == []


def test_exit_2_is_final_and_a_lost_peer_shortens_the_stop_grace() -> None:
    ok, bad = replica(index=0), replica(index=1, exit_code=2, finished_at=1.0)
    assert "exited with code 2 (bad input" in (training.final_failure([ok, bad]) or "")
    assert training.final_failure([ok, replica(index=1, exit_code=1, finished_at=1.0)]) is None
    assert training.stop_grace([ok, replica(index=1, exit_code=0)], 10.0) == 10.0
    assert training.stop_grace([ok, replica(index=1, state="LOST", finished_at=1.0)], 10.0) == 3.0


def test_a_port_clash_is_recognised_from_the_recorded_kind_never_the_words() -> None:
    clash = replica(exit_code=125, finished_at=1.0, start_failure=StartFailure.PORT_IN_USE, error="reworded at will")
    assert training.port_clash([clash, replica(index=1)]) is clash
    image = replica(exit_code=125, finished_at=1.0, start_failure=StartFailure.IMAGE, error="host port 29600/tcp taken")
    assert training.port_clash([image]) is None  # words that look like a clash decide nothing


def test_the_agent_records_a_taken_host_port_as_data() -> None:
    """What the agent stores for a start that raised (``StartFailure.of``), per named error."""
    assert StartFailure.of(PortInUseError("any words")) is StartFailure.PORT_IN_USE
    assert StartFailure.of(ImageError("any words")) is StartFailure.IMAGE
    assert StartFailure.of(UserError("any words")) is StartFailure.OTHER
    assert StartFailure.of(OSError("engine gone")) is StartFailure.OTHER


def test_rank_0_reports_become_events() -> None:
    msgs = training.timeline_messages
    resumed = msgs(replica(attempt=2), {"resume": {"step": 40, "total_steps": 100, "uri": "file:///c/step-00000040"}})
    assert resumed == ["attempt 2: resumed from step 40 of 100 (file:///c/step-00000040)"]
    assert msgs(replica(attempt=2), {"progress": {"step": 1}}) == [
        "attempt 2: no complete checkpoint found; started over from step 0"
    ]
    assert msgs(replica(attempt=1), {"progress": {"step": 1}}) == []
    done = msgs(
        replica(),
        {
            "result": {
                "steps": 60,
                "world_size": 2,
                "first_loss": 5.5,
                "final_loss": 2.1,
                "val_loss": 2.3,
                "checkpoint": "s3://b/w-1/step-00000060",
            }
        },
    )
    assert done == [
        "trained 60 steps on 2 worker(s): loss 5.5 -> 2.1 (validation 2.3); final checkpoint s3://b/w-1/step-00000060"
    ]


def test_training_jobs_retry_three_times_unless_told() -> None:
    assert spec().retries.max_attempts == 3
    assert spec(retries={"backoff_s": 5}).retries.max_attempts == 3
    assert spec(retries={"max_attempts": 1}).retries.max_attempts == 1


# ------------------------------------------------------------------------------------------ CLI figures
def test_progress_text_and_durations() -> None:
    p = {"step": 120, "total_steps": 1000, "loss": 2.31, "steps_per_s": 36.2}
    assert progress_text(p) == "step 120/1000 (12%), loss 2.3100, 36.2 steps/s, ETA 24s"
    assert (duration(None), duration(59.6), duration(185), duration(7620)) == ("-", "1m00s", "3m05s", "2h07m")
    assert rank_and_attempt("w-ab12-r3-a12") == (3, 12)


def test_follow_keeps_rank_0_and_turns_reports_into_progress() -> None:
    items = [
        {"replica": "w-1-r0-a1", "line": "training: 1 parameters"},
        {"replica": "w-1-r1-a1", "line": "training[rank 1]: rendezvous"},
        {
            "replica": "w-1-r0-a1",
            "line": '{"runner": "progress", "step": 10, "total_steps": 20, "loss": 3.0, "steps_per_s": 5.0}',
        },
        {"replica": "w-1-r0-a2", "line": '{"runner": "resume", "step": 10, "total_steps": 20, "uri": "file:///c"}'},
        {"replica": "w-1-r0-a2", "line": '{"runner": "checkpoint", "step": 20, "reason": "final", "uri": "file:///d"}'},
    ]
    out = list(follow_lines(items))
    assert out == [
        ("line", "training: 1 parameters"),
        ("progress", {"step": 10, "total_steps": 20, "loss": 3.0, "steps_per_s": 5.0}),
        ("line", "-- attempt 2 --"),
        ("line", "resumed from step 10 of 20 (file:///c)"),
        ("line", "checkpoint: step 20 (final) file:///d"),
    ]


def test_status_lines_come_from_the_newest_attempt_with_each_report() -> None:
    w = {
        "id": "w-1",
        "replicas": [
            {
                "index": 0,
                "attempt": 1,
                "reports": {"progress": {"step": 30, "total_steps": 60, "loss": 3.0, "steps_per_s": 10.0}},
            },
            {"index": 1, "attempt": 1, "reports": {}},
            {"index": 0, "attempt": 2, "reports": {"resume": {"step": 20, "uri": "file:///c/step-00000020"}}},
        ],
    }
    lines = training_lines(w)
    assert lines[0] == "  progress: step 30/60 (50%), loss 3.0000, 10.0 steps/s, ETA 3s (attempt 1)"
    assert lines[1] == "  resumed from step 20 (file:///c/step-00000020)"


# ------------------------------------------------------------------------------------ runtime pieces
def request(**fields: Any) -> LaunchRequest:
    return LaunchRequest(
        key="w-1-r0-a1", workload_id="w-1", replica_index=0, attempt=1, node="n1", image="i", command=["true"], **fields
    )


def test_a_taken_host_port_refuses_the_start() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"host port {port}/tcp is in use on node n1"):
            check_host_ports(request(host_network=True, ports=[(port, "tcp")]), "n1")
        check_host_ports(request(host_network=False, ports=[(port, "tcp")]), "n1")  # bridge: published instead


def test_mount_sources_are_created_and_must_be_absolute(tmp_path: Path) -> None:
    target = tmp_path / "a" / "w-1"
    prepare_mounts([Mount(str(target), str(target))], tmp_path)
    assert target.is_dir()
    with pytest.raises(UserError, match="must be absolute"):
        prepare_mounts([Mount("relative/x", "/x")], tmp_path)


def test_the_interface_of_an_address() -> None:
    assert interface_of("127.0.0.1") == interface_of("127.0.0.7") == "lo"
    assert interface_of("203.0.113.254") is None  # TEST-NET-3: held by no interface here


# ------------------------------------------------------------------------------------------- artifacts
def test_a_local_store_never_lists_or_serves_what_a_symlink_points_at(tmp_path: Path) -> None:
    """The folder is written by the tenant's container; the control plane must not follow links."""
    import os

    from runner import artifacts
    from runner.core.errors import NotFoundError

    (tmp_path / "step-00000010").mkdir()
    (tmp_path / "step-00000010" / "model.pt").write_bytes(b"weights")
    os.symlink("/etc/passwd", tmp_path / "leak")
    os.symlink("/etc", tmp_path / "etc")
    store = artifacts.workload_store(tmp_path.as_uri(), {})
    listing = artifacts.listing(store)
    assert [i["key"] for i in listing["items"]] == ["step-00000010/model.pt"]
    assert listing["checkpoints"] == [{"step": 10, "complete": False, "uri": f"{tmp_path.as_uri()}/step-00000010"}]
    assert artifacts.local_path(store, "step-00000010/model.pt") == tmp_path / "step-00000010" / "model.pt"
    for key in ("leak", "etc/passwd", "step-00000010"):
        with pytest.raises(NotFoundError, match="runner artifacts ls"):
            artifacts.local_path(store, key)
    with pytest.raises(UserError, match="bad artifact key"):
        artifacts.local_path(store, "../outside")
