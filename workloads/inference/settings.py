"""Server settings: one object, read once from the environment (the workload contract) and flags.

The runner sets PORT, RUNNER_MODEL and the three batching variables from the spec; the rest
have defaults that suit a small machine, so ``python -m workloads.inference`` runs bare.

| variable | default | meaning |
| --- | --- | --- |
| PORT | 8000 | port to listen on (``--port`` wins) |
| HOST | 0.0.0.0 | address to bind (``--host`` wins); 0.0.0.0 so a published port reaches it |
| RUNNER_MODEL | all-MiniLM-L6-v2 | a model name, or a training checkpoint URI (file://, s3://) |
| RUNNER_MODEL_ID | RUNNER_MODEL | the name a checkpoint is served as (the runner binds a file:// one at another path) |
| RUNNER_MAX_BATCH_SIZE | 32 | most items (sentences) handed to the model at once |
| RUNNER_MAX_WAIT_MS | 5 | longest the first item of a batch waits for the batch to fill |
| RUNNER_MAX_QUEUE | 1024 | queued items beyond which requests get 429 |
| RUNNER_MAX_INPUTS | 2048 | most inputs in one request (OpenAI's own limit) |
| RUNNER_MODEL_WORKERS | 2 on a CPU of 2+ cores, else 1 | batches run at the same time |
| RUNNER_TORCH_THREADS | usable CPUs / workers | torch intra-op threads per batch |
| RUNNER_REPORT_EVERY_S | 5 | seconds between ``{"runner": "metrics"}`` report lines (0: never) |
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from workloads.inference.errors import SettingsError

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may really use: the affinity mask, capped by a cgroup CPU quota (v2, or v1).

    A container started with ``nano_cpus`` sees every host core in ``os.cpu_count()`` but is
    throttled to its quota; sizing torch's pool by the core count would oversubscribe it.
    """
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:  # cgroup v1 (a host on the hybrid layout): -1 means no quota
            quota = (cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup_root / "cpu" / "cpu.cfs_period_us").read_text().strip()
            quota = "max" if int(quota) < 0 else quota
        except (OSError, ValueError):
            quota = period = "max"  # no quota: the affinity mask is the limit
    if quota != "max":
        cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    return max(1, cpus)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise SettingsError(f"{name} must be a finite number >= {minimum:g}, got {raw!r}")
    return value


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 8000
    model: str = DEFAULT_MODEL
    #: The name clients send as ``model`` and /v1/models lists; empty: ``model`` itself. The runner
    #: sets it to the spec's URI when it binds a ``file://`` checkpoint at its own mount point.
    model_id: str = ""
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_inputs: int = 2048
    #: None: decided by the backend from the device (see ``workers_for``/``threads_for``).
    model_workers: int | None = None
    torch_threads: int | None = None
    report_every_s: float = 5.0
    workload_id: str = ""
    replica_index: str = "0"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, host: str | None = None, port: int | None = None
    ) -> "ServerSettings":
        """Read the contract's variables; flags (``host``/``port``) win over the environment."""
        env = os.environ if env is None else env
        workers = _int(env, "RUNNER_MODEL_WORKERS", 0, 0) or None
        threads = _int(env, "RUNNER_TORCH_THREADS", 0, 0) or None
        settings = cls(
            host=host or env.get("HOST", "").strip() or cls.host,
            port=port if port is not None else _int(env, "PORT", cls.port, 1),
            model=env.get("RUNNER_MODEL", "").strip() or DEFAULT_MODEL,
            model_id=env.get("RUNNER_MODEL_ID", "").strip(),
            max_batch_size=_int(env, "RUNNER_MAX_BATCH_SIZE", cls.max_batch_size, 1),
            max_wait_ms=_float(env, "RUNNER_MAX_WAIT_MS", cls.max_wait_ms, 0.0),
            max_queue=_int(env, "RUNNER_MAX_QUEUE", cls.max_queue, 1),
            max_inputs=_int(env, "RUNNER_MAX_INPUTS", cls.max_inputs, 1),
            model_workers=workers,
            torch_threads=threads,
            report_every_s=_float(env, "RUNNER_REPORT_EVERY_S", cls.report_every_s, 0.0),
            workload_id=env.get("RUNNER_WORKLOAD_ID", ""),
            replica_index=env.get("RUNNER_REPLICA_INDEX", "0"),
        )
        if not 1 <= settings.port <= 65535:
            raise SettingsError(f"PORT must be 1..65535, got {settings.port}")
        return settings

    def workers_for(self, device: str) -> int:
        """Batches in flight at once. On a CPU two single-threaded batches side by side beat
        one two-threaded batch (measured: ~250 vs ~220 sentences/s on 2 cores, see README);
        a GPU runs one batch at a time."""
        if self.model_workers:
            return self.model_workers
        return 1 if device != "cpu" else min(2, usable_cpus())

    def threads_for(self, device: str) -> int:
        """torch intra-op threads: the usable CPUs shared out between the workers."""
        if self.torch_threads:
            return self.torch_threads
        return max(1, usable_cpus() // self.workers_for(device))
