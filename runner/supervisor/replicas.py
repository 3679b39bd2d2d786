"""Driving replicas through their agents: one in-flight call of each kind per replica, never a
blocking one, and the results taken in as they complete.

Every agent call (start, wait, logs, stop) is a Ray ``ObjectRef`` kept in ``Calls``; ``drive``
makes sure the right call is in flight for where a replica stands, ``collect`` takes in the ones
that completed. Because a replica row exists before its ``start`` is sent and ``start`` adopts an
existing container of the same key, asking again after a restart never starts anything twice.
Log lines that are contract reports (``runner.core.contract.parse_report``) also update the replica's
latest reports, with the ``file://`` URIs in them read back from the container's mount points to
the host's (``runner.core.mounts.to_host``).

A ``start`` that takes a while (the node pulls the image) is asked about (``status``) every
``PULL_POLL_S``: a PULLING answer is written with its bytes, so ``runner status`` shows the pull,
at most that often per replica. PULLING is not started: ``started_at`` (and with it billing) is
set only once the agent reports the container RUNNING, from the container's own start time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from runner.core.contract import parse_report
from runner.core.events import EventKind
from runner.core.mounts import Mount, to_host
from runner.core.states import ReplicaState
from runner.runtime import LaunchRequest, ReplicaStatus
from runner.store import Replica, Store, Workload
from runner.supervisor.cluster_view import AGENT_ERRORS, ClusterView

log = logging.getLogger("runner.replicas")

WAIT_CALL_S = 20.0  # one agent.wait call; re-issued while the replica runs
PULL_POLL_S = 0.5  # a start in flight is asked how its pull goes at most this often
STOP_GRACE_S = 10.0  # SIGTERM to SIGKILL: time for a training job to checkpoint


@dataclass
class Calls:
    """In-flight agent calls of one replica (at most one of each)."""

    node: str = ""  # where the replica is: its agent is still needed while this bookkeeping lasts
    start: Any = None
    wait: Any = None
    logs: Any = None
    stop: Any = None
    #: ``status`` of a replica whose start is in flight: is its image being pulled, how far?
    progress: Any = None
    logs_at: float = 0.0
    progress_at: float = 0.0
    pulling_final: bool = False
    final_logs_done: bool = False

    def wake_refs(self) -> list[Any]:
        """The calls whose completion the supervisor acts on at once: a replica's state changed,
        or its last log lines are in. A routine log pull waits for the next tick: waking for each
        doubled the ticks of an idle control plane (and its CPU)."""
        final_logs = self.logs if self.pulling_final else None
        return [r for r in (self.start, self.wait, self.stop, final_logs) if r is not None]


#: Called when a replica reaches an end: (workload, replica, status).
Finished = Callable[[Workload, Replica, ReplicaStatus], None]
#: Called with the reports found in newly stored log lines: (workload, replica, {type: report}).
ReportListener = Callable[[Workload, Replica, dict[str, dict[str, Any]]], None]


class ReplicaDriver:
    def __init__(
        self,
        store: Store,
        cluster: ClusterView,
        *,
        poll_interval_s: float,
        on_finished: Finished,
        mounts: Callable[[Workload], list[Mount]],
        mask: Callable[[Workload, list[str]], list[str]] = lambda _w, lines: lines,
    ) -> None:
        self.store = store
        #: What a workload's output looks like stored: its secrets' values replaced by their names.
        self.mask = mask
        #: The host folders bound into a workload's replicas, to read their reports' URIs back.
        self.mounts = mounts
        self.cluster = cluster
        self.poll_interval_s = poll_interval_s
        self.on_finished = on_finished
        self.calls: dict[str, Calls] = {}
        #: Controllers that turn reports into events; each stored line is seen once.
        self.report_listeners: list[ReportListener] = []

    def wake_refs(self) -> list[Any]:
        return [r for c in self.calls.values() for r in c.wake_refs()]

    def nodes_in_use(self) -> set[str]:
        """Nodes whose agents this driver still has business with (replicas not yet forgotten)."""
        return {c.node for c in self.calls.values()}

    def logs_done(self, rep: Replica) -> bool:
        """True once the last log lines of a finished replica are stored."""
        return self.calls.get(rep.key, Calls(final_logs_done=True)).final_logs_done

    def forget(self, rep: Replica, *, remove: bool) -> None:
        """Drop the bookkeeping of a finished replica; ``remove`` its container (logs are stored)."""
        self.calls.pop(rep.key, None)
        agent = self.cluster.agents.get(rep.node)
        if remove and agent is not None and rep.state != ReplicaState.LOST.value:
            agent.remove(rep.key)

    # -- sending ---------------------------------------------------------------------------------------
    def drive(
        self,
        w: Workload,
        rep: Replica,
        request: Callable[[], LaunchRequest],
        *,
        stop: bool,
        grace_s: float = STOP_GRACE_S,
    ) -> None:
        """Make sure the right agent call is in flight for this replica."""
        calls = self.calls.setdefault(rep.key, Calls(node=rep.node))
        if not self.cluster.alive(rep.node):
            if rep.finished_at is None:
                gone = ReplicaStatus(key=rep.key, state=ReplicaState.LOST, error=f"node {rep.node} is gone")
                self.finish(w, rep, gone)
            # Nothing more can be read from a node that is gone: a replica that ended there just
            # before, its last lines not yet pulled, must not hold its workload up for good.
            calls.final_logs_done = True
            return
        agent = self.cluster.agents.get(rep.node)
        if agent is None:  # the node is up but its agent is not (yet): the fleet refresh retries
            return
        before_start = ReplicaState(rep.state).is_before_start()
        if rep.finished_at is None:
            # A stop racing a start could miss it, except one while the image is pulled: the
            # runtime then ends the pull, or waits for the container, and stops that.
            pulling = rep.state == ReplicaState.PULLING.value
            if stop:
                if calls.stop is None and (calls.start is None or pulling):
                    calls.stop = agent.stop(rep.key, grace_s)
            elif before_start and calls.start is None:
                calls.start = agent.start(request())
                calls.progress_at = time.monotonic()  # a start done at once is never asked about
            elif rep.state == ReplicaState.RUNNING.value and calls.wait is None:
                calls.wait = agent.wait(rep.key, WAIT_CALL_S)
            ask = calls.start is not None and calls.progress is None
            if ask and time.monotonic() - calls.progress_at >= PULL_POLL_S:
                calls.progress = agent.status(rep.key)
                calls.progress_at = time.monotonic()
        due = time.monotonic() - calls.logs_at >= self.poll_interval_s or rep.finished_at is not None
        if calls.logs is None and not calls.final_logs_done and not before_start and due:
            calls.pulling_final = rep.finished_at is not None
            calls.logs = agent.logs(rep.key, rep.log_lines, calls.pulling_final)
            calls.logs_at = time.monotonic()
        elif before_start and rep.finished_at is not None:
            calls.final_logs_done = True  # never started: there are no logs to pull

    # -- receiving -------------------------------------------------------------------------------------
    def collect(self, w: Workload, rep: Replica) -> None:
        """Take in the results of this replica's agent calls that have completed."""
        calls = self.calls.get(rep.key)
        if calls is None:
            return
        for name in ("start", "wait", "stop", "logs", "progress"):
            ref = getattr(calls, name)
            if ref is None or not ray.wait([ref], timeout=0)[0]:
                continue
            setattr(calls, name, None)
            link = self.cluster.agents.get(rep.node)
            if link is None:  # its agent is gone or being proven again: the call is asked anew
                continue
            try:
                result = self.cluster.read(link, ref)
            except AGENT_ERRORS as exc:
                log.warning("%s: agent on %s unreachable: %s", rep.key, rep.node, exc.__class__.__name__)
                self.cluster.refresh(force=True)
                continue
            if name == "logs":
                self._store_logs(w, rep, result)
                if calls.pulling_final:
                    calls.final_logs_done = True
            elif name == "progress":
                self._apply_progress(w, rep, result)
            else:
                self._apply(w, rep, result)

    def _store_logs(self, w: Workload, rep: Replica, lines: list[str]) -> None:
        lines = self.mask(w, lines)
        rep.log_lines = self.store.append_logs(
            workload_id=w.id, replica_key=rep.key, start_seq=rep.log_lines, lines=lines
        )
        reports = {}
        for line in lines:
            parsed = parse_report(line)
            if parsed:
                reports[parsed[0]] = {**parsed[1], "ts": time.time()}
        if reports:
            reports = to_host(reports, self.mounts(w))
            rep.reports = {**(rep.reports or {}), **reports}
            self.store.update_replica(rep.key, reports=rep.reports)
            for listener in self.report_listeners:
                listener(w, rep, reports)

    def _apply(self, w: Workload, rep: Replica, status: ReplicaStatus) -> None:
        if status.state.is_terminal():
            self.finish(w, rep, status)
        elif status.state == ReplicaState.RUNNING and rep.state != ReplicaState.RUNNING.value:
            started = status.started_at or time.time()
            self.store.update_replica(
                rep.key, state=ReplicaState.RUNNING.value, handle=status.handle, started_at=started, ports=status.ports
            )
            rep.state, rep.handle, rep.started_at, rep.ports = (
                ReplicaState.RUNNING.value,
                status.handle,
                started,
                status.ports,
            )

    def _apply_progress(self, w: Workload, rep: Replica, status: ReplicaStatus) -> None:
        """Take in a status asked for while the start is in flight: only a pull's progress. Any
        other answer (no container yet, created, running) is the start's own to report."""
        if status.state != ReplicaState.PULLING or rep.finished_at is not None:
            return
        pulled = (status.pull_done_bytes, status.pull_total_bytes)
        current = ReplicaState(rep.state)
        if current != ReplicaState.PULLING:
            if not current.can_move_to(ReplicaState.PULLING):
                return  # a late answer: the replica runs or ended meanwhile
            self.store.add_event(
                w.id,
                w.state,
                f"{rep.key}: node {rep.node} is pulling the image",
                kind=EventKind.PULLING,
                data={"key": rep.key, "node": rep.node},
            )
        elif (rep.pull_done_bytes, rep.pull_total_bytes) == pulled:
            return  # no news: nothing to write
        self.store.update_replica(
            rep.key, state=ReplicaState.PULLING.value, pull_done_bytes=pulled[0], pull_total_bytes=pulled[1]
        )
        rep.state, rep.pull_done_bytes, rep.pull_total_bytes = ReplicaState.PULLING.value, *pulled

    def finish(self, w: Workload, rep: Replica, status: ReplicaStatus) -> None:
        """Record a replica's end once; its start time is kept if the runtime knew it."""
        if rep.finished_at is not None:
            return
        finished = status.finished_at or time.time()
        started = rep.started_at or status.started_at
        self.store.update_replica(
            rep.key,
            state=status.state.value,
            exit_code=status.exit_code,
            error=status.error,
            start_failure=status.start_failure,
            finished_at=finished,
            handle=status.handle or rep.handle,
            started_at=started,
        )
        rep.state, rep.exit_code, rep.error = status.state.value, status.exit_code, status.error
        rep.start_failure = status.start_failure
        rep.finished_at, rep.started_at = finished, started
        self.on_finished(w, rep, status)
