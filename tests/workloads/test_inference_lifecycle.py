"""Readiness and back-pressure over HTTP, with the real model held at chosen points.

``HeldMiniLM`` is the real all-MiniLM-L6-v2 backend whose ``load`` and ``run`` first wait for
a test's go-ahead, so "still loading" and "queue full" are states a test sets up, not races.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.workloads.test_inference_api import MODEL, ServerThread
from workloads.inference.app import ModelServer
from workloads.inference.minilm import MiniLMBackend
from workloads.inference.settings import ServerSettings


class HeldMiniLM(MiniLMBackend):
    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings)
        self.may_load = threading.Event()
        self.may_run = threading.Event()
        self.may_run.set()
        self.running = threading.Event()

    def load(self) -> None:
        assert self.may_load.wait(60), "test never let the model load"
        super().load()

    def run(self, batch: Sequence[list[int]]) -> Any:
        self.running.set()
        assert self.may_run.wait(60), "test never let the batch run"
        return super().run(batch)


@pytest.fixture()
def held() -> Iterator[tuple[ServerThread, HeldMiniLM]]:
    settings = replace(ServerSettings(), max_batch_size=1, max_wait_ms=0, max_queue=2, model_workers=1)
    model_server = ModelServer(settings, backend_factory=HeldMiniLM)
    with ServerThread(model_server) as srv:
        yield srv, model_server.backend  # type: ignore[misc]
        model_server.backend.may_load.set()  # type: ignore[attr-defined]
        model_server.backend.may_run.set()  # type: ignore[attr-defined]


def test_health_is_503_until_the_model_is_loaded_and_warm(held: tuple[ServerThread, HeldMiniLM]) -> None:
    srv, backend = held
    health = httpx.get(f"{srv.url}/healthz")
    assert health.status_code == 503 and health.json() == {"status": "loading"}
    early = httpx.post(f"{srv.url}/v1/embeddings", json={"input": "x", "model": MODEL})
    assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
    assert early.headers["retry-after"] == "1"
    assert "inference_ready 0.0" in httpx.get(f"{srv.url}/metrics").text
    backend.may_load.set()
    srv.wait_ready()
    assert httpx.post(f"{srv.url}/v1/embeddings", json={"input": "x", "model": MODEL}).status_code == 200


def test_a_full_queue_answers_429_in_openais_shape(held: tuple[ServerThread, HeldMiniLM]) -> None:
    import openai

    srv, backend = held
    backend.may_load.set()
    srv.wait_ready()
    backend.may_run.clear()
    backend.running.clear()
    url = f"{srv.url}/v1/embeddings"
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(httpx.post, url, json={"input": "held in the model", "model": MODEL}, timeout=60)
        assert backend.running.wait(30)
        queued = pool.submit(httpx.post, url, json={"input": ["queued one", "queued two"], "model": MODEL}, timeout=60)
        wait_for(lambda: "inference_queue_depth 2.0" in httpx.get(f"{srv.url}/metrics").text, what="two items queued")
        refused = httpx.post(url, json={"input": "one too many", "model": MODEL})
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "queue_full"
        assert "takes at most 2" in error["message"] and refused.headers["retry-after"] == "1"
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError, match="queue"):
            client.embeddings.create(model=MODEL, input="also refused")
        backend.may_run.set()
        assert first.result().status_code == 200
        assert len(queued.result().json()["data"]) == 2
    metrics = httpx.get(f"{srv.url}/metrics").text
    assert 'inference_requests_total{endpoint="embeddings",status="429"} 2.0' in metrics
