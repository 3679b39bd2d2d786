"""The REST API: a thin FastAPI layer over the store and the supervisor.

Every route requires ``Authorization: Bearer <api key>``; there is no open route. Errors come
back as ``{"error": <class>, "message": <text>}`` with a status that matches the error class, so
the client can raise the same named error the server did.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from runner.errors import AuthError, ConflictError, NotFoundError, RunnerError, SpecError, UserError
from runner.spec import parse_workload, spec_to_dict
from runner.states import WorkloadState
from runner.store import Event, LogLine, Replica, Store, Workload
from runner.supervisor import Supervisor

_STATUS = {AuthError: 401, NotFoundError: 404, ConflictError: 409, SpecError: 422, UserError: 400}


def workload_json(w: Workload) -> dict[str, Any]:
    return {
        "id": w.id, "name": w.name, "kind": w.kind, "state": w.state, "attempts": w.attempts, "node": w.node,
        "exit_code": w.exit_code, "message": w.message, "source": w.source, "created_at": w.created_at,
        "started_at": w.started_at, "finished_at": w.finished_at, "cancel_requested": w.cancel_requested,
        "spec": w.spec,
    }  # fmt: skip


def replica_json(r: Replica) -> dict[str, Any]:
    return {
        "key": r.key, "index": r.index, "attempt": r.attempt, "node": r.node, "state": r.state, "handle": r.handle,
        "exit_code": r.exit_code, "error": r.error, "started_at": r.started_at, "finished_at": r.finished_at,
    }  # fmt: skip


def _ndjson(line: LogLine) -> bytes:
    return (json.dumps({"id": line.id, "replica": line.replica_key, "seq": line.seq, "line": line.line}) + "\n").encode()


def event_json(e: Event) -> dict[str, Any]:
    return {"ts": e.ts, "state": e.state, "message": e.message}


def current_tenant(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The tenant behind the request's API key; every route depends on it."""
    if not authorization or not authorization.startswith("Bearer "):
        raise AuthError("missing API key. To fix: send 'Authorization: Bearer <key>' ($RUNNER_HOME/api-key)")
    key = authorization.removeprefix("Bearer ").strip()
    cache: dict[str, str] = request.app.state.key_cache
    if key not in cache:
        cache[key] = request.app.state.store.tenant_for_key(key)
    return cache[key]


Tenant = Annotated[str, Depends(current_tenant)]


def create_app(store: Store, supervisor: Supervisor, *, runtime_name: str) -> FastAPI:
    app = FastAPI(title="runner", version="0.1.0", description="Run containerized workloads on rented GPU nodes.")
    app.state.store = store
    app.state.key_cache = {}

    @app.exception_handler(RunnerError)
    async def _runner_error(_: Request, exc: RunnerError) -> JSONResponse:
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
        return JSONResponse({"error": type(exc).__name__, "message": str(exc)}, status_code=status)


    @app.get("/v1/health")
    def health(_: Tenant) -> dict[str, Any]:
        return {"ok": True, "runtime": runtime_name, "nodes": sum(n.alive for n in supervisor.nodes.values())}

    @app.post("/v1/workloads", status_code=201)
    def submit(
        tenant_id: Tenant,
        spec: Annotated[dict[str, Any], Body(embed=True)],
        source: Annotated[str, Body(embed=True)] = "<api>",
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        parsed = parse_workload(spec, source=source)
        row, created = store.create_workload(
            tenant_id=tenant_id, spec=spec_to_dict(parsed), source=source, idempotency_key=idempotency_key
        )
        supervisor.wake()
        return JSONResponse(workload_json(row), status_code=201 if created else 200)

    @app.get("/v1/workloads")
    def list_workloads(tenant_id: Tenant, limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        return [workload_json(w) for w in store.list_workloads(tenant_id=tenant_id, limit=limit)]

    @app.get("/v1/workloads/{workload_id}")
    def get_workload(tenant_id: Tenant, workload_id: str) -> dict[str, Any]:
        w = store.get_workload(workload_id, tenant_id)
        return {
            **workload_json(w),
            "replicas": [replica_json(r) for r in store.replicas(w.id)],
            "events": [event_json(e) for e in store.events(w.id)],
        }

    @app.get("/v1/workloads/{workload_id}/wait")
    def wait(
        tenant_id: Tenant,
        workload_id: str,
        until: str = Query("terminal", pattern="^(terminal|running)$"),
        timeout: float = Query(25.0, ge=0, le=120),
    ) -> dict[str, Any]:
        """Long-poll: answer as soon as the workload reaches ``until`` (or ``timeout`` passes)."""
        deadline = time.monotonic() + timeout

        def reached(w: Workload) -> bool:
            state = WorkloadState(w.state)
            return state.is_terminal() or (until == "running" and state == WorkloadState.RUNNING)

        w = store.get_workload(workload_id, tenant_id)
        while not reached(w) and time.monotonic() < deadline:
            with supervisor.changed:
                supervisor.changed.wait(timeout=min(1.0, max(deadline - time.monotonic(), 0)))
            w = store.get_workload(workload_id, tenant_id)
        return workload_json(w)

    @app.post("/v1/workloads/{workload_id}/cancel")
    def cancel(tenant_id: Tenant, workload_id: str) -> dict[str, Any]:
        w = store.get_workload(workload_id, tenant_id)
        if not WorkloadState(w.state).is_terminal():
            store.update_workload(w.id, cancel_requested=True)
            store.add_event(w.id, w.state, "cancel requested")
            supervisor.wake()
        return workload_json(store.get_workload(w.id))

    @app.get("/v1/workloads/{workload_id}/logs")
    async def logs(
        tenant_id: Tenant, workload_id: str, after: int = Query(0, ge=0), follow: bool = False
    ) -> StreamingResponse:
        """Log lines as NDJSON (``{"id", "replica", "seq", "line"}``), streamed while ``follow`` and the
        workload is not finished. ``after`` is the last id seen: a reconnect resumes, no line twice."""
        store.get_workload(workload_id, tenant_id)

        async def lines() -> AsyncIterator[bytes]:
            cursor = after
            while True:
                # State first, lines second: the end is announced only after the last lines are
                # stored, so a finished state read here means the read below drains everything.
                w = await asyncio.to_thread(store.get_workload, workload_id)
                finished = WorkloadState(w.state).is_terminal()
                batch = await asyncio.to_thread(store.logs_after, workload_id, cursor)
                for line in batch:
                    cursor = line.id
                    yield _ndjson(line)
                if not follow or (finished and not batch):
                    return
                if not batch:
                    await asyncio.sleep(0.1)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/v1/nodes")
    def nodes(_: Tenant) -> list[dict[str, Any]]:
        running: dict[str, int] = {}
        for rep in store.active_replicas():
            running[rep.node] = running.get(rep.node, 0) + 1
        return [{**n.to_dict(), "replicas": running.get(n.name, 0)} for n in supervisor.nodes.values()]

    return app
