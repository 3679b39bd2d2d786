"""Training jobs through the runner on the shared CPU cluster: a 2-worker gang trains and its loss
falls; a killed node or a dead container makes the whole gang resume from the last complete
checkpoint (never a damaged or partial one, never more than one interval back); checkpoints go to
a real S3-compatible server (moto) as well; the CLI shows progress, status figures and artifacts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.cli.training import rank_and_attempt
from runner.core.errors import PolicyError
from runner.core.training import master_port
from runner.runtime.netif import interface_of
from runner.settings import Settings
from tests.conftest import docker_client_or_skip, extra_node, kill_node, remove_node_containers, wait_for
from tests.support.s3 import aws_env, moto_server, new_bucket
from tests.workloads.test_training import TINY
from workloads.common.report import parse_report

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def training_image(cluster_settings: Settings, runtime_name: str) -> None:
    if runtime_name == "docker":
        from runner.images import build_images

        build_images(["training"], log=lambda _m: None)  # cached by content hash: instant when built


def training(steps: int, *, every: int = 20, log_every: int = 10, **changes: Any) -> dict[str, Any]:
    """A 2-worker job of the tiny model (a few ms per step on one core)."""
    spec: dict[str, Any] = {
        "name": "tiny-lm",
        "kind": "training",
        "image": "runner/training:latest",
        "workers": 2,
        "command": ["python", "-m", "workloads.training", *TINY, "--steps", str(steps), "--log-every", str(log_every)],
        "resources": {"cpu": 1, "memory": "1GB"},
        "checkpoint": {"every_steps": every},
    }
    spec.update(changes)
    return spec


def rank0(client: Any, workload_id: str, kind: str, attempt: int | None = None) -> list[dict[str, Any]]:
    """Rank 0's reports of one type from the stored logs (of one attempt, or all)."""
    out = []
    for item in client.logs(workload_id):
        index, item_attempt = rank_and_attempt(item["replica"])
        report = parse_report(item["line"])
        if index == 0 and attempt in (None, item_attempt) and report and report["runner"] == kind:
            out.append({**report, "attempt": item_attempt})
    return out


def latest_report(client: Any, workload_id: str, kind: str) -> dict[str, Any] | None:
    reps = [r for r in client.get(workload_id)["replicas"] if r["index"] == 0]
    reps.sort(key=lambda r: -r["attempt"])
    return (reps[0]["reports"] or {}).get(kind) if reps else None


def containers_of(workload_id: str) -> list[Any]:
    docker = docker_client_or_skip()
    return docker.containers.list(all=True, filters={"label": [f"runner.workload={workload_id}"]}, ignore_removed=True)


def test_two_workers_train_their_loss_falls_and_the_result_is_servable(client: Any) -> None:
    w = client.submit(training(60))
    done = client.wait(w["id"], timeout_s=240)
    assert done["state"] == "SUCCEEDED", done["message"]
    detail = client.get(w["id"])
    assert done["attempts"] == 1 and len({r["node"] for r in detail["replicas"]}) == 2  # a gang on distinct nodes

    progress = rank0(client, w["id"], "progress")
    assert [p["step"] for p in progress] == [1, 10, 20, 30, 40, 50, 60]
    assert progress[-1]["loss"] < progress[0]["loss"] - 1.0, progress
    result = rank0(client, w["id"], "result")[-1]
    assert result["world_size"] == 2 and result["final_loss"] < result["first_loss"]
    assert not any("-r1-" in item["replica"] and parse_report(item["line"]) for item in client.logs(w["id"]))
    by_index = {r["index"]: r for r in detail["replicas"]}
    assert by_index[0]["reports"]["result"]["steps"] == 60 and by_index[1]["reports"] == {}

    # The final checkpoint: in the timeline, in the artifacts, and a server loads it.
    final = f"{client.artifacts(w['id'])['uri']}/step-00000060"
    # The trainer names it as it sees it (its log line); the runner reads that back as the host's.
    assert result["checkpoint"] in (final, "file:///mnt/runner/checkpoints/step-00000060")
    assert by_index[0]["reports"]["result"]["checkpoint"] == final
    assert any(
        e["message"].startswith("trained 60 steps on 2 worker(s)") and final in e["message"] for e in detail["events"]
    )
    listing = client.artifacts(w["id"])
    assert listing["final_checkpoint"] == final
    assert [(c["step"], c["complete"]) for c in listing["checkpoints"]] == [(20, True), (40, True), (60, True)]
    assert listing["latest"]["step"] == 60

    from workloads.training.serve import generate, load_for_inference

    model = load_for_inference(listing["final_checkpoint"])
    assert model.step == 60 and isinstance(generate(model, "def ", max_tokens=8, temperature=0), str)


