"""Provider hosts as network namespaces, each with its own address, Docker engine and link.

A host here is as separate as one machine allows: its own network namespace (its own interfaces,
routes, ports and iptables) reached over a veth pair whose far end sits on the head's bridge, and
its own ``dockerd`` (data root, exec root, socket, containerd, bridge and iptables of its own),
so that nothing on it reaches another host's containers or engine except over the network. The
filesystem and the kernel stay shared: that is what a namespace host does not separate (the
README's "Running a real network" says what differs from a real provider machine).

Processes enter a host with ``nsenter --net`` only: ``ip netns exec`` also remounts ``/sys``,
which hides the cgroup mounts, and dockerd then fails with "Devices cgroup isn't mounted".

Links: on a kernel bridge (the default), the head's end of each veth carries the link's state and
shape: ``cut`` takes it down (both directions at once, as a pulled cable), ``restore`` brings it
back, ``shape`` sets a rate with ``tbf`` in both directions. This machine's kernel has no
``sch_netem`` (``tc qdisc add ... netem`` answers "Specified qdisc kind is unknown"; ``fq`` is
missing too), so a bridge cannot add latency or loss, and ``shape`` refuses them rather than
pretend. On the emulated WAN (``Network(wan=True)``, ``harness/wan.py``) each link is a port of a
userspace switch, which adds the regions' round trips and shapes delay, jitter, loss and rate.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.wan import WanControl

#: Where each harness records what it made, so that a later run can remove what a killed one left.
STATE_DIR = Path("/run/runner-harness")


class HarnessError(RuntimeError):
    """The harness could not make or remove part of the network (the command's output says why)."""


def sh(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one command (``ip``, ``tc``, ``iptables``); a failure raises with its output."""
    done = subprocess.run(list(args), capture_output=True, text=True, input=input, timeout=60)
    if check and done.returncode != 0:
        raise HarnessError(f"{' '.join(args)}: exit {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return done


def netns_path(netns: str) -> str:
    return f"/run/netns/{netns}"


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``netns``'s network namespace only (see the module docstring)."""
    return ["nsenter", f"--net={netns_path(netns)}", "--", *argv]


@dataclass
class Link:
    """A host's link: a veth to the head's bridge (``head_side`` in the root namespace), or a port
    of the emulated WAN (``wan``), which is then the link's only state."""

    head_side: str
    host_side: str  # named eth0 inside the host once moved there
    netns: str
    wan: WanControl | None = None
    port: str = ""

    def cut(self) -> None:
        """Pull the cable: nothing passes either way until ``restore``."""
        if self.wan is not None:
            self.wan.shape(self.port, up=False)
        else:
            sh("ip", "link", "set", self.head_side, "down")

    def restore(self) -> None:
        if self.wan is not None:
            self.wan.shape(self.port, up=True)
        else:
            sh("ip", "link", "set", self.head_side, "up")

    def is_up(self) -> bool:
        if self.wan is not None:
            return bool(self.wan.stats()[self.port]["up"])
        out = sh("ip", "-json", "link", "show", self.head_side).stdout
        return "UP" in json.loads(out)[0].get("flags", [])

    def shape(
        self, *, rate_mbit: float | None = None, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss_pct: float = 0.0
    ) -> None:
        """Shape the link, both directions: its rate (None lifts the limit) and, on the emulated
        WAN, an extra one-way delay, jitter and loss on top of the regions' round trip. A bridge's
        link can only be rate-limited (no netem in this kernel): asking it for more is an error."""
        if self.wan is not None:
            self.wan.shape(self.port, rate_mbit=rate_mbit, delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct)
            return
        if delay_ms or loss_pct or jitter_ms:
            raise HarnessError(
                "latency and loss need the kernel's sch_netem, which this machine lacks: "
                "make the network with Network(wan=True) to shape them in userspace"
            )
        for argv in (["tc"], in_netns(self.netns, ["tc"])):
            dev = self.head_side if argv == ["tc"] else "eth0"
            sh(*argv, "qdisc", "del", "dev", dev, "root", check=False)
            if rate_mbit is not None:
                burst = max(32_000, int(rate_mbit * 1e6 / 8 / 100))  # 10 ms of traffic, at least 32 KB
                sh(
                    *argv,
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    f"{rate_mbit}mbit",
                    "burst",
                    str(burst),
                    "latency",
                    "50ms",
                )


@dataclass
class Host:
    """One provider host: a namespace, its address on the head's network, its own dockerd."""

    name: str
    netns: str
    address: str
    link: Link
    region: str  # where the WAN puts it (on a bridge, a label only)
    root: Path  # this host's own folders (its "disk"): dockerd's data, its runner home
    docker_bridge: str  # the bip of its dockerd, inside its namespace only
    registry: str | None = None
    net_inode: int = 0  # the namespace's identity, which outlives its name (see network.sweep)
    dockerd: subprocess.Popen[bytes] | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        """Its engine's exec root and socket: short, because unix socket paths are (containerd's
        sockets live below the exec root, and a deep test folder overflows their 108 bytes)."""
        return STATE_DIR / "x" / self.netns

    @property
    def docker_socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.docker_socket}"

    @property
    def home(self) -> Path:
        """RUNNER_HOME of the runner processes on this host (its node's token, logs, replicas)."""
        return self.root / "home"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process on this host: its own engine, its own runner home."""
        return {**os.environ, "DOCKER_HOST": self.docker_host, "RUNNER_HOME": str(self.home), **extra}

    def run(self, argv: Sequence[str], *, log: Path | None = None, **extra_env: str) -> subprocess.Popen[bytes]:
        """Start ``argv`` on this host (its network, its engine); stopped with the host."""
        out = open(log or self.root / "proc.log", "ab")
        proc = subprocess.Popen(
            in_netns(self.netns, argv),
            env=self.env(**extra_env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def check(self, argv: Sequence[str], timeout_s: float = 60, **extra_env: str) -> str:
        """Run ``argv`` on this host to its end; its output, or HarnessError with it."""
        done = subprocess.run(
            in_netns(self.netns, argv), env=self.env(**extra_env), capture_output=True, text=True, timeout=timeout_s
        )
        if done.returncode != 0:
            raise HarnessError(
                f"{self.name}: {' '.join(argv)}: exit {done.returncode}: {(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done.stdout

    def docker(self) -> Any:
        """A docker SDK client of this host's own engine."""
        import docker

        return docker.DockerClient(base_url=self.docker_host, timeout=120)

    def start_dockerd(self, timeout_s: float = 60) -> None:
        """This host's own engine: its data and exec roots, socket, bridge, containerd and iptables;
        plain HTTP to the head's registry (a real network would give the registry TLS)."""
        (self.root / "docker").mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            "dockerd",
            f"--data-root={self.root / 'docker'}",
            f"--exec-root={self.run_dir / 'x'}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"--host={self.docker_host}",
            f"--bip={self.docker_bridge}",
            f"--cgroup-parent=/{self.netns}",
            "--iptables=true",
            "--default-address-pool",
            "base=198.19.128.0/17,size=24",
        ]
        if self.registry:
            argv.append(f"--insecure-registry={self.registry}")
        log = open(self.root / "dockerd.log", "ab")
        self.dockerd = subprocess.Popen(
            in_netns(self.netns, argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.dockerd.poll() is not None:
                raise HarnessError(f"{self.name}: dockerd exited {self.dockerd.returncode}: {self._dockerd_tail()}")
            try:
                self.docker().ping()
                return
            except Exception:
                time.sleep(0.2)
        raise HarnessError(f"{self.name}: dockerd did not answer in {timeout_s:.0f}s: {self._dockerd_tail()}")

    def _dockerd_tail(self) -> str:
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""

    def stop(self) -> None:
        """Stop what runs on this host: its processes (their whole sessions), its containers and
        its engine. Idempotent; used after failures too."""
        for proc in self.procs:
            kill_session(proc.pid)
        self.procs.clear()
        if self.dockerd is not None and self.dockerd.poll() is None:
            try:
                client = self.docker()
                for c in client.containers.list(all=True):
                    c.remove(force=True)
            except Exception:
                pass  # an engine that does not answer is killed below all the same
            self.dockerd.terminate()
            try:
                self.dockerd.wait(timeout=20)
            except subprocess.TimeoutExpired:
                kill_session(self.dockerd.pid)
        self.dockerd = None
        stop_by_pidfile(self.root / "dockerd.pid")


def kill_session(sid: int) -> None:
    """SIGKILL every process of the session ``sid`` (what one ``start_new_session`` began)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue


def stop_by_pidfile(path: Path) -> None:
    """A daemon a killed harness left running: found by its pid file, stopped with its session."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)  # what it started is in its host's namespace: removed with it
    except ProcessLookupError:
        pass


def remove_tree(path: Path) -> None:
    """A host's folders, once its engine is gone (overlay mounts under its data root first)."""
    if not path.exists():
        return
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(str(path))
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        sh("umount", "-l", mount, check=False)
    shutil.rmtree(path, ignore_errors=True)
