"""Tenant routes for gaming sessions: start, list, show, wait until serving, end.

A session is a ``kind: gaming`` workload; these routes are the player-facing shape of it. Start
builds the spec from a few fields (``runner.core.sessions.session_spec``: the shipped game server, its
port, 1 CPU, a consumer-class GPU) and goes through the same admission as ``POST /v1/workloads``
(KYC, budget, idempotency key). ``wait`` long-polls until the session serves (its first frame
exists and its URL is known) or ends, so ``runner session start`` can print the URL the moment it
works. ``end`` asks for an orderly end (the game server gets SIGTERM and a final report), unlike
``cancel``, which stops at once.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query

from runner.api import schemas
from runner.api.auth import Tenant
from runner.api.encoding import FiniteJSONResponse
from runner.api.workloads import Ctx, Polls, admit
from runner.core.errors import NotFoundError, UserError
from runner.core.events import EventKind, Stop, StopReason
from runner.core.sessions import session_spec, session_view
from runner.core.spec import parse_workload, spec_to_dict
from runner.core.states import WorkloadState
from runner.store import Workload

router = APIRouter()


def _session(ctx: Any, workload_id: str, tenant_id: str) -> Workload:
    w = ctx.store.get_workload(workload_id, tenant_id)
    if w.kind != "gaming":
        raise NotFoundError(f"{workload_id} is a {w.kind} workload, not a session. To fix: runner session ls")
    return w


def view(ctx: Any, w: Workload) -> dict[str, Any]:
    """The session as its player and studio see it (node region, RTT, URL, metrics, SLA)."""
    replicas = ctx.store.replicas(w.id)
    node = next((r.node for r in replicas if r.attempt == w.attempts), None)
    region, address = None, ""
    if node:
        try:
            region = ctx.store.get_node(node).region
        except NotFoundError:
            region = None
        info = ctx.supervisor.cluster.nodes.get(node)
        address = info.address if info else ""
    return session_view(w, replicas, ctx.store.events(w.id), node_region=region, node_address=address)


@router.post(
    "/v1/sessions",
    status_code=201,
    response_model=schemas.Session,
    responses={200: {"model": schemas.Session, "description": "Already started under this Idempotency-Key"}},
)
def start(
    tenant_id: Tenant,
    ctx: Ctx,
    request: Annotated[dict[str, Any], Body()],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FiniteJSONResponse:
    """Start a session: ``{"game": "breakout", "near": "eu-west", "fps": 60, ...}``."""
    if ctx.runtime_name != "docker":
        raise UserError(
            f"sessions need the Docker runtime to publish the player's port; this cluster runs "
            f"{ctx.runtime_name}. To fix: start dockerd, then runner down && runner up --cpu"
        )
    parsed = parse_workload(session_spec(request), source="session")
    estimate = admit(ctx, tenant_id, parsed)
    row, created = ctx.store.create_workload(
        tenant_id=tenant_id,
        spec=spec_to_dict(parsed),
        source="session",
        idempotency_key=idempotency_key,
        estimate=estimate,
        max_unfinished=ctx.config.limits.unfinished_workloads_per_tenant,
    )
    ctx.supervisor.wake()
    return FiniteJSONResponse(view(ctx, row), status_code=201 if created else 200)


@router.get("/v1/sessions", response_model=list[schemas.Session])
def list_sessions(
    tenant_id: Tenant, ctx: Ctx, all: bool = False, limit: int = Query(100, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """The tenant's sessions, newest first; ended ones only with ``all``."""
    rows = ctx.store.list_workloads(tenant_id=tenant_id, kind="gaming", live_only=not all, limit=limit)
    return [view(ctx, w) for w in rows]


@router.get("/v1/sessions/{workload_id}", response_model=schemas.Session)
def get_session(tenant_id: Tenant, ctx: Ctx, workload_id: str) -> dict[str, Any]:
    return view(ctx, _session(ctx, workload_id, tenant_id))


@router.get("/v1/sessions/{workload_id}/wait", response_model=schemas.Session)
def wait(
    tenant_id: Tenant,
    ctx: Ctx,
    polls: Polls,
    workload_id: str,
    until: str = Query("serving", pattern="^(serving|ended)$"),
    timeout: float = Query(25.0, ge=0, le=120),
) -> dict[str, Any]:
    """Long-poll: answer once the session serves (``until=serving``) or has ended, or at ``timeout``."""
    deadline = time.monotonic() + timeout

    def reached(v: dict[str, Any]) -> bool:
        return v["phase"] == "ended" or (until == "serving" and v["phase"] == "serving")

    v = view(ctx, _session(ctx, workload_id, tenant_id))
    if reached(v) or timeout == 0:
        return v
    with polls.hold(tenant_id, f"session wait {workload_id}"):
        while not reached(v) and time.monotonic() < deadline:
            with ctx.supervisor.changed:
                ctx.supervisor.changed.wait(timeout=min(1.0, max(deadline - time.monotonic(), 0)))
            v = view(ctx, ctx.store.get_workload(workload_id))
    return v


@router.post("/v1/sessions/{workload_id}/end", response_model=schemas.Session)
def end(tenant_id: Tenant, ctx: Ctx, workload_id: str) -> dict[str, Any]:
    """End a session in order: a running one is stopped gracefully (SUCCEEDED when the server exits
    0); one not placed yet is simply withdrawn (CANCELLED)."""
    w = _session(ctx, workload_id, tenant_id)
    state = WorkloadState(w.state)
    stored = Stop.of(w)
    if state.is_terminal() or w.cancel_requested or (stored is not None and stored.kind is not StopReason.RELOCATE):
        return view(ctx, w)  # ending already (or failing: a budget), nothing to add
    if state in (WorkloadState.PENDING, WorkloadState.RETRYING):
        ctx.store.update_workload(w.id, cancel_requested=True)
        ctx.store.add_event(
            w.id,
            w.state,
            "end requested before the session started: withdrawn",
            kind=EventKind.REQUESTED,
            data={"request": "cancel"},
        )
    else:
        ctx.store.update_workload(w.id, **Stop(StopReason.END, "ended by the player", {"by": "player"}).fields())
        ctx.store.add_event(
            w.id, w.state, "end requested by the player", kind=EventKind.REQUESTED, data={"request": "end"}
        )
    ctx.supervisor.wake()
    return view(ctx, ctx.store.get_workload(w.id))
