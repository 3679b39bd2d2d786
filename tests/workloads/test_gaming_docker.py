"""The gaming image for real: built offline, run hardened as the Docker runtime runs replicas
(all capabilities dropped, no-new-privileges, an init, uid 1000), its port published on
127.0.0.1; the page, health and metrics answer, and a stop is an orderly end.

Skips without a Docker engine (a failure under RUNNER_NO_SKIP=1, as in CI). The first build
downloads the image's wheels once (through pip's settings); later runs reuse the cached image.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from runner.images import build_images
from tests.conftest import docker_client_or_skip, wait_for
from workloads.common.report import parse_report

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


def test_gaming_image_serves_the_page_and_stops_cleanly() -> None:
    client = docker_client_or_skip()
    tag = build_images(["gaming"], docker_client=client, log=lambda _m: None)["gaming"]
    container: Any = client.containers.run(
        tag,
        detach=True,
        environment={"PORT": "8000", "RUNNER_RESOLUTION": "640x360", "RUNNER_IDLE_TIMEOUT_S": "120"},
        ports={"8000/tcp": ("127.0.0.1", None)},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        init=True,
        labels={"runner.test": "gaming"},
    )
    try:

        def base_url() -> str | None:
            container.reload()
            binds = (container.attrs["NetworkSettings"]["Ports"] or {}).get("8000/tcp")
            return f"http://127.0.0.1:{binds[0]['HostPort']}" if binds else None

        url = wait_for(base_url, timeout_s=30, what="the published port")

        def healthy() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout_s=30, what="/healthz 200 from the container")
        page = httpx.get(url + "/", timeout=5)
        assert page.status_code == 200 and '<canvas id="screen"' in page.text
        assert "createImageBitmap" in httpx.get(url + "/client.js", timeout=5).text
        metrics = httpx.get(url + "/metrics", timeout=5).json()
        assert metrics["resolution"] == "640x360" and metrics["frames"] > 0
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "1000"

        container.stop(timeout=10)  # SIGTERM, then SIGKILL after 10 s: must not be needed
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0
        reports = [
            r for line in container.logs(stdout=True, stderr=False).decode().splitlines() if (r := parse_report(line))
        ]
        assert (reports[0]["runner"], reports[0]["event"]) == ("session", "ready")
        assert reports[-1]["event"] == "ended" and reports[-1]["reason"] == "stopped"
    finally:
        container.remove(force=True)
