"""Train -> serve, end to end on the CPU cluster: a training job's final checkpoint, named by its
URI, is served by an inference service at POST /v1/completions through the runner's endpoint."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openai import OpenAI

from runner.settings import Settings
from tests.conftest import docker_client_or_skip, wait_for
from tests.integration.test_training import training

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


@pytest.fixture(scope="module", autouse=True)
def images(runtime_name: str) -> None:
    docker_client_or_skip()
    if runtime_name != "docker":
        pytest.skip("services publish their port through Docker; this cluster runs processes")
    from runner.images import build_images

    build_images(["training", "inference"], log=lambda _m: None)  # cached by content hash


def test_a_trained_checkpoint_is_served_at_completions_through_the_endpoint(
    cluster_settings: Settings, client: Any
) -> None:
    job = client.submit(training(40, every=20, workers=1))
    done = client.wait(job["id"], timeout_s=300)
    assert done["state"] == "SUCCEEDED", done["message"]
    result = client.get(job["id"])["replicas"][-1]["reports"]["result"]
    checkpoint = result["checkpoint"]
    assert checkpoint.startswith("file://") and checkpoint.endswith("step-00000040")

    spec: dict[str, Any] = {
        "name": "lm-serve",
        "kind": "inference",
        "image": "runner/inference:latest",
        "model": checkpoint,
        "ports": [8000],
        "resources": {"cpu": 1, "memory": "2GB"},
        "replicas": 1,
    }
    svc = client.submit(spec)
    try:
        endpoint = wait_for(
            lambda: (s := client.service(svc["id"]))["replicas"]["serving"] == 1 and s["endpoint"],
            timeout_s=240,
            what="the service to serve the checkpoint",
        )
        key = cluster_settings.api_key_path.read_text().strip()
        openai = OpenAI(base_url=endpoint, api_key=key, max_retries=3)
        wait_for(
            lambda: [m.id for m in openai.models.list().data] == [checkpoint],
            timeout_s=30,
            what="the gateway to route to the replica",
        )
        first = openai.completions.create(model=checkpoint, prompt="def ", max_tokens=12, temperature=0)
        again = openai.completions.create(model=checkpoint, prompt="def ", max_tokens=12, temperature=0)
        assert first.choices[0].text and first.choices[0].text == again.choices[0].text  # greedy: deterministic
        refused = httpx.post(
            f"{endpoint}/completions",
            json={"model": checkpoint, "prompt": "x", "max_tokens": -1},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_tokens"
    finally:
        client.cancel(svc["id"])
        wait_for(lambda: client.get(svc["id"])["state"] == "CANCELLED", timeout_s=60, what="the service to end")
