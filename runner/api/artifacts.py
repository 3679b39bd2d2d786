"""Tenant routes for a training job's artifacts: list them, download one (``runner artifacts``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from runner import artifacts
from runner.api import schemas
from runner.api.auth import Tenant
from runner.api.context import AppContext, context
from runner.core.egress import canonical_endpoint
from runner.core.errors import UserError
from runner.core.spec import parse_workload
from runner.egress import vetted_endpoint
from runner.store import Workload
from runner.store_credentials import admin_env, read_admin
from workloads.common.artifacts import ArtifactStore

router = APIRouter()
Ctx = Annotated[AppContext, Depends(context)]


def _store(ctx: AppContext, w: Workload) -> tuple[ArtifactStore, str]:
    spec = parse_workload(w.spec, source=w.source or w.id)
    if spec.kind != "training":
        raise UserError(f"{w.id} is a {spec.kind} workload; only training jobs keep artifacts (their checkpoints)")
    uri = ctx.supervisor.checkpoint_uri(w, spec)
    store = ctx.supervisor.network_store
    if store is not None and store.holds(uri):  # the network's own: read as its admin, on the head only
        env = admin_env(store, read_admin(ctx.supervisor.settings.store_admin_path))
    else:
        env = tenant_store_env(ctx, spec.env)  # the tenant's own store, with the tenant's own credential
    return artifacts.workload_store(uri, env), uri


def tenant_store_env(ctx: AppContext, env: dict[str, str]) -> dict[str, str]:
    """The tenant's env with its ``AWS_ENDPOINT_URL`` vetted (``runner.egress``): the control
    plane opens no endpoint inside a network for a tenant unless the operator allowed it (or it
    is the network's own store). Refused before any connection is made."""
    endpoint = env.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return env
    allowed = {row.endpoint for row in ctx.store.allowed_endpoints()}
    if ctx.supervisor.network_store is not None and ctx.supervisor.network_store.endpoint:
        allowed.add(canonical_endpoint(ctx.supervisor.network_store.endpoint))
    return {**env, "AWS_ENDPOINT_URL": vetted_endpoint(endpoint, allowed, field="env.AWS_ENDPOINT_URL")}


def final_checkpoint(ctx: AppContext, w: Workload) -> str | None:
    """The checkpoint rank 0 named in its ``result`` report: the job's trained model."""
    done = [r for r in ctx.store.replicas(w.id) if r.index == 0 and (r.reports or {}).get("result")]
    return max(done, key=lambda r: r.attempt).reports["result"].get("checkpoint") if done else None


@router.get("/v1/workloads/{workload_id}/artifacts", response_model=schemas.Artifacts)
def list_artifacts(tenant_id: Tenant, ctx: Ctx, workload_id: str) -> dict[str, Any]:
    """What the job stored under its checkpoint URI: objects, checkpoints, ``latest.json``."""
    w = ctx.store.get_workload(workload_id, tenant_id)
    store, _ = _store(ctx, w)
    return {
        "workload": w.id,
        "state": w.state,
        "final_checkpoint": final_checkpoint(ctx, w),
        **artifacts.listing(store),
    }


@router.get(
    "/v1/workloads/{workload_id}/artifacts/{key:path}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The object's bytes, with a media type guessed from its name",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def get_artifact(tenant_id: Tenant, ctx: Ctx, workload_id: str, key: str) -> FileResponse:
    """One object's bytes. A local (``file://``) store is served in place; an S3 object is
    fetched to a temporary file first and that file is deleted once sent."""
    w = ctx.store.get_workload(workload_id, tenant_id)
    store, _ = _store(ctx, w)
    path = artifacts.local_path(store, key)
    if path is not None:
        return FileResponse(path, filename=Path(key).name)
    fd, tmp = tempfile.mkstemp(prefix="runner-artifact-")
    os.close(fd)
    try:
        artifacts.fetch(store, key, Path(tmp))
    except BaseException:
        os.unlink(tmp)
        raise
    return FileResponse(tmp, filename=Path(key).name, background=BackgroundTask(os.unlink, tmp))
