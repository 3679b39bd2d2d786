"""Fleet files: the simulated provider nodes of CPU mode, and the labels every node carries.

A fleet file describes nodes the way a provider's machine would describe itself on joining:
who provides it, where it stands, which GPUs it has. CPU mode starts each entry as a real
``ray start`` process on localhost with these labels plus ``simulated=true``, so that policy and
placement see real GPU model names while the work runs on the CPU.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runner.core.catalog import canonical_gpu_name, get_gpu, known_gpu_names
from runner.core.errors import FleetError
from runner.core.nodetable import NodeRow

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]


class FleetNode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name = Field(description="Unique node name, used as the `node` label.")
    provider: Name = Field(description="The provider organisation renting out this machine.")
    region: Name = Field(description="Region, e.g. eu-west.")
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166 alpha-2 country code.")
    gpu_model: str | None = Field(default=None, description="Catalog GPU model; none for CPU-only.")
    gpu_count: int = Field(default=0, ge=0, le=16, description="Number of GPUs of that model.")
    cpus: float = Field(default=2, gt=0, description="Logical CPUs this node offers to workloads.")
    memory_gb: float = Field(default=4, gt=0, description="Memory this node offers to workloads.")
    price_per_gpu_hour: float | None = Field(default=None, gt=0, description="Defaults to the catalog list price.")

    @field_validator("gpu_model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return canonical_gpu_name(value)
        except KeyError:
            raise ValueError(f"unknown GPU model {value!r}; known models: {', '.join(known_gpu_names())}") from None

    def gpu_price_micros(self) -> int:
        """Its stated price per GPU-hour, else the catalog list price (micro-USD)."""
        from runner.core.placement import gpu_price_micros

        return gpu_price_micros(self.gpu_model, self.price_per_gpu_hour)

    def to_row(self, *, cpu_price_micros: int = 20_000, reliability: float = 1.0, tflops: float = 0.0) -> NodeRow:
        """The node as placement sees it, active and verified (for tests, benches and dry runs)."""
        return NodeRow(
            name=self.name,
            provider=self.provider,
            region=self.region,
            country=self.country,
            gpu_model=self.gpu_model,
            gpu_count=self.gpu_count if self.gpu_model else 0,
            vram_gb=get_gpu(self.gpu_model).vram_gb if self.gpu_model else 0,
            cpus=self.cpus,
            memory_mb=int(self.memory_gb * 1024),
            gpu_price_micros=self.gpu_price_micros(),
            cpu_price_micros=cpu_price_micros,
            reliability=reliability,
            tflops=tflops,
        )

    def labels(self, *, simulated: bool) -> dict[str, str]:
        """The Ray node labels: what placement filters on and what label selectors pin to."""
        labels = {
            "node": self.name,
            "provider": self.provider,
            "region": self.region,
            "country": self.country,
            "gpu-model": self.gpu_model or "none",
            "gpu-count": str(self.gpu_count if self.gpu_model else 0),
            "vram-gb": str(get_gpu(self.gpu_model).vram_gb if self.gpu_model else 0),
            "simulated": "true" if simulated else "false",
        }
        return labels


class Fleet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: list[FleetNode] = Field(min_length=1)

    @field_validator("nodes")
    @classmethod
    def _unique_names(cls, nodes: list[FleetNode]) -> list[FleetNode]:
        seen: set[str] = set()
        for node in nodes:
            if node.name in seen:
                raise ValueError(f"duplicate node name {node.name!r}")
            seen.add(node.name)
        return nodes


def default_fleet_path() -> Path:
    return Path(str(resources.files("runner") / "data" / "fleet.yaml"))


def load_fleet(path: str | os.PathLike[str] | None = None) -> Fleet:
    """Read a fleet file (the packaged default when ``path`` is None) or raise a FleetError."""
    source = Path(path) if path else default_fleet_path()
    try:
        data = yaml.safe_load(source.read_text())
    except FileNotFoundError:
        raise FleetError(str(source), "", "file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise FleetError(str(source), "", f"invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    try:
        return Fleet.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path_str = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"]).replace(".[", "[")
        raise FleetError(str(source), path_str, first["msg"]) from None
