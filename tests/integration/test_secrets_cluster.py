"""A secret on the real cluster: the replica's process gets the value, the stored logs show its
name, and the engine of the machine that runs it holds it (what a provider can see, as the
README says). Issue 15, point 9."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import docker_client_or_skip, wait_for
from tests.integration.test_workloads import smoke

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def test_a_replica_gets_its_secret_and_its_logs_show_only_the_name(client: Any) -> None:
    value = f"tok-{uuid.uuid4().hex}"
    client.set_secret("ci-token", value)
    script = 'echo "token is $TOKEN"; echo "length ${#TOKEN}"; sleep 60'
    w = client.submit(smoke(secrets={"TOKEN": "ci-token"}, command=["sh", "-c", script]))
    try:
        lines = wait_for(
            lambda: (got := [item["line"] for item in client.logs(w["id"])]) and len(got) >= 2 and got,
            timeout_s=180,
            what="the replica's two lines",
        )
        assert lines[:2] == ["token is [secret ci-token]", f"length {len(value)}"], lines
        assert value not in str(client.get(w["id"]))
        # The provider's engine holds it: it runs the container.
        [container] = docker_client_or_skip().containers.list(filters={"label": f"runner.workload={w['id']}"})
        assert f"TOKEN={value}" in container.attrs["Config"]["Env"]
    finally:
        client.cancel(w["id"])
        client.wait(w["id"], timeout_s=60)
        client.delete_secret("ci-token")
