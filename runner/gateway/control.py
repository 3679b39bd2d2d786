"""What the gateway learns besides requests: routes and keys from the control plane, health from
the replicas themselves.

- **Routes**: ``GET /v1/gateway/routes`` (with the operator key) every ``ROUTES_EVERY_S``. When
  the control plane does not answer (restarting, say), the last table stays: replicas keep
  serving through a control-plane restart, and the gateway's own probes still take a dead one
  out.
- **Health**: every backend's ``/healthz``, every ``PROBE_EVERY_S`` (more often while it is not
  healthy, so a replica that finished loading gets traffic soon). A refused connection or a
  non-200 answer takes it out at once; a probe that times out only counts (a replica busy with
  a burst may answer slowly), ``PROBE_TIMEOUTS`` in a row take it out.
- **Keys**: ``GET /v1/whoami`` with the caller's own key says whose it is and whether that
  tenant may be served now (its KYC); answers are cached (``KEY_TTL_S``; an unknown key for
  ``BAD_KEY_TTL_S``), and concurrent first requests with one key share one lookup. The routes
  carry the control plane's ``access_epoch``: when it changes (a key revoked or rotated, a
  tenant's KYC or country changed) every cached answer is forgotten, so a revocation holds here
  within a routes refresh (half a second) of being made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from runner.gateway.table import Backend, Table
from runner.tls import trusting

log = logging.getLogger("runner.gateway")

ROUTES_EVERY_S = 0.5
PROBE_EVERY_S = 1.0
PROBE_UNHEALTHY_EVERY_S = 0.25
PROBE_TIMEOUT_S = 2.0
PROBE_TIMEOUTS = 2
KEY_TTL_S = 60.0
BAD_KEY_TTL_S = 2.0
MAX_CACHED_KEYS = 10_000
#: Connections kept per backend; idle ones close after this many seconds, well before the
#: replica's own keep-alive (75 s), so the gateway never sends on a connection the replica is closing.
POOL_SIZE = 512
POOL_IDLE_S = 30.0


#: What a key gives: its tenant (None: not a tenant's valid key) and why that tenant may not be
#: served now (None: it may).
Access = tuple[str | None, str | None]
NO_ACCESS: Access = (None, None)


class ControlPlaneUnavailable(Exception):
    """The control plane did not answer a key lookup."""


def new_session(base_url: str | None = None, *, timeout_s: float = 600.0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=POOL_IDLE_S, ttl_dns_cache=None)
    return aiohttp.ClientSession(
        base_url=base_url,
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=2.0),
    )


class Control:
    """The gateway's background work and its caches; ``table`` is what the proxy routes with."""

    def __init__(self, server_url: str, operator_key: str, *, server_ca: Path | None = None) -> None:
        """``server_ca``: the network's CA, the only one the control plane's certificate is
        checked against (None: the system's)."""
        self.server_url = server_url.rstrip("/")
        self.operator_key = operator_key
        self._server_ssl = trusting(server_ca)
        self.table = Table()
        self.stats = {"requests": 0, "retries": 0, "upstream_errors": 0}
        #: Requests in flight through the gateway, per tenant (``proxy.MAX_INFLIGHT_PER_TENANT``).
        self.inflight: Counter[str] = Counter()
        #: key -> (tenant or None, why that tenant may not be served or None, expiry)
        self._keys: dict[str, tuple[str | None, str | None, float]] = {}
        self._access_epoch: int | None = None
        self._lookups: dict[str, asyncio.Future[str | None]] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._api: aiohttp.ClientSession | None = None
        self._warned = False

    async def start(self) -> None:
        self._api = aiohttp.ClientSession(
            self.server_url,
            timeout=aiohttp.ClientTimeout(total=10),
            connector=aiohttp.TCPConnector(ssl=self._server_ssl),
        )
        await self.refresh_routes()
        self._tasks.append(asyncio.create_task(self._routes_loop(), name="routes"))

    async def stop(self) -> None:
        for task in [*self._tasks, *self._probes.values()]:
            task.cancel()
        for b in self.table.backends.values():
            await self._close(b)
        if self._api is not None:
            await self._api.close()

    # -- routes ----------------------------------------------------------------------------------
    async def _routes_loop(self) -> None:
        while True:
            await asyncio.sleep(ROUTES_EVERY_S)
            await self.refresh_routes()

    async def refresh_routes(self) -> None:
        assert self._api is not None
        try:
            async with self._api.get(
                "/v1/gateway/routes", headers={"Authorization": f"Bearer {self.operator_key}"}
            ) as resp:
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(
                        resp.request_info, (), status=resp.status, message=(await resp.text())[:200]
                    )
                doc = await resp.json()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            if not self._warned:
                log.warning(
                    "control plane at %s does not answer (%s); routing with the last table",
                    self.server_url,
                    exc.__class__.__name__,
                )
                self._warned = True
            return
        self._warned = False
        epoch = doc.get("access_epoch")
        if epoch != self._access_epoch:
            if self._access_epoch is not None:
                log.info(
                    "access changed at the control plane (epoch %s): forgetting %d cached keys", epoch, len(self._keys)
                )
            self._keys.clear()
            self._access_epoch = epoch
        added, removed = self.table.update(doc["services"])
        for b in added:
            b.session = new_session(b.url)
            self._probes[b.key] = asyncio.create_task(self._probe_loop(b), name=f"probe {b.key}")
            log.info("backend %s (%s on %s) added; probing", b.key, b.url, b.node)
        for b in removed:
            probe = self._probes.pop(b.key, None)
            if probe is not None:
                probe.cancel()
            log.info("backend %s removed", b.key)
            asyncio.create_task(self._close_when_idle(b))

    # -- health ----------------------------------------------------------------------------------
    async def _probe_loop(self, b: Backend) -> None:
        while not b.removed:
            await self.probe(b)
            await asyncio.sleep(PROBE_EVERY_S if b.healthy else PROBE_UNHEALTHY_EVERY_S)

    async def probe(self, b: Backend) -> None:
        try:
            async with b.session.get("/healthz", timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as resp:
                await resp.read()
                ok = resp.status == 200
            b.timeouts = 0
        except asyncio.TimeoutError:
            b.timeouts += 1
            ok = b.healthy and b.timeouts < PROBE_TIMEOUTS
        except aiohttp.ClientError:
            ok = False
        if ok != b.healthy and not b.removed:
            log.info("backend %s is %s", b.key, "healthy" if ok else "unhealthy")
        b.healthy = ok and not b.removed

    def mark_down(self, b: Backend, why: str) -> None:
        """A real request found the backend refusing or not ready: take it out until a probe says
        otherwise (its probe loop runs fast while it is unhealthy)."""
        if b.healthy:
            log.info("backend %s is unhealthy: %s", b.key, why)
        b.healthy = False

    async def _close_when_idle(self, b: Backend, wait_s: float = 120.0) -> None:
        deadline = time.monotonic() + wait_s
        while b.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await self._close(b)

    @staticmethod
    async def _close(b: Backend) -> None:
        if b.session is not None and not b.session.closed:
            await b.session.close()

    # -- keys ------------------------------------------------------------------------------------
    def cached_tenant(self, key: str) -> tuple[bool, Access]:
        """(known, access) from the cache; access's tenant None for a key that is not valid."""
        hit = self._keys.get(key)
        if hit is None or hit[2] < time.monotonic():
            return False, NO_ACCESS
        return True, (hit[0], hit[1])

    async def tenant_of(self, key: str) -> Access:
        """The tenant a key speaks for and why it may not be served (None: it may); the tenant is
        None when it is not a tenant's key (or not a key, or a revoked one)."""
        known, access = self.cached_tenant(key)
        if known:
            return access
        if len(self._keys) > MAX_CACHED_KEYS:  # a flood of made-up keys must not grow it for good
            now = time.monotonic()
            self._keys = {k: v for k, v in self._keys.items() if v[2] >= now}
        pending = self._lookups.get(key)
        if pending is None:
            pending = self._lookups[key] = asyncio.get_running_loop().create_future()
            try:
                access = await self._whoami(key)
                pending.set_result(access)
            except ControlPlaneUnavailable as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: the waiters (if any) re-raise it
                raise
            finally:
                del self._lookups[key]
            return access
        return await asyncio.shield(pending)

    async def _whoami(self, key: str) -> Access:
        assert self._api is not None
        try:
            async with self._api.get("/v1/whoami", headers={"Authorization": f"Bearer {key}"}) as resp:
                doc: Any = await resp.json(content_type=None) if resp.status in (200, 401) else None
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise ControlPlaneUnavailable(str(exc)) from None
        if status == 200:
            tenant, refused = doc.get("tenant"), doc.get("refused")
            self._keys[key] = (tenant, refused, time.monotonic() + KEY_TTL_S)
            return tenant, refused
        if status == 401:
            self._keys[key] = (None, None, time.monotonic() + BAD_KEY_TTL_S)
            return NO_ACCESS
        raise ControlPlaneUnavailable(f"HTTP {status}")
