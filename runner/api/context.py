"""What every route works with, set once on the app: the store, the supervisor, the rules."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from runner.api.limits import LongPolls
from runner.core.certs import KeyPair
from runner.core.network import NetworkConfig
from runner.store import Store
from runner.supervisor import Supervisor


@dataclass(frozen=True)
class AppContext:
    store: Store
    supervisor: Supervisor
    config: NetworkConfig
    runtime_name: str
    #: Handed to machines that join: where Ray's head is and the cluster token.
    ray_address: str
    ray_token: str
    #: The network's CA (``runner.tls``), which signs each joining machine's certificate; None
    #: only in a network without TLS.
    authority: KeyPair | None = None


def context(request: Request) -> AppContext:
    return request.app.state.ctx


def long_polls(request: Request) -> LongPolls:
    """The app's count of long-polls held (``runner.api.limits``)."""
    return request.app.state.long_polls
