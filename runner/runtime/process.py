"""ProcessRuntime: replicas as host processes, for hosts without a Docker engine.

The image is not used (there is no container): the command runs from ``workdir``, which holds
the same ``workloads/`` tree the images copy in, with the agent's own Python first on PATH.
Each replica gets a state folder named by its key, holding what container labels hold for
Docker: ``request.json``, ``pid``, the merged output ``output.log`` and, once the command ends,
``exit_code`` written by the wrapper shell itself. So a restarted agent re-adopts a running
process, and an exit that happened while no agent watched is still known.

A process always shares the host's network (``host_network`` is what it has anyway; its ports
are checked free the same way) and sees the host's files: a mount's source folder is created
like the Docker runtime creates it, and the request's env, which names each mount's target (where
a container would find it, ``runner.core.mounts``), is read as naming its source instead.

It is no isolation boundary: a replica runs as the agent's user with the host's files. It is
for CPU mode only (the operator's own machine); a network's nodes run containers, and a head
refuses ``--runtime process`` (``runner up --advertise``). What it does keep from a workload is
the agent's environment: a replica gets only ``replica_base_env`` and its request's env.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from runner.core.mounts import to_host
from runner.core.states import ReplicaState
from runner.runtime.base import LaunchRequest, ReplicaStatus, Runtime, check_host_ports, prepare_mounts
from runner.runtime.logtail import LineBuffer

# The wrapper (args: state folder, workdir, command...) runs the command from the workdir and
# records its exit code atomically (write then rename) when it ends.
_WRAPPER = (
    'd=$1; cd "$2" || exit 127; shift 2; "$@" > "$d/output.log" 2>&1; code=$?; '
    'echo $code > "$d/exit_code.tmp" && mv "$d/exit_code.tmp" "$d/exit_code"; exit $code'
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as ended: reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def replica_base_env(folder: Path, workdir: Path) -> dict[str, str]:
    """What a replica's process is given besides its request's env: nothing of the agent's own
    environment (which holds ``RAY_AUTH_TOKEN_PATH``, the node's key paths, the store's
    credentials), as a container is given nothing of its host's. This interpreter's ``bin`` first
    on a fixed ``PATH``, the workloads on ``PYTHONPATH``, its own folder as ``HOME``."""
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": str(workdir),
        "PYTHONUNBUFFERED": "1",
        "HOME": str(folder.resolve()),
        "LANG": "C.UTF-8",
    }


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(self, node: str, *, state_dir: Path, workdir: Path, artifacts_dir: Path) -> None:
        self.node = node
        self.artifacts_dir = Path(artifacts_dir)
        self.state_dir = Path(state_dir) / node
        self.workdir = Path(workdir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._tails: dict[str, tuple[int, LineBuffer]] = {}  # key -> (bytes read, their lines)
        self._tails_lock = threading.Lock()

    def _dir(self, key: str) -> Path:
        return self.state_dir / key

    def start(self, request: LaunchRequest) -> ReplicaStatus:
        folder = self._dir(request.key)
        if (folder / "pid").exists():  # adopt: never start the same key twice
            return self.status(request.key)
        check_host_ports(request, self.node)
        prepare_mounts(request.mounts, self.artifacts_dir)
        folder.mkdir(parents=True, exist_ok=True)
        # What was asked, for people: the env's names only (values may be a tenant's secrets).
        told = {**dataclasses.asdict(request), "env": sorted(request.env)}
        (folder / "request.json").write_text(json.dumps(told))
        env = {**replica_base_env(folder, self.workdir), **to_host(request.env, request.mounts)}
        command = request.command or ["true"]
        proc = subprocess.Popen(
            ["/bin/sh", "-c", _WRAPPER, "sh", str(folder.resolve()), str(self.workdir), *command],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() signals the whole tree
        )
        (folder / "pid").write_text(str(proc.pid))
        (folder / "started_at").write_text(repr(time.time()))
        return self.status(request.key)

    def status(self, key: str) -> ReplicaStatus:
        folder = self._dir(key)
        if not (folder / "pid").exists():
            return ReplicaStatus(key=key, state=ReplicaState.LOST, error="no process under this key")
        pid = int((folder / "pid").read_text())
        started = float((folder / "started_at").read_text()) if (folder / "started_at").exists() else None
        status = ReplicaStatus(key=key, state=ReplicaState.RUNNING, handle=str(pid), started_at=started)
        if (folder / "exit_code").exists():
            status.state = ReplicaState.EXITED
            status.exit_code = int((folder / "exit_code").read_text().strip())
            status.finished_at = (folder / "exit_code").stat().st_mtime
        elif (folder / "stopped").exists():
            status.state = ReplicaState.STOPPED
            status.exit_code = 143
            status.finished_at = (folder / "stopped").stat().st_mtime
        elif not _alive(pid):
            status.state = ReplicaState.LOST
            status.error = "process vanished without recording an exit code"
        return status

    def wait(self, key: str, timeout_s: float) -> ReplicaStatus:
        # Processes are not our children after an agent restart, so poll the state folder.
        deadline = time.monotonic() + timeout_s
        status = self.status(key)
        while not status.state.is_terminal() and time.monotonic() < deadline:
            time.sleep(0.05)
            status = self.status(key)
        return status

    def logs(self, key: str, start_line: int = 0, final: bool = False) -> list[str]:
        """The output file read on from where the last read of this replica stopped
        (``logtail``); from its start again when lines already dropped are asked for."""
        path = self._dir(key) / "output.log"
        with self._tails_lock:
            offset, buffer = self._tails.get(key, (0, None))
            if buffer is None or start_line < buffer.base:
                offset, buffer = 0, LineBuffer(skip=start_line)
            if buffer.closed:
                return buffer.read(start_line) or []
            ended = final or self.status(key).state.is_terminal()  # read after: nothing written later
            try:
                with open(path, "rb") as output:
                    output.seek(offset)
                    data = output.read()
            except FileNotFoundError:
                data = b""
            buffer.feed(data)
            if ended:
                buffer.close()
            self._tails[key] = (offset + len(data), buffer)
            return buffer.read(start_line) or []

    def stop(self, key: str, grace_s: float = 10.0) -> ReplicaStatus:
        status = self.status(key)
        if status.state != ReplicaState.RUNNING:
            return status
        pid = int(status.handle)
        (self._dir(key) / "stopped").touch()
        try:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.status(key)

    def remove(self, key: str) -> None:
        self.stop(key, grace_s=0)
        with self._tails_lock:
            self._tails.pop(key, None)
        folder = self._dir(key)
        for child in folder.glob("*"):
            child.unlink()
        if folder.exists():
            folder.rmdir()

    def list(self) -> list[ReplicaStatus]:
        return [self.status(p.name) for p in sorted(self.state_dir.iterdir()) if (p / "pid").exists()]
