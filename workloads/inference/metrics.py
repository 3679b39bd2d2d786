"""Prometheus metrics of one server, plus the windowed figures of its report lines.

Scraped at ``GET /metrics`` (what a gateway or autoscaler reads):

- ``inference_requests_total{endpoint,status}``: requests answered, by HTTP status;
- ``inference_request_seconds{endpoint}``: request latency histogram (HTTP in to HTTP out);
- ``inference_items_total{endpoint}``: inputs processed; items/s is ``rate()`` of it;
- ``inference_batch_size``: items per model batch (histogram); ``inference_batch_seconds``;
- ``inference_queue_depth``: items waiting for a batch; ``inference_in_flight_items``;
- ``inference_ready``: 1 once the model is loaded and warm, 0 while loading or draining.

Each server has its own registry (no global state), so tests can run several in one process.
The window half gives ``{"runner": "metrics"}`` lines over the last report interval, which the
runner shows per replica without scraping anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,  # noqa: F401  (re-exported for the app)
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
#: Latencies kept per report window; past it the window's percentiles use the first ones only.
WINDOW_SAMPLES = 100_000


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "inference_requests", "Requests answered, by endpoint and HTTP status.", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "inference_request_seconds",
            "Request latency, HTTP in to HTTP out.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.items = Counter("inference_items", "Inputs processed (sentences, prompts).", ["endpoint"], registry=r)
        self.batch_size = Histogram("inference_batch_size", "Items per model batch.", buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram(
            "inference_batch_seconds", "Model time per batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("inference_queue_depth", "Items waiting for a batch.", registry=r)
        self.in_flight = Gauge("inference_in_flight_items", "Items in a running batch.", registry=r)
        self.ready = Gauge("inference_ready", "1 when the model is loaded and warm, else 0.", registry=r)
        self.model_info = Gauge(
            "inference_model_info", "The served model (value is always 1).", ["model", "device"], registry=r
        )
        self._children: dict[tuple[str, int], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._item_children: dict[str, Any] = {}
        self._window_start = time.monotonic()
        self._window: dict[str, Any] = self._empty_window()

    @staticmethod
    def _empty_window() -> dict[str, Any]:
        return {"requests": 0, "errors": 0, "items": 0, "batches": 0, "batch_items": 0, "latencies": []}

    def set_model(self, model: str, device: str) -> None:
        self.model_info.labels(model, device).set(1)

    def watch(self, depth: Callable[[], float], in_flight: Callable[[], float]) -> None:
        """Read the queue gauges from the batcher at scrape time (no bookkeeping per request)."""
        self.queue_depth.set_function(depth)
        self.in_flight.set_function(in_flight)

    def observe_request(self, endpoint: str, status: int, seconds: float, items: int) -> None:
        """One answered request (cached label children: this is on every request's path)."""
        key = (endpoint, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(endpoint, str(status))
        child.inc()
        lat = self._latency_children.get(endpoint)
        if lat is None:
            lat = self._latency_children[endpoint] = self.latency.labels(endpoint)
        lat.observe(seconds)
        w = self._window
        w["requests"] += 1
        if status >= 400:
            w["errors"] += 1
        elif items:
            counter = self._item_children.get(endpoint)
            if counter is None:
                counter = self._item_children[endpoint] = self.items.labels(endpoint)
            counter.inc(items)
            w["items"] += items
            if len(w["latencies"]) < WINDOW_SAMPLES:
                w["latencies"].append(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self._window["batches"] += 1
        self._window["batch_items"] += size

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def window_report(self, queue_depth: int) -> dict[str, Any]:
        """Figures since the last call (then reset): what a ``metrics`` report line carries."""
        now = time.monotonic()
        w, self._window = self._window, self._empty_window()
        span = max(now - self._window_start, 1e-9)
        self._window_start = now
        p50, p99 = percentile(w["latencies"], 50), percentile(w["latencies"], 99)
        return {
            "window_s": round(span, 2),
            "requests_per_s": round(w["requests"] / span, 2),
            "items_per_s": round(w["items"] / span, 2),
            "errors": w["errors"],
            "batch_size_mean": round(w["batch_items"] / w["batches"], 2) if w["batches"] else None,
            "latency_ms_p50": round(p50 * 1000, 2) if p50 is not None else None,
            "latency_ms_p99": round(p99 * 1000, 2) if p99 is not None else None,
            "queue_depth": queue_depth,
        }
