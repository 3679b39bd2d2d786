"""What the multi-host tests read off a host itself, the kernel's and its engine's view: its
processes, its engine's events, and a workload's progress as the head's API shows it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness.hosts import Host
from harness.network import processes_in
from harness.runner_net import Head
from tests.conftest import wait_for


def host_processes(host: Host) -> dict[int, str]:
    """pid -> command line of every process inside ``host``'s network namespace (the kernel's view)."""
    out = {}
    for pid in processes_in({host.net_inode}):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        out[pid] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return out


def is_ray(cmd: str) -> bool:
    """A Ray process: `ray start`, the raylet, its agents and workers (``ray::...``)."""
    return cmd.startswith("ray::") or "/ray/" in cmd or "bin/ray " in cmd


def engine_events(host: Host, since: float, **filters: str) -> list[dict[str, Any]]:
    """The host's own engine's container events from the second before ``since`` on (the engine
    takes whole seconds; label filters: runner.workload=...)."""
    return list(
        host.docker().events(
            decode=True, since=int(since) - 1, until=int(time.time()) + 1, filters={"type": "container", **filters}
        )
    )


def wait_job(head: Head, workload_id: str, done: Any, *, timeout_s: float, what: str) -> dict[str, Any]:
    """Wait until ``done(workload)``; a timeout names the workload's state, last events, replicas."""
    seen: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        seen["w"] = w = head.tenant.get(workload_id)
        return w if done(w) else None

    try:
        return wait_for(check, timeout_s=timeout_s, what=what)
    except AssertionError as exc:
        w = seen.get("w") or {}
        raise AssertionError(
            f"{exc}: {workload_id} {w.get('state')} {w.get('message')!r}; events "
            f"{[e['message'] for e in w.get('events', [])][-8:]}; replicas "
            f"{[(r['key'], r['node'], r['state']) for r in w.get('replicas', [])]}"
        ) from None
