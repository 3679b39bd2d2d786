"""The whole path on a real multi-node CPU cluster: spec -> API -> placement on a labelled Ray
node -> that node's agent -> a real container (or process) -> logs and state back -> stored."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from runner import local
from runner.core.errors import AuthError, ConflictError, SpecError
from runner.settings import Settings
from tests.conftest import docker_client_or_skip, extra_node, kill_node, wait_for

pytestmark = pytest.mark.cluster

SMOKE = {
    "name": "smoke",
    "kind": "batch",
    "image": "runner/smoke:latest",
    "command": ["python", "-m", "workloads.smoke"],
    "resources": {"cpu": 0.5, "memory": "1GB"},
}


def smoke(**changes: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(SMOKE))
    for key, value in changes.items():
        spec[key] = value
    return spec


def containers_of(workload_id: str) -> list[Any]:
    docker = docker_client_or_skip()
    return docker.containers.list(all=True, filters={"label": [f"runner.workload={workload_id}"]}, ignore_removed=True)


def test_nodes_join_with_their_labels(client: Any) -> None:
    fleet = {"fra-h100-1", "ams-4090-1", "nyc-a100-1", "tyo-4090-1"}
    nodes = {n["name"]: n for n in client.nodes() if n["name"] in fleet}
    assert set(nodes) == fleet
    assert all(n["alive"] and n["state"] == "active" and n["verified_tflops"] > 0 for n in nodes.values())
    fra = nodes["fra-h100-1"]["labels"]
    assert fra["gpu-model"] == "H100" and fra["region"] == "eu-west" and fra["country"] == "DE"
    assert fra["simulated"] == "true" and fra["vram-gb"] == "80"
    # Simulated GPUs are Ray logical GPUs: Ray schedules them for real.
    assert nodes["nyc-a100-1"]["resources"]["GPU"] == 2


def test_cpu_mode_closes_every_nodes_and_the_heads_ray_ports_with_the_same_guard(
    cluster_settings: Settings, client: Any
) -> None:
    """CPU mode runs the guard a provider's machine runs (no CPU-mode bypass): the kernel's rules
    hold the head's ports and each node's, as ``NodePorts`` pins them, under their owners."""
    import subprocess

    from runner import node_guard
    from runner.cluster import head_ports
    from runner.core.guard import guarded_ports
    from runner.core.node_ports import NodePorts

    listing = subprocess.run(["iptables", "-S", "RUNNER-GUARD"], capture_output=True, text=True, check=True).stdout
    ray_port = cluster_settings.ray_port
    fleet = ["fra-h100-1", "ams-4090-1", "nyc-a100-1", "tyo-4090-1"]
    owners = {node_guard.owner(name, ray_port) for name in ["head", *fleet]}
    assert owners <= {w.strip('"').removeprefix("runner:") for w in listing.split() if w.startswith('"runner:')}
    closed = {(proto, p) for proto, lo, hi in guarded_ports(listing) for p in range(lo, hi + 1)}
    wanted = [*head_ports(ray_port), *(r for i in range(len(fleet)) for r in NodePorts.block(ray_port, i).ranges())]
    for lo, hi in wanted:
        assert all(("tcp", p) in closed and ("udp", p) in closed for p in range(lo, hi + 1)), (lo, hi)


def test_smoke_runs_and_its_logs_come_back(client: Any, runtime_name: str) -> None:
    w = client.submit(smoke(), source="smoke.yaml")
    done = client.wait(w["id"], timeout_s=120)
    assert done["state"] == "SUCCEEDED", done["message"]
    lines = [item["line"] for item in client.logs(w["id"])]
    result = json.loads(lines[-1])
    assert result["smoke"] == "ok" and result["device"] == "cpu"
    states = [e["state"] for e in client.get(w["id"])["events"]]
    assert states[:5] == ["PENDING", "PLACED", "STARTING", "RUNNING", "SUCCEEDED"][: len(states[:5])]
    assert states[-1] == "SUCCEEDED"
    if runtime_name == "docker":  # the finished container is removed once its logs are stored
        wait_for(lambda: containers_of(w["id"]) == [], what="container removal")


@pytest.mark.parametrize(
    ("spec_changes", "expected_node"),
    [
        ({"resources": {"cpu": 0.5, "gpu": "H100"}}, "fra-h100-1"),
        ({"resources": {"cpu": 0.5, "gpu": "A100:2"}}, "nyc-a100-1"),
        ({"placement": {"regions": ["ap-northeast"]}}, "tyo-4090-1"),
        ({"resources": {"cpu": 0.5, "gpu": "RTX4090"}, "placement": {"deny_countries": ["JP"]}}, "ams-4090-1"),
    ],
)
def test_placement_by_labels_lands_on_the_right_node(
    client: Any, runtime_name: str, spec_changes: dict[str, Any], expected_node: str
) -> None:
    spec = smoke(command=["python", "-c", "import os; print('node', os.environ['RUNNER_NODE'])"], **spec_changes)
    w = client.submit(spec)
    done = client.wait(w["id"], timeout_s=120)
    assert done["state"] == "SUCCEEDED", done["message"]
    assert done["node"] == expected_node
    assert [item["line"] for item in client.logs(w["id"])] == [f"node {expected_node}"]
    replica = client.get(w["id"])["replicas"][0]
    assert replica["node"] == expected_node


def test_agent_runs_on_the_node_it_is_named_for(cluster_settings: Settings, client: Any) -> None:
    """The label selector pins each agent actor to its own Ray node, and it answers as that node
    (signed by the key the node made at join, which the control plane's link checks)."""
    from runner import cluster
    from runner.agent import get_or_create_agent
    from runner.node_keys import control_key, node_keys
    from runner.supervisor.agent_link import AgentLink

    cluster.connect(cluster_settings.ray_address, cluster_settings.ray_token_path, cluster_settings.tls_files)
    by_name = {n.name: n.node_id for n in cluster.list_nodes() if n.alive}  # other tests' extra nodes may be gone
    assert {"fra-h100-1", "ams-4090-1", "nyc-a100-1", "tyo-4090-1"} <= set(by_name)
    for name, node_id in by_name.items():
        agent = get_or_create_agent(
            name,
            runtime=cluster_settings.runtime,
            state_dir=cluster_settings.replicas_dir,
            artifacts_dir=cluster_settings.artifacts_dir,
            workdir=cluster_settings.workdir,
        )
        keys = node_keys(cluster_settings.home / "nodes" / name / "keys.json").public()
        link = AgentLink(name, agent, keys, control_key(cluster_settings.control_key_path))
        assert link.read(link.info(), timeout_s=60)["ray_node_id"] == node_id


def test_a_workload_that_fits_nowhere_waits_with_reasons(client: Any) -> None:
    w = client.submit(smoke(resources={"gpu": "T4"}))
    waiting = wait_for(
        lambda: (g := client.get(w["id"]))["message"].startswith("no node fits") and g, what="the pending reason"
    )
    assert waiting["state"] == "PENDING"
    assert "gpu H100 not in T4" in waiting["message"]
    client.cancel(w["id"])
    assert client.wait(w["id"], timeout_s=30)["state"] == "CANCELLED"


def test_cancel_stops_the_running_container(client: Any, runtime_name: str) -> None:
    w = client.submit(smoke(env={"SMOKE_SLEEP": "120"}))
    running = client.wait(w["id"], until="running", timeout_s=120)
    assert running["state"] == "RUNNING"
    if runtime_name == "docker":
        assert [c.status for c in containers_of(w["id"])] == ["running"]
    client.cancel(w["id"])
    done = client.wait(w["id"], timeout_s=60)
    assert done["state"] == "CANCELLED"
    if runtime_name == "docker":
        wait_for(lambda: all(c.status != "running" for c in containers_of(w["id"])), what="the container to stop")


def test_a_failing_command_retries_then_fails(client: Any) -> None:
    spec = smoke(env={"SMOKE_FAIL": "1"}, retries={"max_attempts": 3, "backoff_s": 0.2})
    w = client.submit(spec)
    done = client.wait(w["id"], timeout_s=180)
    assert done["state"] == "FAILED"
    assert done["attempts"] == 3 and done["exit_code"] == 1
    detail = client.get(w["id"])
    assert [e["state"] for e in detail["events"]].count("RETRYING") == 2
    assert [r["attempt"] for r in detail["replicas"]] == [1, 2, 3]
    assert "exited with code 1" in done["message"]


def test_timeout_fails_the_workload(client: Any) -> None:
    w = client.submit(smoke(env={"SMOKE_SLEEP": "120"}, timeout="2s"))
    done = client.wait(w["id"], timeout_s=120)
    assert done["state"] == "FAILED"
    assert done["message"].startswith("timed out after 2s")


def test_a_missing_image_fails_with_a_clear_reason(client: Any, runtime_name: str) -> None:
    if runtime_name != "docker":
        pytest.skip("the process runtime has no images")
    w = client.submit(smoke(image="runner/does-not-exist:1"))
    done = client.wait(w["id"], timeout_s=60)
    assert done["state"] == "FAILED"
    assert "runner images build" in done["message"]


def test_idempotent_submit(client: Any) -> None:
    spec = smoke(command=["python", "-c", "print(1)"])
    first = client.submit(spec, idempotency_key="idem-1")
    again = client.submit(spec, idempotency_key="idem-1")
    assert again["id"] == first["id"]
    with pytest.raises(ConflictError):
        client.submit(smoke(command=["python", "-c", "print(2)"]), idempotency_key="idem-1")
    assert client.wait(first["id"], timeout_s=120)["state"] == "SUCCEEDED"


def test_bad_specs_and_bad_keys_are_refused(cluster_settings: Settings, client: Any) -> None:
    with pytest.raises(SpecError, match="resources.gpu.count"):
        client.submit(smoke(resources={"gpu": {"models": ["H100"], "count": 0}}))
    response = httpx.get(f"{cluster_settings.server_url}/v1/workloads", verify=cluster_settings.server_verify)
    assert response.status_code == 401
    from runner.client import Client

    with pytest.raises(AuthError):
        Client(cluster_settings.server_url, "rk_wrong", ca=cluster_settings.server_ca).list()


def test_server_restart_readopts_a_running_container(
    cluster_settings: Settings, client: Any, runtime_name: str
) -> None:
    w = client.submit(smoke(env={"SMOKE_SLEEP": "15"}))
    client.wait(w["id"], until="running", timeout_s=120)
    before = client.get(w["id"])["replicas"]
    assert len(before) == 1
    if runtime_name == "docker":
        [container] = containers_of(w["id"])
        started_at = container.attrs["State"]["StartedAt"]

    local.restart_server(cluster_settings, crash=True)  # SIGKILL: no chance to clean up

    if runtime_name == "docker":  # still the one container, started once, still running
        [container] = containers_of(w["id"])
        assert container.attrs["State"]["StartedAt"] == started_at
        assert container.status == "running"
    done = client.wait(w["id"], timeout_s=120)
    assert done["state"] == "SUCCEEDED", done["message"]
    after = client.get(w["id"])
    assert done["attempts"] == 1
    assert [r["key"] for r in after["replicas"]] == [before[0]["key"]]
    assert after["replicas"][0]["handle"] == before[0]["handle"]
    items = list(client.logs(w["id"]))
    # Every output line stored exactly once across the crash: line numbers 0..n-1, no gap, no repeat.
    assert [item["seq"] for item in items] == list(range(len(items)))
    assert any(item["line"].startswith("smoke: still sleeping") for item in items)
    assert json.loads(items[-1]["line"])["smoke"] == "ok"


def test_a_vanished_node_fails_the_attempt_retries_and_its_provider_is_slashed(
    cluster_settings: Settings, client: Any, operator: Any
) -> None:
    """SIGKILL a node's whole process group (as a machine that loses power): the supervisor
    marks the replica LOST and retries; with no other node in that region, the retry waits.
    The provider whose node vanished with running work is slashed; the tenant is credited."""
    with extra_node(
        cluster_settings, operator, index=9, name="lost-1", provider="flaky", region="test-lost", country="US"
    ) as node:
        wait_for(
            lambda: any(n["name"] == "lost-1" and n["state"] == "active" for n in client.nodes()),
            timeout_s=60,
            what="the extra node to join",
        )
        stake_before = _stake(operator, "flaky")
        spec = smoke(
            command=["python", "-m", "workloads.smoke"],
            env={"SMOKE_SLEEP": "300"},
            placement={"regions": ["test-lost"]},
            retries={"max_attempts": 2, "backoff_s": 0},
        )
        w = client.submit(spec)
        assert client.wait(w["id"], until="running", timeout_s=120)["node"] == "lost-1"
        kill_node(node)
        lost = wait_for(
            lambda: (g := client.get(w["id"]))["attempts"] == 1 and g["state"] in ("RETRYING", "PENDING") and g,
            timeout_s=60,
            what="the supervisor to notice the lost node",
        )
        assert lost["replicas"][0]["state"] == "LOST"
        assert any("lost on lost-1" in e["message"] for e in lost["events"])
        waiting = wait_for(
            lambda: (g := client.get(w["id"]))["message"].startswith("no node fits") and g,
            timeout_s=30,
            what="the retry to wait for a node in test-lost",
        )
        verdicts = {row["node"]: row["verdict"] for row in client.explain(w["id"])["rows"]}
        assert verdicts["lost-1"] == "node is down" and "lost-1" in waiting["message"]
        slash = operator.admin("GET", "/earnings", params={"provider": "flaky"})[0]
        assert slash["totals"]["slashed"] == 5_000_000 and _stake(operator, "flaky") == stake_before - 5_000_000
        credits = [
            line for line in client.bill()["lines"] if line["kind"] == "slash" and line["refs"]["node"] == "lost-1"
        ]
        assert [c["amount"] for c in credits] == [2_500_000]  # half the slash, once
        client.cancel(w["id"])
        assert client.wait(w["id"], timeout_s=60)["state"] == "CANCELLED"


def _stake(operator: Any, provider: str) -> int:
    return next(p["stake_micros"] for p in operator.admin("GET", "/providers") if p["id"] == provider)


def test_an_orphan_container_is_removed(cluster_settings: Settings, client: Any) -> None:
    """A container with runner's labels that the store does not expect (say, left by a node
    that came back after its work was re-placed) is removed when its node is reconciled."""
    docker = docker_client_or_skip()
    key = "w-orphan00000-r0-a1"
    docker.containers.run(
        "runner/smoke:latest",
        ["python", "-m", "workloads.smoke"],
        name=f"runner-{key}",
        detach=True,
        environment={"SMOKE_SLEEP": "300"},
        labels={
            "runner.managed": "true",
            "runner.workload": "w-orphan00000",
            "runner.replica": "0",
            "runner.attempt": "1",
            "runner.node": "ams-4090-1",
            "runner.key": key,
        },
    )
    local.restart_server(cluster_settings)  # a fresh control plane reconciles every node at once
    wait_for(lambda: containers_of("w-orphan00000") == [], timeout_s=60, what="the orphan to be removed")