def test_a_lost_node_resumes_the_gang_from_its_last_checkpoint(
    cluster_settings: Settings, client: Any, operator: Any, runtime_name: str
) -> None:
    """Two extra nodes and tyo-4090-1 may host the gang; whichever extra node holds a worker is
    killed with its containers (a machine losing power) mid-run; the gang is placed again on the
    two left and resumes, losing at most one checkpoint interval."""
    nodes = {"train-a": 30, "train-b": 31}
    with (
        extra_node(
            cluster_settings, operator, index=30, name="train-a", provider="gangco", region="test-train", country="FI"
        ) as proc_a,
        extra_node(
            cluster_settings, operator, index=31, name="train-b", provider="gangco", region="test-train", country="FI"
        ) as proc_b,
    ):
        procs = {"train-a": proc_a, "train-b": proc_b}
        wait_for(
            lambda: {n["name"] for n in client.nodes() if n["state"] == "active"} >= set(nodes),
            timeout_s=90,
            what="the extra nodes to join",
        )
        every = 20
        spec = training(
            100_000,
            every=every,
            log_every=5,
            placement={"regions": ["test-train", "ap-northeast"]},
            retries={"max_attempts": 3, "backoff_s": 0},
        )
        w = client.submit(spec)
        assert client.wait(w["id"], until="running", timeout_s=120)["state"] == "RUNNING"
        host_uri = client.artifacts(w["id"])["uri"]
        if runtime_name == "docker":  # host networking, the checkpoint folder at runner's mount point,
            # gloo on the interface that holds the rank-0 node's address (Ray's address of the node:
            # here the host's own, whatever `ray start --node-ip-address` said)
            addresses = {n["name"]: n["address"] for n in client.nodes()}
            node0 = next(r["node"] for r in client.get(w["id"])["replicas"] if r["index"] == 0)
            for c in containers_of(w["id"]):
                env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
                assert c.attrs["HostConfig"]["NetworkMode"] == "host" and not c.attrs["HostConfig"]["PortBindings"]
                assert env["MASTER_ADDR"] == addresses[node0]
                assert env["GLOO_SOCKET_IFNAME"] == interface_of(addresses[c.labels["runner.node"]])
                assert env["RUNNER_CHECKPOINT_URI"] == "file:///mnt/runner/checkpoints/"
                assert [(m["Source"], m["Destination"]) for m in c.attrs["Mounts"]] == [
                    (host_uri.removeprefix("file://").rstrip("/"), "/mnt/runner/checkpoints")
                ]
        wait_for(
            lambda: (latest_report(client, w["id"], "checkpoint") or {}).get("step", 0) >= 2 * every,
            timeout_s=120,
            what="two checkpoints",
        )
        reps = sorted(client.get(w["id"])["replicas"], key=lambda r: -r["index"])
        victim = next(r for r in reps if r["node"] in nodes)
        seen_before = max(p["step"] for p in rank0(client, w["id"], "progress", attempt=1))
        kill_node(procs[victim["node"]])
        remove_node_containers(cluster_settings, victim["node"])

        resumed = wait_for(
            lambda: rank0(client, w["id"], "resume", attempt=2), timeout_s=120, what="the second attempt to resume"
        )[0]
        moved = wait_for(
            lambda: [p for p in rank0(client, w["id"], "progress", attempt=2) if p["step"] > resumed["step"]],
            timeout_s=60,
            what="progress after the resume",
        )
        detail = client.get(w["id"])
        first = [r for r in detail["replicas"] if r["attempt"] == 1]
        second = [r for r in detail["replicas"] if r["attempt"] == 2]
        assert {r["node"] for r in second} == ({"train-a", "train-b", "tyo-4090-1"} - {victim["node"]}), detail
        assert next(r for r in first if r["node"] == victim["node"])["state"] == "LOST"
        saved = [c["step"] for c in rank0(client, w["id"], "checkpoint", attempt=1)]
        # The newest complete checkpoint, so at most one interval behind where training was.
        assert resumed["step"] >= max(saved) and resumed["step"] % every == 0
        assert resumed["step"] >= seen_before - every
        # The trainer names the checkpoint as it sees it; the runner's record reads it back as the host's.
        resumed_uri = latest_report(client, w["id"], "resume")["uri"]
        assert resumed_uri == f"{host_uri}/step-{resumed['step']:08d}", (resumed_uri, host_uri)
        assert moved[0]["step"] == resumed["step"] + 1
        messages = [e["message"] for e in detail["events"]]
        assert any(f"lost on {victim['node']}" in m and m.startswith("attempt 1 failed") for m in messages), messages
        assert f"attempt 2: resumed from step {resumed['step']} of 100000 ({resumed_uri})" in messages
        client.cancel(w["id"])
        assert client.wait(w["id"], timeout_s=60)["state"] == "CANCELLED"
    # Leave only once Ray has seen both extra nodes go: a node killed a moment ago still looks
    # alive for ~3 s, and the next test's gang must not be placed on it.
    wait_for(
        lambda: not any(n["alive"] for n in client.nodes() if n["name"] in nodes),
        timeout_s=60,
        what="Ray to mark the extra nodes dead",
    )


