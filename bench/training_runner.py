"""The runner half of ``bench/training.py``: the same training run submitted as a ``kind:
training`` workload on a private CPU-mode cluster, and the recovery time after a killed node.

One cluster serves every round (Docker runtime, the default 4-node fleet, its own home and
ports). A throughput run submits the job and reads rank 0's ``result`` line from the stored logs,
exactly as the bare half reads it from the process. A recovery run submits a long job, waits for
its first checkpoint, then kills the node of a rank other than 0 the way a machine loses power
(every process of that node at once, and the containers it ran, which in CPU mode would
otherwise outlive it in the shared Docker engine), and times from the kill to the first
progress report above the step the new attempt resumed from. A fresh node then joins in place
of the dead one, so every round finds four nodes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.training import Measurement, measurement_from_logs, train_args
from runner.cli.training import rank_and_attempt

#: Steps of a recovery run: far more than it is given time for (it is cancelled once measured).
ENDLESS = 10_000_000


def spec(args: argparse.Namespace, steps: int | None = None) -> dict[str, Any]:
    """The bare half's run as a workload: same flags, same workers, one CPU each, the training
    defaults for retries (3 attempts, 1 s backoff: what a user gets without asking)."""
    flags = train_args(args)
    if steps is not None:
        flags[flags.index("--steps") + 1] = str(steps)
    return {
        "name": "bench-train",
        "kind": "training",
        "image": "runner/training:latest",
        "workers": args.workers,
        "command": ["python", "-m", "workloads.training", *flags],
        "resources": {"cpu": 1, "memory": "2GB"},
        "checkpoint": {"every_steps": args.checkpoint_every},
    }


def session_pids(sid: int) -> list[int]:
    """Every process of the session a node's `ray start` began (its raylet and its workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    out.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return out


def power_off(pid: int) -> None:
    """SIGKILL a node's whole session at once, as a machine losing power."""
    for p in session_pids(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class RunnerHalf:
    """A private CPU-mode cluster and the runs made on it."""

    args: argparse.Namespace
    say: Any = print
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="runner-bench-training-")))
    spares: dict[str, int] = field(default_factory=dict)  # name -> pid of nodes joined by the bench
    killed: int = 0

    def start(self) -> None:
        from bench.startup import busy_ports
        from runner import local
        from runner.client import Client
        from runner.images import build_images
        from runner.settings import Settings

        busy = busy_ports(self.args.ray_port, self.args.server_port, nodes=4 + self.args.runs + 1)
        if busy:
            raise SystemExit(f"ports in use: {busy}; pick others with --ray-port / --server-port")
        build_images(["training"], log=lambda _m: None)  # cached by content hash: instant when built
        self.settings = Settings.from_env(
            home=self.home, server_port=self.args.server_port, ray_port=self.args.ray_port, runtime="docker"
        )
        t0 = time.perf_counter()
        local.up(self.settings, say=lambda _m: None)
        self.client = Client.from_settings(self.settings)
        self.operator = Client.from_settings(self.settings, operator=True)
        self.say(f"runner half: cluster up in {time.perf_counter() - t0:.1f}s (home {self.home})")
        self.throughput(steps=20)  # warm-up: agents, Ray workers, the image's page cache

    def close(self, ok: bool) -> None:
        from runner import local

        for pid in self.spares.values():
            power_off(pid)
        local.down(self.settings, say=lambda _m: None)
        local.stop_replicas(self.settings, list(self.spares))
        try:
            import ray

            ray.shutdown()  # local.up connected this process as a driver
        except Exception:
            pass
        if ok:  # after a failure the home keeps the logs
            shutil.rmtree(self.home, ignore_errors=True)
            shutil.rmtree(self.settings.ray_temp_dir, ignore_errors=True)

    # -- runs ------------------------------------------------------------------------------------------------
    def rank0_lines(self, workload_id: str) -> list[str]:
        return [i["line"] for i in self.client.logs(workload_id) if rank_and_attempt(i["replica"])[0] == 0]

    def throughput(self, steps: int | None = None) -> Measurement:
        t0 = time.perf_counter()
        w = self.client.submit(spec(self.args, steps))
        done = self.client.wait(w["id"], timeout_s=self.args.timeout)
        wall = time.perf_counter() - t0
        if done["state"] != "SUCCEEDED":
            raise RuntimeError(f"runner run {w['id']} ended {done['state']}: {done['message']}")
        return measurement_from_logs(self.rank0_lines(w["id"]), wall)

    def recovery(self) -> tuple[float, dict[str, float]]:
        """Seconds from killing a rank-1 node to progress past the resumed step, and the phases."""
        c = self.client
        w = c.submit(spec(self.args, ENDLESS))
        wid = w["id"]
        self._wait(lambda: self._rank0(wid, 1).get("checkpoint"), "the first checkpoint")
        victim = next(r for r in c.get(wid)["replicas"] if r["index"] == 1)["node"]
        t_kill = time.time()
        self._kill(victim)
        resume = self._wait(lambda: self._rank0(wid, 2).get("resume"), "the second attempt to resume")
        progress = self._wait(
            lambda: (p := self._rank0(wid, 2).get("progress")) and p["step"] > resume["step"] and p,
            "progress after the resume",
        )
        events = c.get(wid)["events"]
        failed = next(e["ts"] for e in events if e["state"] == "RETRYING")
        running = next(e["ts"] for e in events if e["state"] == "RUNNING" and e["ts"] > failed)
        c.cancel(wid)
        c.wait(wid, timeout_s=60)
        self._replace(victim)
        phases = {
            "noticed (attempt failed)": failed - t_kill,
            "placed and running": running - failed,
            "resumed (checkpoint loaded)": resume["ts"] - running,
            "first step": progress["ts"] - resume["ts"],
        }
        return progress["ts"] - t_kill, phases

    def _rank0(self, workload_id: str, attempt: int) -> dict[str, Any]:
        reps = [r for r in self.client.get(workload_id)["replicas"] if r["index"] == 0 and r["attempt"] == attempt]
        return reps[0]["reports"] if reps else {}

    def _wait(self, predicate: Any, what: str) -> Any:
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise RuntimeError(f"timed out after {self.args.timeout:.0f}s waiting for {what}")

    def _kill(self, node: str) -> None:
        from runner import cluster, local

        record = cluster.read_record(self.settings.cluster_record_path) or {}
        pid = self.spares.pop(node, None) or record["pids"]["nodes"][node]
        power_off(pid)
        local.stop_replicas(self.settings, [node])  # a machine that loses power takes its containers along

    def _replace(self, dead: str) -> None:
        """Join a fresh node where the dead one was (same provider, region, GPU), under a new name."""
        from runner import local
        from runner.fleet import load_fleet

        self.killed += 1
        template = next((n for n in load_fleet(None).nodes if n.name == dead), load_fleet(None).nodes[0])
        name = f"spare-{self.killed}"
        node = template.model_copy(update={"name": name})
        proc = local.join_fleet_node(self.operator, self.settings, node, 3 + self.killed)
        self.spares[name] = proc.pid
        self._wait(
            lambda: any(n["name"] == name and n["alive"] and n["state"] == "active" for n in self.client.nodes()),
            f"node {name} to join",
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server-port", type=int, default=8495, help="runner half: control-plane port (default 8495)")
    p.add_argument("--ray-port", type=int, default=6735, help="runner half: Ray head port (default 6735)")


__all__ = ["RunnerHalf", "add_arguments", "spec"]
