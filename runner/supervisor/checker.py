"""The checker: keeps the network honest about its nodes. Runs in its own thread.

Every ``heartbeat_s`` it asks each registered node's agent for a heartbeat and adds the interval
to that node's uptime for the day (online or not). Every ``challenge_s``, and whenever the operator
asks, it sends each active node a timed benchmark challenge (``runner.benchmark``): the answer
must be right, and the speed, timed here on the control plane, must reach ``tolerance`` of what
the node is expected to do (its catalog GPU, or in CPU mode its own verified benchmark). A node
that fails ``failures_to_suspend`` challenges in a row, or answers wrongly even once, is
suspended and its provider slashed.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import ray

from runner.benchmark import ceiling_tflops, expected_tflops, judge, size_challenge, verify_answer
from runner.core.ledger import SlashCause
from runner.core.network import NetworkConfig
from runner.core.policy import NodeState
from runner.core.sla import utc_day
from runner.store import Store
from runner.supervisor.cluster_view import AGENT_ERRORS, ClusterView

log = logging.getLogger("runner.checker")

WATCHED = (NodeState.VERIFIED, NodeState.ACTIVE, NodeState.DRAINING, NodeState.SUSPENDED)
CHALLENGE_SECONDS = 0.3  # how long an honest node should compute
ANSWER_TIMEOUT_S = 120.0  # one rep of the largest challenge on a node that only claimed to be fast
HEARTBEAT_TIMEOUT_S = 3.0


class Checker:
    def __init__(self, store: Store, config: NetworkConfig, cluster: ClusterView) -> None:
        self.store = store
        self.config = config.checker
        self.market_config = config.market
        self.cluster = cluster
        self._lock = threading.Lock()  # one challenge at a time: they would skew each other's timing
        self._last_alive: dict[str, bool] = {}
        self._refusals_seen: dict[str, tuple[float, int]] = {}  # node -> (agent started_at, last seq)

    def run(self, stop: threading.Event) -> None:
        next_challenge = time.monotonic() + self.config.challenge_s
        while not stop.wait(self.config.heartbeat_s):
            try:
                self.heartbeats(self.config.heartbeat_s)
                if time.monotonic() >= next_challenge:
                    next_challenge = time.monotonic() + self.config.challenge_s
                    for node in self.store.registry():
                        if node.state == NodeState.ACTIVE.value:
                            self.challenge(node.name)
            except Exception:  # the checker must outlive any one bad probe
                log.exception("checker round failed")

    # -- heartbeats ----------------------------------------------------------------------------------
    def heartbeats(self, interval_s: float) -> None:
        nodes = [n for n in self.store.registry() if NodeState(n.state) in WATCHED]
        links = {n.name: self.cluster.agents.get(n.name) for n in nodes if self.cluster.alive(n.name)}
        refs = {name: link.info() for name, link in links.items() if link is not None}
        ready, _ = (
            ray.wait(list(refs.values()), num_returns=len(refs), timeout=HEARTBEAT_TIMEOUT_S) if refs else ([], [])
        )
        day, now = utc_day(time.time()), time.time()
        for node in nodes:
            ref = refs.get(node.name)
            alive = False
            link = links.get(node.name)
            if ref is not None and link is not None and ref in ready:
                try:
                    info = self.cluster.read(link, ref)
                    alive = True
                except AGENT_ERRORS:
                    alive = False
                else:
                    self._audit_refusals(node.name, info)
            elif ref is not None and link is not None:
                link.forget(ref)
            self.store.add_uptime(node.name, day, interval_s, interval_s if alive else 0.0)
            if alive:
                self.store.update_node(node.name, last_seen_at=now)
            if self._last_alive.get(node.name) != alive:
                self._last_alive[node.name] = alive
                self.store.add_check(
                    node=node.name, kind="heartbeat", ok=alive, message="answering" if alive else "no heartbeat"
                )

    def _audit_refusals(self, name: str, info: dict[str, object]) -> None:
        """Audit, once each, the commands a node's agent refused (forged, for another node, stale,
        replayed): someone with the cluster token tried to make it act. Counted per agent process
        (its ``started_at``) and sequence number, as kept by the agent; one restarted starts
        counting afresh. Each entry carries both, so a restarted control plane resumes from the
        audit log itself and audits nothing twice."""
        started = float(info.get("started_at") or 0.0)  # type: ignore[arg-type]
        if name not in self._refusals_seen:
            self._refusals_seen[name] = (started, self._last_audited_refusal(name, started))
        seen_started, seen_seq = self._refusals_seen[name]
        if seen_started != started:
            seen_seq = 0
        refusals = info.get("refusals") or []
        for refusal in refusals if isinstance(refusals, list) else []:
            seq = int(refusal.get("seq", 0)) if isinstance(refusal, dict) else 0
            if seq > seen_seq:
                self.store.audit(
                    "agent.refused",
                    {
                        "node": name,
                        "reason": str(refusal.get("reason", ""))[:500],
                        "at": refusal.get("at"),
                        "agent_started_at": started,
                        "seq": seq,
                    },
                )
                seen_seq = seq
        self._refusals_seen[name] = (started, seen_seq)

    def _last_audited_refusal(self, name: str, started: float) -> int:
        """The last refusal of ``name``'s agent process ``started`` already in the audit log."""
        return max(
            (
                int(e.payload.get("seq", 0))
                for e in self.store.audit_entries(kind="agent.refused")
                if isinstance(e.payload, dict)
                and e.payload.get("node") == name
                and e.payload.get("agent_started_at") == started
            ),
            default=0,
        )

    # -- challenges ----------------------------------------------------------------------------------
    def challenge(self, name: str) -> dict[str, object]:
        """Challenge one node now; returns what was found (also stored as a check)."""
        with self._lock:
            return self._challenge(name)

    def _challenge(self, name: str) -> dict[str, object]:
        node = self.store.get_node(name)
        agent = self.cluster.agents.get(name)
        if agent is None or not self.cluster.alive(name):
            result = {"node": name, "ok": False, "message": "node is not reachable"}
            self.store.add_check(node=name, kind="challenge", ok=False, message=str(result["message"]))
            return result
        expected = expected_tflops(node.gpu_model, node.simulated, node.verified_tflops)
        real_gpu = bool(node.gpu_model and not node.simulated)
        secret = random.SystemRandom()
        c = size_challenge(
            expected,
            seconds=CHALLENGE_SECONDS,
            max_n=8192 if real_gpu else 2048,
            seed=secret.randrange(2**31),
            perm_seed=secret.randrange(2**31),
            deadline_s=2 * CHALLENGE_SECONDS / self.config.tolerance,
        )
        try:
            self.cluster.read(agent, agent.send("prepare_challenge", c.seed, c.n), ANSWER_TIMEOUT_S)
            started = time.perf_counter()
            answer = self.cluster.read(agent, agent.send("challenge", c), ANSWER_TIMEOUT_S)
            wall = time.perf_counter() - started
        except (ray.exceptions.GetTimeoutError, *AGENT_ERRORS) as exc:
            answer, problem, wall = {}, f"no answer: {exc.__class__.__name__}", ANSWER_TIMEOUT_S
        else:
            problem = verify_answer(c, answer, seed=secret.randrange(2**31))  # rows it cannot guess
        measured = int(answer.get("reps_done") or 0) * c.flop_per_rep / wall / 1e12
        # A wrong answer and a speed no GPU of the declared model can reach are both lies about
        # the machine: suspended at once. Slowness may be a bad day: suspended after repeats.
        ceiling = ceiling_tflops(node.gpu_model, node.simulated)
        too_fast = problem is None and ceiling is not None and measured > ceiling
        wrong = problem is not None or too_fast
        slow = None if problem else judge(measured, expected, self.config.tolerance, ceiling=ceiling)
        ok = not wrong and slow is None
        message = problem or slow or f"{measured:.4g} TFLOPS, expected {expected:.4g}"
        self.store.add_check(node=name, kind="challenge", ok=ok, measured=measured, expected=expected, message=message)
        failures = 0 if ok else node.challenge_failures + 1
        self.store.update_node(name, challenge_failures=failures)
        if not ok and (wrong or failures >= self.config.failures_to_suspend) and node.state == NodeState.ACTIVE.value:
            self._suspend(node.name, node.provider_id, message)
        return {
            "node": name,
            "ok": ok,
            "measured_tflops": measured,
            "expected_tflops": expected,
            "failures": failures,
            "message": message,
        }

    def _suspend(self, name: str, provider: str, message: str) -> None:
        self.store.move_node(name, NodeState.SUSPENDED, f"failed benchmark challenge: {message}", by="checker")
        self.store.slash(
            provider=provider,
            cause=SlashCause.FAILED_CHALLENGE,
            config=self.market_config,
            key=f"slash:challenge:{name}:{int(time.time())}",
            node=name,
            memo=f"{name} failed its benchmark challenge: {message}",
        )
        log.warning("suspended %s: %s", name, message)
