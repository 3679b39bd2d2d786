"""The gateway's routing table: each tenant's services and their replicas (backends).

The table is what the control plane last said (``GET /v1/gateway/routes``: the live replicas
with a published port, minus the ones being retired) combined with what the gateway saw itself
(each backend's health, from its own probes and from real requests). A backend is routed to
only while ``healthy``: a new one starts unknown and is not used until its ``/healthz`` answers
200, so a replica still loading its model never sees a request.

Choosing among the healthy backends of a service: the fewest requests in flight (each backend's
own count), ties broken in turn. A replica batches what it holds, so even load keeps every
replica's batches equally full; a slow or stuck replica collects in-flight requests and gets
fewer new ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Backend:
    """One replica of a service, as the gateway sees it."""

    key: str
    node: str
    url: str  # http://host:port
    healthy: bool = False
    #: Requests sent and not yet answered.
    inflight: int = 0
    #: Probe timeouts in a row (a refused connection or a 503 is believed at once).
    timeouts: int = 0
    #: The HTTP session (connection pool) to this backend, owned by the proxy.
    session: Any = None
    #: Set when the backend left the table; its pool is closed once nothing is in flight.
    removed: bool = False


@dataclass(eq=False)
class Service:
    id: str
    name: str
    tenant: str
    created_at: float
    backends: list[Backend] = field(default_factory=list)
    _turn: int = 0

    def pick(self, tried: set[str]) -> Backend | None:
        """The healthy backend not ``tried`` yet with the fewest requests in flight."""
        best: Backend | None = None
        n = len(self.backends)
        self._turn = (self._turn + 1) % n if n else 0
        for k in range(n):
            b = self.backends[(self._turn + k) % n]
            if b.healthy and b.key not in tried and (best is None or b.inflight < best.inflight):
                best = b
        return best

    @property
    def healthy(self) -> int:
        return sum(1 for b in self.backends if b.healthy)


class Table:
    """Services by id and by (tenant, name); backends by replica key."""

    def __init__(self) -> None:
        self.services: dict[str, Service] = {}
        self.by_name: dict[tuple[str, str], Service] = {}
        self.backends: dict[str, Backend] = {}
        #: True once the control plane answered at least once.
        self.loaded = False

    def find(self, tenant: str, ref: str) -> Service | None:
        """A tenant's service by id, or by name (the newest live service of that name)."""
        svc = self.services.get(ref)
        if svc is not None:
            return svc if svc.tenant == tenant else None  # another tenant's: as if it did not exist
        return self.by_name.get((tenant, ref))

    def update(self, services: Iterable[dict[str, Any]]) -> tuple[list[Backend], list[Backend]]:
        """Replace the table with the control plane's answer, keeping what the gateway knows
        about backends that stay; returns the backends (added, removed)."""
        seen: dict[str, Backend] = {}
        new_services: dict[str, Service] = {}
        by_name: dict[tuple[str, str], Service] = {}
        added: list[Backend] = []
        for doc in sorted(services, key=lambda d: d["created_at"]):
            svc = self.services.get(doc["id"]) or Service(doc["id"], doc["name"], doc["tenant"], doc["created_at"])
            backends = []
            for b in doc["backends"]:
                backend = self.backends.get(b["key"])
                if backend is None or backend.url != b["url"]:
                    backend = Backend(key=b["key"], node=b["node"], url=b["url"])
                    added.append(backend)
                seen[backend.key] = backend
                backends.append(backend)
            svc.backends = backends
            new_services[svc.id] = svc
            by_name[(svc.tenant, svc.name)] = svc  # sorted by creation: the newest wins
        removed = [b for key, b in self.backends.items() if seen.get(key) is not b]
        for b in removed:
            b.removed = True
            b.healthy = False
        self.services, self.by_name, self.backends = new_services, by_name, seen
        self.loaded = True
        return added, removed