def test_a_dead_container_resumes_past_a_port_clash_and_never_from_a_damaged_or_partial_checkpoint(
    client: Any, runtime_name: str
) -> None:
    """Rank 1's container dies; while the retry waits its backoff the newest checkpoint is
    damaged and a newer half-written one appears, and something else takes the rendezvous port
    of attempt 2. Attempt 2 is then a relocation (not a failure), and attempt 3 resumes from the
    newest checkpoint that verifies."""
    if runtime_name != "docker":
        pytest.skip("kills a container")
    every = 10
    w = client.submit(training(120, every=every, log_every=5, retries={"max_attempts": 2, "backoff_s": 4}))
    squatter = socket.socket()
    squatter.bind(("0.0.0.0", master_port(w["id"], 2)))  # attempt 2 does not exist yet: no race
    squatter.listen()
    try:
        wait_for(
            lambda: (latest_report(client, w["id"], "checkpoint") or {}).get("step", 0) >= 3 * every,
            timeout_s=180,
            what="three checkpoints",
        )
        rank1 = next(c for c in containers_of(w["id"]) if c.labels["runner.replica"] == "1")
        rank1.kill()  # SIGKILL: its peer's connection resets, rank 0 exits 1 without a checkpoint
        retrying = wait_for(
            lambda: (g := client.get(w["id"]))["state"] == "RETRYING" and g,
            timeout_s=60,
            what="the gang to be stopped and the retry to wait its backoff",
        )
        assert "replica 1 on" in retrying["message"] and "exited with code 137" in retrying["message"]

        # During the backoff: damage the newest complete checkpoint, and leave a newer partial one.
        folder = Path(client.artifacts(w["id"])["uri"].removeprefix("file://"))
        complete = sorted(c["step"] for c in client.artifacts(w["id"])["checkpoints"] if c["complete"])
        damaged = complete[-1]
        model = folder / f"step-{damaged:08d}" / "model.pt"
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
        partial = folder / f"step-{damaged + 5:08d}"
        partial.mkdir()
        (partial / "model.pt").write_bytes(b"half")
        for path in (partial, partial / "model.pt"):  # owned like the trainer's own files, so it may prune them
            os.chown(path, folder.stat().st_uid, folder.stat().st_gid)

        done = client.wait(w["id"], timeout_s=240)
    finally:
        squatter.close()
    assert done["state"] == "SUCCEEDED", done["message"]
    assert (done["attempts"], done["relocations"]) == (3, 1)
    messages = [e["message"] for e in client.get(w["id"])["events"]]
    port = master_port(w["id"], 2)
    assert any(m.startswith(f"stopping: host port {port}/tcp is in use on node") for m in messages), messages
    assert any(m.startswith("attempt 2 ended to rendezvous port in use on") for m in messages), messages
    resumed = rank0(client, w["id"], "resume", attempt=3)[0]
    assert resumed["step"] == complete[-2] == damaged - every
    lines = [i["line"] for i in client.logs(w["id"]) if i["replica"].endswith("-r0-a3")]
    inside = f"file:///mnt/runner/checkpoints/{partial.name}"  # its log says what the container saw
    assert any(f"skipping checkpoint {inside}: no manifest" in line for line in lines), lines[:20]
    assert any(f"step-{damaged:08d}" in line and "fails its checksum" in line for line in lines), lines[:20]
    assert rank0(client, w["id"], "result")[-1]["steps"] == 120


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on this host's loopback: host-networked containers reach it there."""
    with moto_server() as endpoint:
        yield {**aws_env(endpoint), "BUCKET": new_bucket(endpoint)}


