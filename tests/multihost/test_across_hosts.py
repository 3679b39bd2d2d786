"""Workloads across hosts: a head on the harness's network (`runner up --advertise`) and
provider hosts, each a namespace with its own engine, joined with `runner node join`, on the
emulated WAN (each pair of hosts its regions' round trip apart) with the network's S3 store."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.network import Network
from harness.runner_net import Head, StoreFlags, join, running_head
from tests.conftest import free_ports, wait_for
from tests.integration.test_training import training
from tests.integration.test_workloads import smoke
from tests.support.s3 import moto_iam_server

pytestmark = [pytest.mark.multihost, pytest.mark.timeout(600)]


#: name -> (provider, region, country): two hosts in eu-west, one in ap-northeast.
HOSTS = {
    "host-a": ("barn-a", "eu-west", "DE"),
    "host-b": ("barn-b", "ap-northeast", "JP"),
    "host-c": ("barn-c", "eu-west", "NL"),
}


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    root = Path(tempfile.mkdtemp(prefix="runner-mh-"))
    # On the emulated WAN: host-b is the regions table's 230 ms from the head and the others.
    with Network(
        root,
        list(HOSTS),
        registry_port=free_ports()[0],
        wan=True,
        regions={name: region for name, (_, region, _) in HOSTS.items()},
    ) as network:
        yield network


@pytest.fixture(scope="module")
def store(net: Network) -> Iterator[StoreFlags]:
    """The network's S3 store on the head's address, checking credentials and policies as a real
    one does (moto's server with its IAM checks on): every host reaches it over its link."""
    with moto_iam_server(ip_address=net.head_address) as (endpoint, admin):
        yield StoreFlags(uri="s3://network-artifacts", endpoint=endpoint, admin=admin)


@pytest.fixture(scope="module")
def head(net: Network, store: StoreFlags) -> Iterator[Head]:
    images = ["smoke", "training", "inference"]
    with running_head(net, HOSTS, ports=free_ports(), images=images, store=store, memory_gb=2) as h:
        yield h


def engine_containers(net: Network, host: str, workload_id: str) -> list[Any]:
    client = net.hosts[host].docker()
    return client.containers.list(all=True, filters={"label": [f"runner.workload={workload_id}"]})


def test_the_head_prints_how_to_join_and_the_token_comes_with_the_exact_command(head: Head, net: Network) -> None:
    from harness.runner_net import runner_cli
    from runner.core.certs import ca_pin

    url = f"https://{net.head_address}:{head.settings.server_port}"
    pin = head.settings.home.joinpath("tls", "ca.pem").read_bytes()
    assert f"head up on {net.head_address}" in head.up_output
    assert f"runner node join --head {url} --token TOKEN --provider PROVIDER" in head.up_output
    # Every join command pins the network's CA: a machine sent to another head stops there.
    assert f"--ca-cert-hash {ca_pin(pin)}" in head.up_output
    issued = runner_cli(
        ["admin", "token", "issue", "barn-a", "--region", "eu-west", "--country", "de"],
        head.settings.home,
        server_port=head.settings.server_port,
        ray_port=head.settings.ray_port,
    ).stdout
    token = issued.strip().splitlines()[-1]
    # The machine it approves (the country as ISO writes it) is in the command: it may join as nothing else.
    assert f"runner node join --head {url} --token {token} --provider barn-a --region eu-west --country DE" in issued
    assert f"--ca-cert-hash {ca_pin(pin)}" in issued


def test_the_hosts_join_with_their_own_addresses(head: Head, net: Network) -> None:
    nodes = {n["name"]: n for n in head.operator.nodes()}
    for name in HOSTS:
        assert nodes[name]["state"] == "active" and nodes[name]["alive"]
        assert nodes[name]["address"] == net.hosts[name].address, nodes[name]


def test_a_batch_job_runs_on_a_remote_host_and_its_logs_come_back_through_the_head(head: Head, net: Network) -> None:
    w = head.tenant.submit(smoke(name="remote-smoke", placement={"regions": ["ap-northeast"]}))
    # Its first image on that host comes from the head's registry, 230 ms away: the replica is
    # PULLING, with progress, and neither started nor billed.
    pulling = wait_for(
        lambda: next(
            (r for r in head.tenant.get(w["id"])["replicas"] if r["state"] == "PULLING" and r["pull_done_bytes"] > 0),
            None,
        ),
        timeout_s=120,
        what="the replica PULLING with progress",
    )
    assert 0 < pulling["pull_done_bytes"] <= pulling["pull_total_bytes"] and pulling["started_at"] is None
    assert pulling["metered_s"] in (None, 0)
    done = head.tenant.wait(w["id"], timeout_s=240)
    assert done["state"] == "SUCCEEDED", done["message"]
    replicas = head.tenant.get(w["id"])["replicas"]
    assert [r["node"] for r in replicas] == ["host-b"]
    # The host's own engine ran it (pulled from the head's registry on first use); the head's
    # engine and the other host's never saw it. The engine's own events, not the server's record:
    events = list(
        net.hosts["host-b"]
        .docker()
        .events(
            decode=True, since=0, until=int(done["finished_at"]) + 5, filters={"label": f"runner.workload={w['id']}"}
        )
    )
    actions = {e["Action"] for e in events}
    assert {"create", "start", "die"} <= actions, actions
    # Billed from the container's own start, not the pull's: the engine's start and die bound it.
    at = {e["Action"]: e["timeNano"] / 1e9 for e in events}
    assert replicas[0]["metered_s"] <= at["die"] - at["start"] + 1.0, (replicas[0]["metered_s"], at)
    assert engine_containers(net, "host-a", w["id"]) == []
    import docker

    assert docker.from_env().containers.list(all=True, filters={"label": f"runner.workload={w['id']}"}) == []
    lines = [item["line"] for item in head.tenant.logs(w["id"])]
    assert any("smoke: torch" in line for line in lines), lines
    assert any('"smoke": "ok"' in line for line in lines), lines


def test_a_service_with_replicas_on_two_hosts_answers_through_the_heads_gateway(head: Head, net: Network) -> None:
    from openai import OpenAI

    spec = {
        "kind": "inference",
        "name": "mh-embed",
        "image": "runner/inference:latest",
        "ports": [8000],
        "resources": {"cpu": 1, "memory": "1GB"},
        "replicas": 2,
        "placement": {"spread_providers": True},
    }
    svc = head.tenant.submit(spec)
    try:
        view = wait_for(
            lambda: (v := head.tenant.service(svc["id"]))["replicas"]["serving"] == 2 and v,
            timeout_s=300,
            what="two replicas serving",
        )
        members = [m for m in view["members"] if m["serving"]]
        assert len({m["node"] for m in members}) == 2
        for m in members:  # published on the host's own address, where the head's gateway reaches it
            assert m["ports"]["8000/tcp"].startswith(net.hosts[m["node"]].address + ":"), m
        assert view["endpoint"].startswith(f"http://{net.head_address}:")
        client = OpenAI(
            base_url=view["endpoint"], api_key=head.settings.api_key_path.read_text().strip(), max_retries=3
        )
        wait_for(lambda: [m.id for m in client.models.list().data], timeout_s=60, what="the gateway's routes")
        for _ in range(8):  # spread over both replicas by the gateway's least-in-flight routing
            out = client.embeddings.create(model="all-MiniLM-L6-v2", input=["a GPU near you", "rented by the second"])
            assert len(out.data) == 2 and len(out.data[0].embedding) == 384
    finally:
        head.tenant.cancel(svc["id"])
        wait_for(lambda: head.tenant.get(svc["id"])["state"] == "CANCELLED", timeout_s=60, what="the service to end")


def test_a_file_checkpoint_across_hosts_and_another_tenants_prefix_are_refused_at_submit(head: Head) -> None:
    """On separate machines a file:// folder is a different folder on each: refused before it runs.
    And a tenant that names another's prefix of the network's store (to read its checkpoints, or
    to serve them) is refused too."""
    from runner.core.errors import PolicyError, UserError

    before = {w["id"] for w in head.tenant.list(limit=1000)}
    spec = {"kind": "training", "name": "t", "image": "runner/training:latest", "workers": 2}
    for uri in ("s3://network-artifacts/tenants/someone-else/w-1/", "s3://network-artifacts/"):
        with pytest.raises(PolicyError, match="checkpoint.uri s3://network-artifacts/.* outside this tenant's prefix"):
            head.tenant.submit({**spec, "checkpoint": {"uri": uri}})
    with pytest.raises(PolicyError, match="model s3://network-artifacts/tenants/someone-else/.* outside"):
        head.tenant.submit(
            {
                "kind": "inference",
                "name": "s",
                "image": "runner/inference:latest",
                "ports": [8000],
                "model": "s3://network-artifacts/tenants/someone-else/w-1/step-00000010",
            }
        )
    with pytest.raises(UserError, match="checkpoint.uri file://"):
        head.tenant.submit({**spec, "checkpoint": {"uri": head.settings.artifacts_dir.as_uri() + "/local/x"}})
    with pytest.raises(UserError, match="model file://.* providers' machines"):
        head.tenant.submit(
            {
                "kind": "inference",
                "name": "s",
                "image": "runner/inference:latest",
                "ports": [8000],
                "model": head.settings.artifacts_dir.as_uri() + "/local/w-1/step-00000010",
            }
        )
    assert {w["id"] for w in head.tenant.list(limit=1000)} == before


def latest(head: Head, workload_id: str, kind: str) -> dict[str, Any]:
    reps = sorted((r for r in head.tenant.get(workload_id)["replicas"] if r["index"] == 0), key=lambda r: -r["attempt"])
    return {**((reps[0]["reports"] or {}).get(kind) or {}), "attempt": reps[0]["attempt"]} if reps else {}


def s3_as(store: StoreFlags, key_id: str, secret: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


def container_store_key(net: Network, host: str, workload_id: str, attempt: int) -> tuple[str, str]:
    """The store credential a replica's container was given, as that host's engine holds it (what
    the provider of that machine can read)."""
    (container,) = [c for c in engine_containers(net, host, workload_id) if c.labels["runner.attempt"] == str(attempt)]
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    return env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]


def test_a_gang_on_two_hosts_resumes_on_others_when_a_link_is_cut_and_nothing_runs_twice(
    head: Head, net: Network, store: StoreFlags
) -> None:
    import botocore.exceptions

    every = 20
    # No checkpoint.uri, no credential: the network's store, with a credential of the gang's own.
    w = head.tenant.submit(
        training(
            100_000,
            every=every,
            log_every=5,
            checkpoint={"every_steps": every},
            retries={"max_attempts": 3, "backoff_s": 0},
        )
    )
    assert head.tenant.wait(w["id"], until="running", timeout_s=240)["state"] == "RUNNING"
    wait_for(
        lambda: latest(head, w["id"], "checkpoint").get("step", 0) >= 2 * every,
        timeout_s=240,
        what="two checkpoints on S3",
    )
    first = {r["index"]: r["node"] for r in head.tenant.get(w["id"])["replicas"]}
    assert len(set(first.values())) == 2  # two hosts, rendezvousing over the namespaces' network
    victim = first[1]
    stolen = container_store_key(net, victim, w["id"], attempt=1)  # what the victim's provider can read
    assert stolen[0] != store.admin["access_key_id"]
    seen = latest(head, w["id"], "progress")["step"]
    cut_at = time.time()
    net.hosts[victim].link.cut()
    try:
        resumed = wait_for(
            lambda: (r := latest(head, w["id"], "resume")).get("attempt", 0) >= 2 and "step" in r and r,
            timeout_s=120,
            what="the gang to resume on other hosts",
        )
        wait_for(
            lambda: latest(head, w["id"], "progress").get("step", 0) > resumed["step"],
            timeout_s=120,
            what="progress after the resume",
        )
        detail = head.tenant.get(w["id"])
        second = {r["node"] for r in detail["replicas"] if r["attempt"] == resumed["attempt"]}
        assert second == set(HOSTS) - {victim}, detail["replicas"]
        assert resumed["step"] >= seen - every and resumed["step"] % every == 0  # at most one interval lost
        tenant_prefix = f"{store.uri}/tenants/{w['tenant']}/{w['id']}/"
        assert resumed["uri"].startswith(tenant_prefix), resumed
        # The cut-off host stopped its own replica once its head went silent (its lease), though
        # nobody could tell it to: its own engine says so.
        cut_off = net.hosts[victim].docker()
        wait_for(
            lambda: not cut_off.containers.list(filters={"label": f"runner.workload={w['id']}"}),
            timeout_s=30,
            what="the cut-off host to stop its replica",
        )
    finally:
        net.hosts[victim].link.restore()

    # The cut-off attempt's key is fenced: even from a machine that still reaches the store (here,
    # this one), it writes nothing more. The store itself refuses it.
    prefix = f"tenants/{w['tenant']}/{w['id']}/"
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):
        s3_as(store, *stolen).put_object(
            Bucket="network-artifacts", Key=prefix + "step-99999999/manifest.json", Body=b"{}"
        )
    # No checkpoint was written by the cut-off gang after the cut: every manifest saved since is
    # the new attempt's (the S3 store's own times and the manifests' writer), read as the admin.
    s3c = s3_as(store, store.admin["access_key_id"], store.admin["secret_access_key"])
    objects = s3c.list_objects_v2(Bucket="network-artifacts", Prefix=prefix)["Contents"]
    for obj in objects:
        if obj["Key"].endswith("/manifest.json") and obj["LastModified"].timestamp() > cut_at + 1:
            manifest = json.loads(s3c.get_object(Bucket="network-artifacts", Key=obj["Key"])["Body"].read())
            assert manifest["meta"]["attempt"] >= resumed["attempt"], (obj["Key"], manifest["meta"])
    # The tenant lists its artifacts through the head (which reads the store as its admin).
    listed = head.tenant.artifacts(w["id"])
    assert listed["uri"] == tenant_prefix.rstrip("/") and any(c["complete"] for c in listed["checkpoints"]), listed
    current = container_store_key(net, next(iter(second)), w["id"], attempt=resumed["attempt"])
    head.tenant.cancel(w["id"])
    assert head.tenant.wait(w["id"], timeout_s=60)["state"] == "CANCELLED"
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):  # ended: every key revoked
        s3_as(store, *current).list_objects_v2(Bucket="network-artifacts", Prefix=prefix)

    # Every replica ran once, in one container, on one host: the engines' own records.
    starts: dict[str, list[str]] = {}
    for name in HOSTS:
        for event in (
            net.hosts[name]
            .docker()
            .events(
                decode=True,
                since=int(cut_at) - 600,
                until=int(time.time()) + 1,
                filters={"label": f"runner.workload={w['id']}", "event": "start"},
            )
        ):
            starts.setdefault(event["Actor"]["Attributes"]["runner.key"], []).append(name)
    assert starts and all(len(hosts) == 1 for hosts in starts.values()), starts

    # The link is back: the victim's Ray node learns it was declared dead and leaves; its machine
    # joins again with a new token, and nothing of the old attempt comes back with it.
    provider, region, country = HOSTS[victim]
    wait_for(lambda: head.joined[victim].poll() is not None, timeout_s=120, what="the cut-off node to leave")
    # Its first tries may be declared dead while the head's links to its address still back off
    # from the node lost there; `runner node join` starts it again (runner.join.start_again_in).
    join(head, net.hosts[victim], provider=provider, region=region, country=country, memory_gb=2, timeout_s=240)
    assert not net.hosts[victim].docker().containers.list(all=True, filters={"label": f"runner.workload={w['id']}"})
