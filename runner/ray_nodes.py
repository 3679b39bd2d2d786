"""A provider node as the control plane sees it: plain data shared by the Ray edge and placement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Set by `runner node join` in its Ray node's environment (which the node's agent inherits): the
#: address this machine's replicas are published on, its own or ``--public-address`` where NAT puts
#: another in front. A CPU-mode node has none: it publishes on loopback.
PUBLIC_ADDRESS_ENV = "RUNNER_PUBLIC_ADDRESS"
#: Set the same way: how many GB of pulled images this machine's engine keeps
#: (``runner node join --image-cache-gb``); past it the least recently used go. None set: the default.
IMAGE_CACHE_GB_ENV = "RUNNER_IMAGE_CACHE_GB"


@dataclass(frozen=True)
class RayNode:
    name: str
    node_id: str
    alive: bool
    labels: dict[str, str]
    resources: dict[str, float] = field(default_factory=dict)
    address: str = ""

    @property
    def gpu_model(self) -> str | None:
        model = self.labels.get("gpu-model", "none")
        return None if model == "none" else model

    @property
    def gpu_count(self) -> int:
        return int(self.labels.get("gpu-count", "0"))

    @property
    def vram_gb(self) -> int:
        return int(self.labels.get("vram-gb", "0"))

    @property
    def region(self) -> str:
        return self.labels.get("region", "")

    @property
    def country(self) -> str:
        return self.labels.get("country", "")

    @property
    def provider(self) -> str:
        return self.labels.get("provider", "")

    @property
    def simulated(self) -> bool:
        return self.labels.get("simulated") == "true"

    @property
    def cpus(self) -> float:
        return float(self.resources.get("CPU", 0.0))

    @property
    def memory_mb(self) -> int:
        return int(self.resources.get("memory", 0.0) // (1024 * 1024))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node_id": self.node_id,
            "alive": self.alive,
            "labels": self.labels,
            "resources": self.resources,
            "address": self.address,
        }
