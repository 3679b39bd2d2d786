"""Training jobs inside the gang controller: what a worker gets beyond a batch replica, which
failures are final, and what the trainer's reports add to the workload's timeline.

- **Networking.** Every worker runs in its node's network namespace: rank 0 serves the
  rendezvous on ``MASTER_PORT`` and every rank then opens gloo/NCCL pair connections on ports
  the kernel picks, which no published port can foresee (``workloads/training/README.md``). The
  rendezvous port of an attempt is a hash of (workload, attempt) below Linux's ephemeral range,
  so it rarely meets another socket; rank 0's node checks it is free before starting, and a
  taken port makes the attempt a *relocation* (placed again at once with the next attempt's
  port, not counted as a failure) instead of a confused trainer.
- **Checkpoints.** A ``file://`` checkpoint folder is bound into the container at
  ``/mnt/runner/checkpoints`` (``runner.core.mounts``: never at its host path, where the image may hold
  a folder its user cannot enter), and the URIs the trainer reports are read back as the host's;
  the node creates the folder writable for the image's user. Across hosts use ``s3://`` (a
  vanished node must not take the checkpoints along).
- **Failures.** Exit 2 is bad input (flags, or a checkpoint of another model): retrying cannot
  help, so the job fails at once. Anything else (a lost node, a dead container, exit 1 after a
  lost peer, 143 after a provider's SIGTERM) retries the whole gang, which resumes from the last
  complete checkpoint. When one member is gone the others cannot checkpoint any more (saving
  gathers from every rank), so they get a short stop grace instead of the full one.
- **Timeline.** Rank 0's ``resume`` and ``result`` reports become events: "resumed from step N",
  "started over", the final checkpoint's URI (``timeline_messages``; the supervisor writes them,
  ``runner/supervisor/training_events.py``).

Pure: rows in, decisions out; nothing here reads or writes the store.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

from runner.core.events import StartFailure
from runner.core.states import ReplicaState

if TYPE_CHECKING:  # rows the supervisor hands in; only their fields are read
    from runner.store import Replica

#: Rendezvous ports: 29500 (torch's habit) up to below 32768, where Linux's ephemeral range
#: (the ports of gloo's pair connections and every outgoing socket) starts.
MASTER_PORT_BASE = 29500
MASTER_PORT_SPAN = 3000
#: Bad flags/env or a checkpoint of another model (workloads/training/README.md): final.
EXIT_BAD_INPUT = 2
#: Seconds a surviving member gets after SIGTERM when a peer is gone: it cannot checkpoint
#: (saving needs every rank) and usually has exited already (its peer connection reset).
FAILED_PEER_GRACE_S = 3.0


def master_port(workload_id: str, attempt: int) -> int:
    """The rendezvous port of one attempt: stable across control-plane restarts, different for
    the next attempt (so a retry after a port clash gets another one)."""
    return MASTER_PORT_BASE + zlib.crc32(f"{workload_id}:{attempt}".encode()) % MASTER_PORT_SPAN


def launch_fields(spec: Any, rep: Replica) -> dict[str, Any]:
    """What a training worker's ``LaunchRequest`` gets on top of a batch replica's: host
    networking, and for rank 0 the ports it listens on (the rendezvous port, then the spec's),
    which its node checks are free. Under host networking every rank shares its node's ports,
    so the spec's ports are rank 0's alone."""
    ports = [(master_port(rep.workload_id, rep.attempt), "tcp"), *[(p.container, p.protocol) for p in spec.ports]]
    return {"host_network": True, "ports": ports if rep.index == 0 else []}


def stop_grace(reps: list[Replica], default_s: float) -> float:
    """The SIGTERM-to-SIGKILL grace for the rest of a gang that is being stopped."""
    peer_gone = any(
        r.finished_at is not None and (r.exit_code != 0 or r.state == ReplicaState.LOST.value) for r in reps
    )
    return min(default_s, FAILED_PEER_GRACE_S) if peer_gone else default_s


def port_clash(reps: list[Replica]) -> Replica | None:
    """A worker that never started because its rendezvous port was taken on its node."""
    return next((r for r in reps if r.finished_at is not None and r.start_failure == StartFailure.PORT_IN_USE), None)


def final_failure(reps: list[Replica]) -> str | None:
    """Why retrying cannot help (a worker exited 2: bad flags/env or another model's checkpoint)."""
    bad = next((r for r in reps if r.exit_code == EXIT_BAD_INPUT), None)
    if bad is None:
        return None
    return (
        f"replica {bad.index} on {bad.node} exited with code 2 (bad input: its flags or env, or the checkpoint "
        "at the URI is of another model); not retried. To fix: see `runner logs` and correct the spec"
    )


def timeline_messages(rep: Replica, reports: dict[str, dict[str, Any]]) -> list[str]:
    """The workload events rank 0's reports of one log line make (resumed, started over, result)."""
    out = []
    if "resume" in reports:
        r = reports["resume"]
        out.append(
            f"attempt {rep.attempt}: resumed from step {r.get('step')} of {r.get('total_steps')} ({r.get('uri')})"
        )
    progress = reports.get("progress") or {}
    if rep.attempt > 1 and progress.get("step") == 1:  # step 1 is reported only when it began at 0
        out.append(f"attempt {rep.attempt}: no complete checkpoint found; started over from step 0")
    if "result" in reports:
        r = reports["result"]
        out.append(
            f"trained {r.get('steps')} steps on {r.get('world_size')} worker(s): loss {r.get('first_loss')} "
            f"-> {r.get('final_loss')} (validation {r.get('val_loss')}); final checkpoint "
            f"{r.get('checkpoint')}"
        )
    return out