def test_checkpoints_go_to_s3_and_are_listed_and_fetched_from_there(
    client: Any, operator: Any, s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    env = {k: v for k, v in s3.items() if k != "BUCKET"}
    w = client.submit(
        training(30, every=10, env=env, checkpoint={"uri": f"s3://{s3['BUCKET']}/runs", "every_steps": 10})
    )
    done = client.wait(w["id"], timeout_s=240)
    assert done["state"] == "SUCCEEDED", done["message"]
    # The store is on loopback: the control plane opens it for the tenant only once the operator allows it.
    with pytest.raises(PolicyError, match="env.AWS_ENDPOINT_URL: .* inside a network"):
        client.artifacts(w["id"])
    operator.admin("PUT", "/endpoints", endpoint=env["AWS_ENDPOINT_URL"], note="the test's moto")
    listing = client.artifacts(w["id"])
    final = f"s3://{s3['BUCKET']}/runs/{w['id']}/step-00000030"
    assert listing["uri"] == f"s3://{s3['BUCKET']}/runs/{w['id']}" and listing["final_checkpoint"] == final
    assert [c["step"] for c in listing["checkpoints"] if c["complete"]] == [10, 20, 30]
    got = client.artifact_get(w["id"], "step-00000030/model.pt", tmp_path / "model.pt")
    s3c = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    stored = s3c.get_object(Bucket=s3["BUCKET"], Key=f"runs/{w['id']}/step-00000030/model.pt")["Body"].read()
    assert got.read_bytes() == stored

    from workloads.training.serve import generate, load_for_inference

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    model = load_for_inference(final)
    assert model.step == 30 and isinstance(generate(model, "import ", max_tokens=8, temperature=0), str)


# ------------------------------------------------------------------------------------------------ CLI
def cli(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "COLUMNS": "200",
        "RUNNER_HOME": str(settings.home),
        "RUNNER_SERVER_PORT": str(settings.server_port),
        "RUNNER_RAY_PORT": str(settings.ray_port),
    }
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_follow_shows_rank_0_with_progress_then_status_and_artifacts(
    cluster_settings: Settings, tmp_path: Path
) -> None:
    import yaml

    spec = tmp_path / "train.yaml"
    spec.write_text(yaml.safe_dump(training(40, every=20, log_every=10)))
    run = cli(["submit", str(spec), "--follow"], cluster_settings)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    wid = out.split()[1]
    assert "progress: step 10/40 (25%), loss " in out and "progress: step 40/40 (100%)" in out and "ETA 0s" in out
    assert "checkpoint: step 20 (interval)" in out and "result: loss " in out
    assert "training: " in out and "training[rank 1]" not in out and '{"runner"' not in out
    assert "SUCCEEDED" in out

    status = cli(["status", wid], cluster_settings)
    assert status.returncode == 0, status.stderr
    assert "progress: step 40/40 (100%)" in status.stdout
    assert f"final checkpoint: file://{cluster_settings.artifacts_dir}/local/{wid}/step-00000040" in status.stdout

    listed = cli(["artifacts", "ls", wid], cluster_settings)
    assert listed.returncode == 0, listed.stderr
    assert "step-00000040/model.pt" in listed.stdout and "complete at steps 20, 40" in listed.stdout
    got = cli(["artifacts", "get", wid, "step-00000040", str(tmp_path / "ckpt")], cluster_settings)
    assert got.returncode == 0, got.stderr
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["manifest.json", "model.pt", "trainer.pt"]
    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    assert manifest["files"]["model.pt"]["size"] == (tmp_path / "ckpt" / "model.pt").stat().st_size

    missing = cli(["artifacts", "get", wid, "step-00000041/model.pt"], cluster_settings)
    assert missing.returncode == 2 and f"runner artifacts ls {wid}" in missing.stderr
    from runner.client import Client
    from runner.core.errors import UserError

    with pytest.raises(UserError, match="bad artifact key"):
        Client.from_settings(cluster_settings).artifact_get(wid, "step-00000040/.x.tmp-1", tmp_path / "x")
