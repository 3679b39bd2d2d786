"""What a workload asks of the nodes its replicas run on: the one input of placement and its rules.

A leaf module (pure: dataclasses and the money conversion only), so that the rules
(``runner/core/rules.py``) and the placer (``runner/core/placement.py``) both read it without importing
each other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from runner.core.ledger import to_micros


@dataclass(frozen=True)
class Demand:
    """What a workload asks of the nodes its replicas run on, read off its spec."""

    gpu_models: tuple[str, ...] = ()
    gpus: int = 0
    min_vram_gb: int | None = None
    cpu: float = 1.0
    memory_mb: int = 0
    regions: tuple[str, ...] = ()
    deny_regions: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    deny_countries: tuple[str, ...] = ()
    max_price_micros: int | None = None  # per GPU-hour
    min_reliability: float | None = None
    near: str | None = None
    latency_budget_ms: float | None = None
    replicas: int = 1
    distinct_nodes: bool = False
    spread_providers: bool = False

    @classmethod
    def from_spec(cls, spec: Any, replicas: int | None = None) -> "Demand":
        """A spec's demand; ``replicas`` defaults to what one attempt of its kind runs."""
        res, pl, gpu = spec.resources, spec.placement, spec.resources.gpu
        kind = spec.kind
        count = (
            replicas
            if replicas is not None
            else {
                "training": getattr(spec, "workers", 1),
                "batch": getattr(spec, "replicas", 1),
                "inference": getattr(getattr(spec, "replicas", None), "min", 1),
            }.get(kind, 1)
        )
        return cls(
            gpu_models=tuple(gpu.models) if gpu else (),
            gpus=gpu.count if gpu else 0,
            min_vram_gb=gpu.min_vram_gb if gpu else None,
            cpu=res.cpu,
            memory_mb=res.memory or 0,
            regions=tuple(pl.regions),
            deny_regions=tuple(pl.deny_regions),
            countries=tuple(pl.countries),
            deny_countries=tuple(pl.deny_countries),
            max_price_micros=to_micros(pl.max_price_per_gpu_hour) if pl.max_price_per_gpu_hour else None,
            min_reliability=pl.min_reliability,
            near=getattr(spec, "near", None),
            latency_budget_ms=getattr(spec, "latency_budget_ms", None) if getattr(spec, "near", None) else None,
            replicas=count,
            distinct_nodes=kind in ("training", "inference"),
            spread_providers=pl.spread_providers,
        )

    def static_key(self) -> tuple[Any, ...]:
        """The fields the static rules and the score read: one equivalence class per value."""
        return (
            self.gpu_models,
            self.gpus > 0,
            self.min_vram_gb,
            self.regions,
            self.deny_regions,
            self.countries,
            self.deny_countries,
            self.max_price_micros,
            self.min_reliability,
            self.near,
            self.latency_budget_ms,
        )

    def one(self) -> "Demand":
        """The same demand for a single replica."""
        return replace(self, replicas=1)

    def region_mismatch(self, region: str) -> bool:
        """True when the spec lists allowed regions and ``region`` is not one of them."""
        return bool(self.regions) and region not in self.regions
