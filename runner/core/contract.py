"""The workload contract: what the runner tells a container, and what it reads back. Pure.

Told (environment): every replica gets ``RUNNER_WORKLOAD_ID``, ``RUNNER_REPLICA_INDEX``,
``RUNNER_ATTEMPT`` and ``RUNNER_NODE``; each kind adds its own (``kind_env``). The user's own
``env`` from the spec comes first and the runner's variables win, so a spec cannot confuse the
rendezvous of its own gang by accident.

Read back (stdout): a line that is one JSON object with a ``"runner"`` key is a *report*:
``{"runner": "progress", "step": 120, ...}``. The supervisor keeps the latest report of each
type per replica (``parse_report``); every other line is a plain log line. The workloads under
``workloads/`` and their READMEs follow this contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.core.spec import AnySpec, GamingSpec, InferenceSpec, TrainingSpec
from workloads.common.report import parse_report as read_report

#: Reports never grow without bound in the database: longer lines are plain logs.
MAX_REPORT_CHARS = 4096
#: A replica whose spec names no memory may use this much per CPU core it asked for (and at least
#: ``MIN_DEFAULT_MEMORY_MB``): its container's limit, so no replica takes a machine's memory whole.
DEFAULT_MEMORY_MB_PER_CORE = 4096
MIN_DEFAULT_MEMORY_MB = 1024


def memory_limit_mb(spec: AnySpec) -> int:
    """The memory limit of each of the workload's containers, in MiB: what its spec asked for,
    else the default for its cores."""
    asked = spec.resources.memory
    if asked:
        return int(asked)
    return max(MIN_DEFAULT_MEMORY_MB, int(spec.resources.cpu * DEFAULT_MEMORY_MB_PER_CORE))


@dataclass(frozen=True)
class Rendezvous:
    """Where the workers of a gang meet: rank 0's address and a port chosen for the attempt."""

    master_addr: str
    master_port: int
    world_size: int


def base_env(workload_id: str, replica_index: int, attempt: int, node: str) -> dict[str, str]:
    return {
        "RUNNER_WORKLOAD_ID": workload_id,
        "RUNNER_REPLICA_INDEX": str(replica_index),
        "RUNNER_ATTEMPT": str(attempt),
        "RUNNER_NODE": node,
    }


def service_port(spec: AnySpec, default: int = 8000) -> int:
    """The container port a service listens on: the first TCP port of the spec."""
    for port in spec.ports:
        if port.protocol == "tcp":
            return int(port.container)
    return default


def kind_env(
    spec: AnySpec,
    *,
    replica_index: int,
    rendezvous: Rendezvous | None = None,
    checkpoint_uri: str | None = None,
    model_uri: str | None = None,
) -> dict[str, str]:
    """The kind-specific variables of the contract. ``checkpoint_uri`` and ``model_uri`` are
    where the replica finds those folders (inside a container, its mount points:
    ``runner.core.mounts``); a served model keeps the spec's name (``RUNNER_MODEL_ID``), which is what
    clients send as ``model``."""
    if isinstance(spec, InferenceSpec):
        b = spec.batching
        env = {
            "PORT": str(service_port(spec)),
            "RUNNER_MAX_BATCH_SIZE": str(b.max_batch_size),
            "RUNNER_MAX_WAIT_MS": f"{b.max_wait_ms:g}",
            "RUNNER_MAX_QUEUE": str(b.max_queue),
        }
        if spec.model:
            env["RUNNER_MODEL"] = model_uri or spec.model
            env["RUNNER_MODEL_ID"] = spec.model
        return env
    if isinstance(spec, GamingSpec):
        return {
            "PORT": str(service_port(spec)),
            "RUNNER_GAME": spec.game,
            "RUNNER_FPS": str(spec.fps),
            "RUNNER_RESOLUTION": spec.resolution,
            "RUNNER_IDLE_TIMEOUT_S": f"{spec.idle_timeout:g}",
            "RUNNER_MAX_DURATION_S": f"{spec.max_duration:g}",
            "RUNNER_LATENCY_BUDGET_MS": f"{spec.latency_budget_ms:g}",
        }
    if isinstance(spec, TrainingSpec):
        env = {
            "RUNNER_CHECKPOINT_EVERY": str(spec.checkpoint.every_steps),
            "RANK": str(replica_index),
            "LOCAL_RANK": "0",
        }
        if checkpoint_uri:
            env["RUNNER_CHECKPOINT_URI"] = checkpoint_uri
        if rendezvous is not None:
            env.update(
                MASTER_ADDR=rendezvous.master_addr,
                MASTER_PORT=str(rendezvous.master_port),
                WORLD_SIZE=str(rendezvous.world_size),
            )
        return env
    return {}


def parse_report(line: str) -> tuple[str, dict[str, Any]] | None:
    """``(type, report)`` when ``line`` is a report line, else None. The reader is the workloads'
    own (``workloads.common.report``), so writer and reader cannot drift apart."""
    if len(line) > MAX_REPORT_CHARS:
        return None
    report = read_report(line)
    if report is None:
        return None
    kind = report.pop("runner")
    return kind, report
