"""Every port a Ray node listens on, pinned. Pure.

Left to itself ``ray start`` puts a node's raylet, object manager, agents and workers (the node
agent among them) on random ports. Two reasons to choose them instead: several nodes on one host
(CPU mode) collide on Ray's fixed defaults and on "next free" numbering, and a machine's guard
(``runner.core.guard``) can close to tenants' containers only ports it knows. So each node gets a
block of ten ports above the head's Ray port and a hundred worker ports; the head's own raylet
gets the block just below the nodes'.

Worker ports stay in 12000-28999: clear of the training rendezvous ports (29500-32767,
``runner.core.training.master_port``), which a guarded range would close to the very workers that
need them, and below the kernel's ephemeral ports (32768 up), where Docker publishes containers'
ports and servers a workload talks to (an S3 store on the same machine) bind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The index of the head's own raylet (its block sits just below node 0's).
HEAD = -1
#: Worker ports: this many per node, within [WORKERS_FROM, WORKERS_FROM + WORKERS_SPAN).
WORKERS_PER_NODE = 100
WORKERS_FROM, WORKERS_SPAN = 12_000, 17_000


@dataclass(frozen=True)
class NodePorts:
    """The ports of one Ray node: its fixed ones and its workers' range (inclusive)."""

    node_manager: int
    object_manager: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int
    metrics_export: int
    min_worker: int
    max_worker: int

    @classmethod
    def block(cls, ray_port: int, index: int) -> NodePorts:
        """The ports of the ``index``-th node of the cluster whose head listens on ``ray_port``
        (``HEAD`` for the head's own raylet). A cluster's nodes' worker ranges are disjoint,
        and two clusters' ranges on one host differ with their head ports."""
        base = ray_port + 100 + index * 10
        workers = WORKERS_FROM + ((ray_port % 20) * 1000 + (index + 1) * WORKERS_PER_NODE) % WORKERS_SPAN
        return cls(
            node_manager=base,
            object_manager=base + 1,
            dashboard_agent_listen=base + 2,
            dashboard_agent_grpc=base + 3,
            runtime_env_agent=base + 4,
            metrics_export=base + 5,
            min_worker=workers,
            max_worker=workers + WORKERS_PER_NODE - 1,
        )

    def ray_args(self, temp_dir: Path | None = None) -> list[str]:
        """The ``ray start`` flags that put the node on exactly these ports."""
        args = [
            f"--node-manager-port={self.node_manager}",
            f"--object-manager-port={self.object_manager}",
            f"--dashboard-agent-listen-port={self.dashboard_agent_listen}",
            f"--dashboard-agent-grpc-port={self.dashboard_agent_grpc}",
            f"--runtime-env-agent-port={self.runtime_env_agent}",
            f"--metrics-export-port={self.metrics_export}",
            f"--min-worker-port={self.min_worker}",
            f"--max-worker-port={self.max_worker}",
        ]
        if temp_dir is not None:
            args.append(f"--temp-dir={temp_dir}")
        return args

    def ranges(self) -> list[tuple[int, int]]:
        """Every port as inclusive ranges, adjacent ones merged."""
        fixed = [
            self.node_manager,
            self.object_manager,
            self.dashboard_agent_listen,
            self.dashboard_agent_grpc,
            self.runtime_env_agent,
            self.metrics_export,
        ]
        return merge_ranges([(p, p) for p in fixed] + [(self.min_worker, self.max_worker)])


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive port ranges sorted, with overlapping and adjacent ones joined."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged
