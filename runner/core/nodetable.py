"""The market's view of the fleet: one row per node, and the same rows as numpy columns.

``NodeRow`` is plain data the control plane assembles from two sources: Ray (is the node alive,
what resources does it offer) and the node registry (provider and its KYC, lifecycle state,
price, verified benchmark, reliability). ``NodeTable`` turns a list of rows into columns once,
so that placement can test a rule against 100,000 nodes in one vector operation, and keeps the
load placed on each node in mutable columns that placement updates as it commits replicas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from runner.core.catalog import CATALOG
from runner.core.policy import KYC, NodeState

GPU_MODELS: tuple[str, ...] = tuple(CATALOG)
_GPU_INDEX = {name: i for i, name in enumerate(GPU_MODELS)}
_STATES: tuple[NodeState, ...] = tuple(NodeState)


@dataclass(frozen=True)
class NodeRow:
    """One node as placement sees it. Prices are micro-USD per GPU-hour and per core-hour."""

    name: str
    provider: str
    region: str
    country: str
    gpu_model: str | None = None
    gpu_count: int = 0
    vram_gb: int = 0
    cpus: float = 0.0
    memory_mb: int = 0
    alive: bool = True
    state: NodeState = NodeState.ACTIVE
    provider_kyc: KYC = KYC.VERIFIED
    gpu_price_micros: int = 0
    cpu_price_micros: int = 0
    reliability: float = 1.0
    tflops: float = 0.0


@dataclass(frozen=True)
class Load:
    """What is already placed on a node and not finished."""

    cpu: float = 0.0
    gpus: int = 0
    memory_mb: int = 0
    replicas: int = 0

    def plus(self, cpu: float, gpus: int, memory_mb: int) -> "Load":
        return Load(self.cpu + cpu, self.gpus + gpus, self.memory_mb + memory_mb, self.replicas + 1)


class Vocab:
    """Strings to small integers, so that set membership is ``np.isin`` on integer columns."""

    def __init__(self, values: Iterable[str]) -> None:
        self.names: list[str] = sorted(set(values))
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}

    def codes(self, values: Iterable[str]) -> np.ndarray:
        """Codes of the values this vocabulary knows; unknown values are simply absent."""
        return np.array([self.index[v] for v in values if v in self.index], dtype=np.int32)

    def lut(self, values: Iterable[str]) -> np.ndarray:
        """A lookup table: ``lut[column]`` is True where the column's value is in ``values``
        (one gather, much faster than ``np.isin`` on a large column)."""
        table = np.zeros(max(len(self.names), 1), dtype=bool)
        table[self.codes(values)] = True
        return table


class NodeTable:
    """Columns of a fleet. Static columns are read-only; ``used_*`` change as replicas are placed."""

    def __init__(self, rows: Sequence[NodeRow], loads: Mapping[str, Load] | None = None) -> None:
        loads = loads or {}
        self.rows = list(rows)
        self.names = [r.name for r in self.rows]
        self.position = {name: i for i, name in enumerate(self.names)}
        self.providers = Vocab(r.provider for r in self.rows)
        self.regions = Vocab(r.region for r in self.rows)
        self.countries = Vocab(r.country for r in self.rows)

        def col(values: Iterable[object], dtype: type) -> np.ndarray:
            return np.fromiter(values, dtype=dtype, count=len(self.rows))

        self.alive = col((r.alive for r in self.rows), bool)
        self.state = col((_STATES.index(r.state) for r in self.rows), np.int8)
        self.provider_ok = col((r.provider_kyc is KYC.VERIFIED for r in self.rows), bool)
        self.provider = col((self.providers.index[r.provider] for r in self.rows), np.int32)
        self.region = col((self.regions.index[r.region] for r in self.rows), np.int32)
        self.country = col((self.countries.index[r.country] for r in self.rows), np.int32)
        self.gpu = col((_GPU_INDEX.get(r.gpu_model or "", -1) for r in self.rows), np.int16)
        self.restricted = col((bool(r.gpu_model) and CATALOG[r.gpu_model].restricted for r in self.rows), bool)
        self.gpu_count = col((r.gpu_count if r.gpu_model else 0 for r in self.rows), np.int32)
        self.vram_gb = col((r.vram_gb for r in self.rows), np.int32)
        self.cpus = col((r.cpus for r in self.rows), np.float64)
        self.memory_mb = col((r.memory_mb for r in self.rows), np.int64)
        self.gpu_price = col((r.gpu_price_micros for r in self.rows), np.int64)
        self.cpu_price = col((r.cpu_price_micros for r in self.rows), np.int64)
        self.reliability = col((r.reliability for r in self.rows), np.float64)
        self.tflops = col((r.tflops for r in self.rows), np.float64)
        self.used_cpu = col((loads.get(n, Load()).cpu for n in self.names), np.float64)
        self.used_gpus = col((loads.get(n, Load()).gpus for n in self.names), np.int32)
        self.used_memory = col((loads.get(n, Load()).memory_mb for n in self.names), np.int64)
        self.used_replicas = col((loads.get(n, Load()).replicas for n in self.names), np.int32)
        #: Node indices per GPU model code: a GPU workload only looks at nodes with its models.
        order = np.argsort(self.gpu, kind="stable")
        bounds = np.searchsorted(self.gpu[order], np.arange(-1, len(GPU_MODELS) + 1))
        self.by_gpu = {
            code: np.sort(order[bounds[k] : bounds[k + 1]]) for k, code in enumerate(range(-1, len(GPU_MODELS)))
        }

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def state_code(state: NodeState) -> int:
        return _STATES.index(state)

    @staticmethod
    def gpu_codes(models: Iterable[str]) -> np.ndarray:
        return np.array([_GPU_INDEX[m] for m in models], dtype=np.int16)

    def add_load(self, i: int, cpu: float, gpus: int, memory_mb: int) -> None:
        self.used_cpu[i] += cpu
        self.used_gpus[i] += gpus
        self.used_memory[i] += memory_mb
        self.used_replicas[i] += 1

    def remove_load(self, i: int, cpu: float, gpus: int, memory_mb: int) -> None:
        self.used_cpu[i] -= cpu
        self.used_gpus[i] -= gpus
        self.used_memory[i] -= memory_mb
        self.used_replicas[i] -= 1
