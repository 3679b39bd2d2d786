"""The control plane's side of one node's agent: commands made for that node, answers checked.

Each call seals and signs a command for the node (``runner.core.agent_wire``) and sends it to the
agent actor through Ray; ``read`` takes the answer as raw bytes, straight from Ray's core worker,
and believes it only if it is JSON the node's own key signed for that command. It never calls
``ray.get`` on an answer: Ray would unpickle whatever the actor returned, and an actor registered
under a node's name by anyone holding the cluster token could return a pickle that runs its code
here, in the process that holds the database and the keys.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ray
from ray._private import ray_constants
from ray._private.worker import global_worker

from runner.agent import RESULT_TYPES
from runner.core.agent_wire import ControlKey, NodePublicKeys, Refused, WireError, make_command, open_reply
from runner.runtime import LaunchRequest


class AgentUnreachable(Exception):
    """No answer: the actor died, is restarting, failed, or the wait ran out (``dead``: Ray
    reported an error object, so this handle is no use any more)."""

    def __init__(self, message: str, *, dead: bool = False) -> None:
        super().__init__(message)
        self.dead = dead


class NotTheNode(Exception):
    """An answer the node's key did not sign: whoever answers is not that node's agent."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"the agent answering for {node} is not that node's: {reason}")
        self.node, self.reason = node, reason


class NotTheNodeAnswer(Exception):
    """``read_raw`` found an object no agent of ours returns: the caller names the node."""


def read_raw(ref: Any, timeout_s: float | None = None) -> bytes:
    """The bytes an actor returned, without deserializing anything: only a ``bytes`` return
    (Ray's RAW object) is accepted; an error object is reported by its kind alone."""
    timeout_ms = -1 if timeout_s is None else int(timeout_s * 1000)
    try:
        [(data, metadata, _transport)] = global_worker.core_worker.get_objects([ref], timeout_ms)
    except ray.exceptions.GetTimeoutError as exc:
        raise AgentUnreachable("timed out") from exc
    kind = (metadata or b"").split(b",")[0]
    if kind == ray_constants.OBJECT_METADATA_TYPE_RAW:
        return b"" if data is None else data.to_pybytes()
    if kind.isdigit():  # a Ray error (actor died, task failed...): its kind is all that is read
        raise AgentUnreachable(f"ray error {int(kind)}", dead=True)
    raise NotTheNodeAnswer(f"an answer that is not bytes (metadata {kind[:32]!r})")


class AgentLink:
    """One node's agent actor as the control plane uses it (thread-safe: the checker and the
    supervisor's loop share it)."""

    #: Calls awaiting an answer, ref -> (nonce, op), over all links: an answer may be read through
    #: a newer link to the same node than the one that sent the call.
    _nonces: dict[Any, tuple[str, str]] = {}
    _lock = threading.Lock()

    def __init__(self, node: str, actor: Any, keys: NodePublicKeys, control: ControlKey) -> None:
        self.node, self.actor, self.keys, self.control = node, actor, keys, control

    def send(self, op: str, *args: Any, answer: bool = True) -> Any:
        """Send one command; its ref is for ``read`` (``answer=False``: nobody will read it)."""
        data, nonce = make_command(self.control, self.node, self.keys, op, args, now=time.time())
        ref = self.actor.call.remote(data)
        if answer:
            with self._lock:
                self._nonces[ref] = (nonce, op)
        return ref

    def read(self, ref: Any, timeout_s: float | None = None) -> Any:
        """The answer to ``send``'s ``ref``, typed by its operation. Raises ``AgentUnreachable``
        (no answer, or the agent declined) or ``NotTheNode`` (an impostor answered)."""
        with self._lock:
            nonce, op = self._nonces.pop(ref)
        try:
            data = read_raw(ref, timeout_s)
            result = open_reply(data, node=self.node, nonce=nonce, node_keys=self.keys)
        except NotTheNodeAnswer as exc:
            raise NotTheNode(self.node, str(exc)) from None
        except Refused as exc:
            raise AgentUnreachable(str(exc)) from None
        except WireError as exc:
            raise NotTheNode(self.node, str(exc)) from None
        try:
            return RESULT_TYPES[op].validate_python(result)
        except ValueError as exc:
            raise NotTheNode(self.node, f"an answer to {op} that is not one: {exc}") from None

    def forget(self, ref: Any) -> None:
        """Drop a call whose answer will not be read."""
        with self._lock:
            self._nonces.pop(ref, None)

    # -- the operations, by name -------------------------------------------------------------------
    def info(self) -> Any:
        return self.send("info")

    def start(self, request: LaunchRequest) -> Any:
        return self.send("start", request)

    def status(self, key: str) -> Any:
        return self.send("status", key)

    def wait(self, key: str, timeout_s: float) -> Any:
        return self.send("wait", key, timeout_s)

    def logs(self, key: str, start_line: int = 0, final: bool = False) -> Any:
        return self.send("logs", key, start_line, final)

    def stop(self, key: str, grace_s: float = 10.0) -> Any:
        return self.send("stop", key, grace_s)

    def remove(self, key: str) -> Any:
        """Fire and forget: its ref is only ever waited on."""
        return self.send("remove", key, answer=False)

    def list(self) -> Any:
        return self.send("list")
