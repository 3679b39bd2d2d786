"""The node agent: one Ray actor per provider node, pinned there by a label selector.

The control plane never opens its own connection to a node: it calls this actor through Ray. The
actor has one method, ``call``, which takes a command sealed and signed by the control plane for
this node and answers with JSON signed by this node's key (``runner.core.agent_wire``): any token
holder can reach the actor by its name, and it does nothing for them; a command it refuses is kept
(``refusals`` in its ``info``), so the control plane audits it.
The agent is a thin, stateless shell around the node's runtime (all state lives on the things
the runtime runs), so it can be restarted, or a second control plane can attach, without losing
track of any replica. It is a threaded actor: a long ``wait`` on one replica must not block
``start`` or ``logs`` of another.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import ray
from pydantic import TypeAdapter

from runner.benchmark import Challenge, ChallengeSolver
from runner.core.agent_wire import NodeKeys, NonceBook, WireError, make_reply, open_command
from runner.core.errors import RunnerError
from runner.core.events import StartFailure
from runner.core.states import ReplicaState
from runner.node_keys import (
    CONTROL_PUBLIC_KEY_ENV,
    NODE_KEYS_ENV,
    load_nonce_book,
    node_keys,
    nonce_book_path,
    save_nonce_book,
)
from runner.ray_nodes import IMAGE_CACHE_GB_ENV, PUBLIC_ADDRESS_ENV
from runner.runtime import LaunchRequest, ReplicaStatus, make_runtime
from runner.runtime.netif import interface_of

log = logging.getLogger("runner.agent")

AGENT_NAMESPACE = "runner"
AGENT_MAX_CONCURRENCY = 256
REFUSALS_KEPT = 100

#: What each operation answers, as JSON both ways: the control plane validates a node's answer
#: against these, never unpickles it.
RESULT_TYPES: dict[str, TypeAdapter[Any]] = {
    "info": TypeAdapter(dict[str, Any]),
    "start": TypeAdapter(ReplicaStatus),
    "status": TypeAdapter(ReplicaStatus),
    "wait": TypeAdapter(ReplicaStatus),
    "stop": TypeAdapter(ReplicaStatus),
    "logs": TypeAdapter(list[str]),
    "remove": TypeAdapter(None),
    "list": TypeAdapter(list[ReplicaStatus]),
    "prepare_challenge": TypeAdapter(None),
    "challenge": TypeAdapter(dict[str, Any]),
}


def agent_name(node: str) -> str:
    return f"agent-{node}"


class AgentWork:
    """What the agent does, behind ``NodeAgent.call``: runs replicas on its node through a runtime
    (Docker or processes), on the control plane's verified commands only."""

    def __init__(
        self, node: str, runtime: str, state_dir: str, workdir: str, artifacts_dir: str, registry: str = ""
    ) -> None:
        self.node = node
        self._address = ""
        # Replicas' ports are published where the gateway and players reach this node: the address
        # its machine gave at `runner node join` (``PUBLIC_ADDRESS_ENV``, in the Ray node's
        # environment, which its workers inherit), loopback for a CPU-mode node. Its engine pulls
        # missing images from the network's registry and keeps as many GB of them as the machine
        # gave at join (``IMAGE_CACHE_GB_ENV``): a machine's disk is its own to budget.
        cache_gb = os.environ.get(IMAGE_CACHE_GB_ENV)
        self.runtime = make_runtime(
            runtime,
            node=node,
            state_dir=Path(state_dir),
            workdir=Path(workdir),
            artifacts_dir=Path(artifacts_dir),
            publish_host=os.environ.get(PUBLIC_ADDRESS_ENV, "127.0.0.1"),
            registry=registry,
            image_cache_gb=float(cache_gb) if cache_gb else None,
        )
        self.started_at = time.time()
        self.solver = ChallengeSolver()
        keys_path = os.environ.get(NODE_KEYS_ENV)
        self.keys: NodeKeys | None = node_keys(Path(keys_path)) if keys_path else None
        self.control_public = os.environ.get(CONTROL_PUBLIC_KEY_ENV, "")
        self.nonces_path = nonce_book_path(Path(keys_path)) if keys_path else None
        self.nonces = load_nonce_book(self.nonces_path) if self.nonces_path else NonceBook()
        self.refusals: deque[dict[str, Any]] = deque(maxlen=REFUSALS_KEPT)
        self.refusals_total = 0
        self._lock = threading.Lock()  # a threaded actor: the nonce book and refusals are shared

    def call(self, command: bytes) -> bytes:
        """Act on one command, if it is the control plane's, for this node, fresh and new."""
        if self.keys is None or not self.control_public:
            return b"this node joined without keys: it acts on no command"
        try:
            with self._lock:
                opened = open_command(
                    command,
                    node=self.node,
                    control_public=self.control_public,
                    keys=self.keys,
                    nonces=self.nonces,
                    now=time.time(),
                )
                self._keep_nonces()
        except WireError as exc:
            return self._refuse(str(exc))
        except Exception as exc:  # bytes that are not a command at all
            return self._refuse(f"unreadable command ({type(exc).__name__})")
        try:
            result = getattr(self, opened.op)(*opened.args)
            encoded = RESULT_TYPES[opened.op].dump_python(result, mode="json")
        except Exception as exc:  # the control plane reads an error, never a pickled exception
            log.exception("%s failed", opened.op)
            return make_reply(self.keys, node=self.node, nonce=opened.nonce, refused=f"{type(exc).__name__}: {exc}")
        return make_reply(self.keys, node=self.node, nonce=opened.nonce, result=encoded)

    def _keep_nonces(self) -> None:
        """Keep the nonce book on disk before acting: a restarted agent refuses a replay too.
        A disk that cannot take it costs that, not the node's work (the TTL still bounds it)."""
        if self.nonces_path is None:
            return
        try:
            save_nonce_book(self.nonces_path, self.nonces)
        except OSError:
            log.exception("cannot keep the nonce book at %s", self.nonces_path)

    def _refuse(self, reason: str) -> bytes:
        with self._lock:
            self.refusals_total += 1
            self.refusals.append({"seq": self.refusals_total, "at": time.time(), "reason": reason})
        log.warning("refused a command: %s", reason)
        assert self.keys is not None
        return make_reply(self.keys, node=self.node, nonce="", refused=reason)

    def info(self) -> dict[str, Any]:
        """Heartbeat and identity: which runtime, which process, which Ray node; and the commands
        refused since it started (the control plane audits each once, by ``seq``)."""
        with self._lock:
            refusals = list(self.refusals)
        return {
            "node": self.node,
            "runtime": self.runtime.name,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "ray_node_id": ray.get_runtime_context().get_node_id(),
            "started_at": self.started_at,
            "now": time.time(),
            "refusals": refusals,
        }

    def node_address(self) -> str:
        """This node's address as Ray (and so the gang's MASTER_ADDR) knows it: the one its raylet
        was started with, which ``ray.util.get_node_ip_address()`` in a worker does not always
        give (seen here: the host's eth0 address for a node started on 127.0.0.1)."""
        if not self._address:
            me = ray.get_runtime_context().get_node_id()
            self._address = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == me), "") or (
                ray.util.get_node_ip_address()
            )
        return self._address

    def host_network_env(self, request: LaunchRequest) -> LaunchRequest:
        """A host-networked replica is told which interface holds this node's address (gloo's and,
        on real GPUs, NCCL's), so it advertises the address its peers reach; the spec's own
        choice wins. Only the node knows its interface names, hence here and not in the gang."""
        if not request.host_network:
            return request
        wanted = ["GLOO_SOCKET_IFNAME"] + (["NCCL_SOCKET_IFNAME"] if request.real_gpus else [])
        missing = [name for name in wanted if name not in request.env]
        interface = interface_of(self.node_address()) if missing else None
        if not interface:
            return request
        return dataclasses.replace(request, env={**request.env, **{name: interface for name in missing}})

    def start(self, request: LaunchRequest) -> ReplicaStatus:
        """Start (or adopt) a replica. Runtime errors become an EXITED status with the reason,
        so the supervisor's retry rules apply to them like to any other failed attempt."""
        try:
            return self.runtime.start(self.host_network_env(request))
        except RunnerError as exc:  # ImageError: not on this node; PortInUseError: a host port taken
            return ReplicaStatus(
                key=request.key,
                state=ReplicaState.EXITED,
                exit_code=125,
                error=str(exc),
                start_failure=StartFailure.of(exc).value,
            )
        except Exception as exc:  # docker APIError and friends: report, do not kill the agent
            return ReplicaStatus(
                key=request.key,
                state=ReplicaState.EXITED,
                exit_code=125,
                error=f"{type(exc).__name__}: {exc}",
                start_failure=StartFailure.OTHER.value,
            )

    def status(self, key: str) -> ReplicaStatus:
        return self.runtime.status(key)

    def wait(self, key: str, timeout_s: float) -> ReplicaStatus:
        return self.runtime.wait(key, timeout_s)

    def logs(self, key: str, start_line: int = 0, final: bool = False) -> list[str]:
        return self.runtime.logs(key, start_line, final)

    def stop(self, key: str, grace_s: float = 10.0) -> ReplicaStatus:
        return self.runtime.stop(key, grace_s)

    def remove(self, key: str) -> None:
        self.runtime.remove(key)

    def list(self) -> list[ReplicaStatus]:
        return self.runtime.list()

    def prepare_challenge(self, seed: int, n: int) -> None:
        """Build the checker's challenge matrices on this node's device (not timed)."""
        self.solver.prepare(seed, n)

    def challenge(self, challenge: Challenge) -> dict[str, Any]:
        """The checker's timed benchmark challenge, computed on this node (``runner.benchmark``)."""
        return self.solver.solve(challenge)


class NodeAgent:
    """What Ray exposes of a node agent: ``call`` and nothing else (every public method of an
    actor class can be called by any token holder). Its worker is titled ``ray::NodeAgent``."""

    def __init__(self, *args: Any) -> None:
        self._agent = AgentWork(*args)

    def call(self, command: bytes) -> bytes:
        return self._agent.call(command)


RemoteNodeAgent = ray.remote(NodeAgent)


def get_or_create_agent(
    node: str, *, runtime: str, state_dir: Path, workdir: Path, artifacts_dir: Path, registry: str = ""
) -> Any:
    """The node's agent actor, created on that node (by its ``node`` label) if it is not there.

    Detached and named, so it outlives a control-plane restart and is found again by name.
    ``num_cpus=0``: the agent itself costs nothing the workloads could use.
    """
    return RemoteNodeAgent.options(
        name=agent_name(node),
        namespace=AGENT_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=AGENT_MAX_CONCURRENCY,
        label_selector={"node": node},
        max_restarts=-1,
    ).remote(node, runtime, str(state_dir), str(workdir), str(artifacts_dir), registry)
