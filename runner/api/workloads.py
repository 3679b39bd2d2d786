"""Tenant routes for workloads: submit (with admission), list, get, wait, cancel, logs, explain."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Body, Depends, Header, Query
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from runner.api import schemas
from runner.api.auth import Tenant
from runner.api.context import AppContext, context, long_polls
from runner.api.encoding import FiniteJSONResponse
from runner.api.limits import LongPolls
from runner.core import budget, ledger
from runner.core.budget import Estimate
from runner.core.demand import Demand
from runner.core.errors import PolicyError, UserError
from runner.core.events import EventKind
from runner.core.image_refs import from_network_registry
from runner.core.network_store import foreign_prefix_problem
from runner.core.policy import KYC, TenantFacts, admit_tenant
from runner.core.spec import AnySpec, parse_workload, spec_to_dict
from runner.core.spec.fields import MAX_ROW_ID
from runner.core.states import WorkloadState
from runner.store import Event, LogLine, Replica, Store, Workload
from runner.supervisor.core import tenant_artifacts

router = APIRouter()
#: The media type of the log stream: one JSON object a line.
NDJSON = "application/x-ndjson"
Ctx = Annotated[AppContext, Depends(context)]
Polls = Annotated[LongPolls, Depends(long_polls)]


def workload_json(w: Workload) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "kind": w.kind,
        "state": w.state,
        "attempts": w.attempts,
        "relocations": w.relocations,
        "node": w.node,
        "exit_code": w.exit_code,
        "message": w.message,
        "source": w.source,
        "created_at": w.created_at,
        "started_at": w.started_at,
        "finished_at": w.finished_at,
        "cancel_requested": w.cancel_requested,
        "stop_reason": w.stop_reason,
        "stop_kind": w.stop_kind or None,
        "tenant": w.tenant_id,
        "spec": w.spec,
    }


def replica_json(r: Replica) -> dict[str, Any]:
    return {
        "key": r.key,
        "index": r.index,
        "attempt": r.attempt,
        "node": r.node,
        "state": r.state,
        "handle": r.handle,
        "exit_code": r.exit_code,
        "error": r.error,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "provider": r.provider_id,
        "price_micros": r.price_micros,
        "milli_units": r.milli_units,
        "metered_s": r.metered_s,
        "ports": r.ports or {},
        "reports": r.reports or {},
        "pull_done_bytes": r.pull_done_bytes or 0,
        "pull_total_bytes": r.pull_total_bytes or 0,
    }


def event_json(e: Event) -> dict[str, Any]:
    return {"ts": e.ts, "state": e.state, "kind": e.kind, "message": e.message}


def _ndjson(line: LogLine) -> bytes:
    return (
        json.dumps({"id": line.id, "replica": line.replica_key, "seq": line.seq, "line": line.line}) + "\n"
    ).encode()


def host_path_problem(uri: str, root: Path) -> str | None:
    """Why a ``file://`` URI in a spec may not be used, or None. Nodes bind-mount such folders
    into the tenant's containers, so a tenant may only name folders under the network's artifact
    store; anything else (``file:///etc``, ``..`` tricks) would hand it the host's files."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        return None
    path = os.path.normpath(unquote(parts.path))
    base = os.path.normpath(str(root))
    if path == base or path.startswith(base + os.sep):
        return None
    return f"{uri} is outside the artifact store {root.as_uri()}/. To fix: leave the URI out (the runner picks one) or use s3://"


def separate_hosts_problem(spec: AnySpec, shared_filesystem: bool, network_store: bool = False) -> str | None:
    """Why a spec's ``file://`` folder cannot work on this network, or None. A ``file://`` URI is
    a folder on one machine: it serves a gang or a service only where every replica shares that
    filesystem (CPU mode). Across providers' machines a gang's ranks (and the next attempt, placed
    elsewhere on resume) would each see a different folder, so it is refused here, at submit, not
    found out at run time. Left out, a checkpoint goes to the network's store where it has one."""
    if shared_filesystem:
        return None
    checkpoint = getattr(getattr(spec, "checkpoint", None), "uri", None)
    if (
        spec.kind == "training"
        and not (checkpoint or "").startswith("s3://")
        and not (network_store and not checkpoint)
    ):
        where = f"checkpoint.uri {checkpoint}" if checkpoint else "the default checkpoint folder (a file:// one)"
        return (
            f"{where} is a folder on one machine, and this network's nodes are separate machines (a resumed "
            "attempt may run on another). To fix: checkpoint.uri: s3://BUCKET/PREFIX, with AWS_ENDPOINT_URL, "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in env; or the operator gives the network a store "
            "(runner up --advertise ... --store s3://BUCKET --store-endpoint URL)"
        )
    model = getattr(spec, "model", None) or ""
    if model.startswith("file://"):
        return (
            f"model {model} is a folder on one machine, and this service's replicas run on providers' machines. "
            "To fix: train with checkpoint.uri: s3://... and serve that URI"
        )
    return None


def admit(ctx: AppContext, tenant_id: str, spec: AnySpec) -> Estimate | None:
    """KYC gate, host paths, the image: refuse what the tenant may not run. Returns what the
    workload may cost when the tenant has a budget (None: no budget), for the store to reserve
    while it inserts the workload: whether it fits is decided there, with the tenant locked, so
    concurrent submits cannot each spend the same remaining money (``runner.core.budget``)."""
    t = ctx.store.get_tenant(tenant_id)
    verdict = admit_tenant(TenantFacts(id=t.id, country=t.country, kyc=KYC(t.kyc)))
    if not verdict:
        raise PolicyError(verdict.reason)
    root = tenant_artifacts(ctx.supervisor.settings, tenant_id)
    for field_path, uri in (
        ("checkpoint.uri", getattr(getattr(spec, "checkpoint", None), "uri", None)),
        ("model", getattr(spec, "model", None)),
    ):
        problem = host_path_problem(uri, root) if uri else None
        if problem:
            raise PolicyError(f"{field_path}: {problem}")
        store = ctx.supervisor.network_store
        problem = foreign_prefix_problem(store, tenant_id, uri, field_path) if uri and store else None
        if problem:
            raise PolicyError(problem)
    registry = ctx.supervisor.settings.registry
    if from_network_registry(spec.image, registry) and ctx.store.image_digest(spec.image) is None:
        raise UserError(
            f"image: {spec.image!r} is not in this network's registry ({registry}): the operator never pushed it. "
            "To fix: name an image the operator pushed (runner/smoke, runner/training, runner/inference, "
            "runner/gaming), or one in a registry of your own (host/repo:tag)"
        )
    if spec.secrets:
        have = {row.name for row in ctx.store.secrets_of(tenant_id)}
        for var, name in sorted(spec.secrets.items()):
            if name not in have:
                raise UserError(f"secrets.{var}: this tenant has no secret {name!r}. To fix: runner secrets set {name}")
    problem = separate_hosts_problem(
        spec, ctx.supervisor.settings.shared_filesystem, network_store=ctx.supervisor.network_store is not None
    )
    if problem:
        raise UserError(f"{spec.kind} {spec.name!r}: {problem}")
    if t.budget_micros is None:
        return None
    d = Demand.from_spec(spec)
    return budget.estimate(
        price_per_hour=worst_price(ctx, d),
        milli_units=ledger.units_milli(d.gpus or d.cpu),
        replicas=d.replicas,
        timeout_s=spec.timeout,
        horizon_s=ctx.config.market.reserve_s_without_timeout,
    )


def worst_price(ctx: AppContext, d: Demand) -> int:
    """The highest price per unit-hour this workload could be placed at: its cap, else the dearest
    fitting node in the registry."""
    if d.gpus and d.max_price_micros is not None:
        return d.max_price_micros
    nodes = ctx.store.registry()
    if d.gpus:
        return max((n.gpu_price_micros for n in nodes if n.gpu_model in d.gpu_models), default=0)
    return max((n.cpu_price_micros for n in nodes), default=ctx.config.market.cpu_price_per_core_hour)


@router.post(
    "/v1/workloads",
    status_code=201,
    response_model=schemas.Workload,
    responses={200: {"model": schemas.Workload, "description": "Already submitted under this Idempotency-Key"}},
)
def submit(
    tenant_id: Tenant,
    ctx: Ctx,
    spec: Annotated[dict[str, Any], Body(embed=True)],
    source: Annotated[str, Body(embed=True)] = "<api>",
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FiniteJSONResponse:
    parsed = parse_workload(spec, source=source)
    estimate = admit(ctx, tenant_id, parsed)
    row, created = ctx.store.create_workload(
        tenant_id=tenant_id,
        spec=spec_to_dict(parsed),
        source=source,
        idempotency_key=idempotency_key,
        estimate=estimate,
        max_unfinished=ctx.config.limits.unfinished_workloads_per_tenant,
    )
    ctx.supervisor.wake()
    return FiniteJSONResponse(workload_json(row), status_code=201 if created else 200)


@router.get("/v1/workloads", response_model=list[schemas.Workload])
def list_workloads(tenant_id: Tenant, ctx: Ctx, limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    return [workload_json(w) for w in ctx.store.list_workloads(tenant_id=tenant_id, limit=limit)]


@router.get("/v1/workloads/{workload_id}", response_model=schemas.WorkloadDetail)
def get_workload(tenant_id: Tenant, ctx: Ctx, workload_id: str) -> dict[str, Any]:
    w = ctx.store.get_workload(workload_id, tenant_id)
    return {
        **workload_json(w),
        "replicas": [replica_json(r) for r in ctx.store.replicas(w.id)],
        "events": [event_json(e) for e in ctx.store.events(w.id)],
    }


@router.get("/v1/workloads/{workload_id}/explain", response_model=schemas.Explain)
def explain(tenant_id: Tenant, ctx: Ctx, workload_id: str) -> dict[str, Any]:
    """The candidate table of the workload's latest placement decision."""
    w = ctx.store.get_workload(workload_id, tenant_id)
    record = ctx.store.last_placement(w.id)
    if record is None:
        return {"workload": w.id, "state": w.state, "decided": False, "message": w.message, "rows": []}
    return {
        "workload": w.id,
        "state": w.state,
        "decided": True,
        "attempt": record.attempt,
        "ts": record.ts,
        "placed": record.placed,
        "nodes": record.nodes,
        "message": record.message,
        "rows": record.rows,
        "total_nodes": record.total_nodes,
    }


@router.get("/v1/workloads/{workload_id}/wait", response_model=schemas.Workload)
def wait(
    tenant_id: Tenant,
    ctx: Ctx,
    polls: Polls,
    workload_id: str,
    until: str = Query("terminal", pattern="^(terminal|running)$"),
    timeout: float = Query(25.0, ge=0, le=120),
) -> dict[str, Any]:
    """Long-poll: answer as soon as the workload reaches ``until`` (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout

    def reached(w: Workload) -> bool:
        state = WorkloadState(w.state)
        return state.is_terminal() or (until == "running" and state == WorkloadState.RUNNING)

    w = ctx.store.get_workload(workload_id, tenant_id)
    if reached(w) or timeout == 0:
        return workload_json(w)
    with polls.hold(tenant_id, f"wait {workload_id}"):
        while not reached(w) and time.monotonic() < deadline:
            with ctx.supervisor.changed:
                ctx.supervisor.changed.wait(timeout=min(1.0, max(deadline - time.monotonic(), 0)))
            w = ctx.store.get_workload(workload_id, tenant_id)
    return workload_json(w)


@router.post("/v1/workloads/{workload_id}/cancel", response_model=schemas.Workload)
def cancel(tenant_id: Tenant, ctx: Ctx, workload_id: str) -> dict[str, Any]:
    w = ctx.store.get_workload(workload_id, tenant_id)
    if not WorkloadState(w.state).is_terminal():
        ctx.store.update_workload(w.id, cancel_requested=True)
        ctx.store.add_event(w.id, w.state, "cancel requested", kind=EventKind.REQUESTED, data={"request": "cancel"})
        ctx.supervisor.wake()
    return workload_json(ctx.store.get_workload(w.id))


@router.get(
    "/v1/workloads/{workload_id}/logs",
    response_class=StreamingResponse,  # its media type is NDJSON's, named below
    responses={
        200: {
            "description": "Log lines as NDJSON: one LogLine object a line",
            "content": {NDJSON: {"schema": schemas.json_schema(schemas.LogLine)}},
        }
    },
)
async def logs(
    tenant_id: Tenant,
    ctx: Ctx,
    polls: Polls,
    workload_id: str,
    after: int = Query(0, ge=0, le=MAX_ROW_ID),
    follow: bool = False,
) -> StreamingResponse:
    """Log lines as NDJSON (``{"id", "replica", "seq", "line"}``), streamed while ``follow`` and the
    workload is not finished. ``after`` is the last id seen: a reconnect resumes, no line twice.
    A follow is a long-poll: it counts against the tenant's (``runner.api.limits``) until it ends
    or the client goes away."""
    store = ctx.store
    store.get_workload(workload_id, tenant_id)
    release = polls.acquire(tenant_id, f"logs --follow {workload_id}") if follow else (lambda: None)

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for chunk in _lines_of(store, workload_id, after, follow):
                yield chunk
        finally:
            release()

    return StreamingResponse(lines(), media_type=NDJSON, background=BackgroundTask(release))


async def _lines_of(store: Store, workload_id: str, after: int, follow: bool) -> AsyncIterator[bytes]:
    """The workload's log lines after id ``after`` as NDJSON, then (``follow``) new ones as they
    are stored, until the workload has finished and every line is out."""
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
