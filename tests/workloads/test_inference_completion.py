"""``POST /v1/completions`` from a real training checkpoint (RUNNER_MODEL=file://...): the
training workload trains a tiny model for a few steps, this server loads it through the
training workload's own loader and answers the official ``openai`` client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.workloads.test_inference_api import ServerThread
from workloads.inference.app import ModelServer
from workloads.inference.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]
TINY_RUN = [
    "--d-model",
    "32",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
    "--seq-len",
    "32",
    "--batch-size",
    "4",
    "--corpus-bytes",
    "50000",
    "--val-batches",
    "1",
    "--threads",
    "1",
    "--steps",
    "10",
    "--checkpoint-every",
    "10",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"file://{tmp_path_factory.mktemp('ckpt')}/w-train"
    run = subprocess.run(
        [sys.executable, "-m", "workloads.training", *TINY_RUN, "--checkpoint-uri", uri],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return uri


@pytest.fixture(scope="module")
def server(checkpoint: str) -> Iterator[ServerThread]:
    settings = replace(ServerSettings(), model=checkpoint, max_batch_size=4, max_wait_ms=5)
    with ServerThread(ModelServer(settings)) as srv:
        srv.wait_ready()
        yield srv


def test_openai_client_gets_completions_from_a_checkpoint(server: ServerThread, checkpoint: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    assert [m.id for m in client.models.list().data] == [checkpoint]
    resp = client.completions.create(model=checkpoint, prompt=["def ", "import "], max_tokens=8, temperature=0)
    assert resp.object == "text_completion" and len(resp.choices) == 2
    assert [c.index for c in resp.choices] == [0, 1]
    assert all(isinstance(c.text, str) and c.finish_reason in ("length", "stop") for c in resp.choices)
    assert resp.usage.prompt_tokens == len(b"def ") + len(b"import ")
    assert 0 < resp.usage.completion_tokens <= 16
    again = client.completions.create(model=checkpoint, prompt="def ", max_tokens=8, temperature=0)
    assert again.choices[0].text == resp.choices[0].text  # greedy is deterministic
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["task"] == "completion" and health["checkpoint_step"] == 10


def test_completion_requests_are_validated(server: ServerThread, checkpoint: str) -> None:
    url = f"{server.url}/v1/completions"
    for body, param in [
        ({"model": checkpoint}, "prompt"),
        ({"model": checkpoint, "prompt": ""}, "prompt"),
        ({"model": checkpoint, "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": checkpoint, "prompt": "x", "max_tokens": 100000}, "max_tokens"),
        ({"model": checkpoint, "prompt": "x", "stream": True}, "stream"),
        ({"model": checkpoint, "prompt": "x", "n": 2}, "n"),
        ({"model": "other", "prompt": "x"}, "model"),
    ]:
        resp = httpx.post(url, json=body)
        assert 400 <= resp.status_code < 500 and resp.json()["error"]["param"] == param, (body, resp.text)
    wrong_route = httpx.post(f"{server.url}/v1/embeddings", json={"model": checkpoint, "input": "x"})
    assert wrong_route.status_code == 404 and "completions only" in wrong_route.json()["error"]["message"]


def test_a_missing_checkpoint_fails_the_start_with_a_clear_error(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    settings = replace(ServerSettings(), model=f"file://{tmp_path}/nothing-here")
    with ServerThread(ModelServer(settings, on_fatal=failures.append)) as srv:
        from tests.conftest import wait_for

        wait_for(lambda: failures, timeout_s=60, what="the load to fail")
        assert httpx.get(f"{srv.url}/healthz").json() == {"status": "failed"}
    assert "no complete checkpoint" in str(failures[0])
