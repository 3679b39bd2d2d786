"""torch.distributed for the trainer: device, threads, the process group and the few collectives
it needs, all of them no-ops for a world of one (which then needs no rendezvous at all).

Networking (gloo on CPU): rank 0 serves a TCPStore on MASTER_ADDR:MASTER_PORT; every rank then
opens gloo pair connections on kernel-chosen (ephemeral) ports, advertising the address that
its hostname resolves to, or the one of GLOO_SOCKET_IFNAME when set. NCCL (on CUDA) behaves
alike with NCCL_SOCKET_IFNAME. See workloads/training/README.md for what containers need.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from workloads.training.config import ConfigError, DistEnv


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs this container may use by its CFS quota (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``), or None when unlimited. Docker's ``--cpus`` / nano_cpus set it."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for sub in ("cpu", "cpu,cpuacct"):
        try:
            quota_us = int((cgroup_root / sub / "cpu.cfs_quota_us").read_text())
            period_us = int((cgroup_root / sub / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 else quota_us / period_us
    return None


def pick_threads(requested: int) -> int:
    """``requested`` when given, else the whole CPUs of the quota, else 1 (one core per worker:
    N workers on one machine without limits must not fight over every core each)."""
    if requested > 0:
        return requested
    quota = cpu_quota()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(usable, math.floor(quota))) if quota else 1


def pick_device(wanted: str, local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK when CUDA is there (or asked for), else the CPU."""
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu or auto")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


class Comm:
    """The process group of one run (or none, for one worker)."""

    def __init__(self, env: DistEnv, device: torch.device, timeout_s: float) -> None:
        self.env = env
        self.device = device
        self.rank, self.world_size = env.rank, env.world_size
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        self.active = env.world_size > 1
        if self.active:
            os.environ["MASTER_ADDR"] = env.master_addr  # env:// reads these two
            os.environ["MASTER_PORT"] = str(env.master_port)
            dist.init_process_group(
                self.backend,
                init_method="env://",
                world_size=env.world_size,
                rank=env.rank,
                timeout=timedelta(seconds=timeout_s),
                device_id=device if device.type == "cuda" else None,
            )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (one small all-reduce)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0; None elsewhere."""
        if not self.active:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
