"""The REST API: a thin FastAPI layer over the store, the supervisor and the rules.

Every route requires a credential: ``Authorization: Bearer <key>`` (a tenant's key, or the
operator's for ``/v1/admin``), or, for ``POST /v1/nodes/join`` only, a join token in the body.
There is no open route. Errors come back as ``{"error": <class>, "message": <text>}`` with a status
that matches the error class, so the client raises the same named error the server did.

    workloads.py   submit (KYC and budget admission), list, get, wait, cancel, logs, explain
    sessions.py    gaming sessions: start, list, show, wait until serving, end
    services.py    inference services: list, show (endpoint, replicas, rates); whoami and routes for the gateway
    nodes.py       health, the fleet, joining, a tenant's bill
    admin.py       tenants, providers, stakes, join tokens, drains, challenges, audit, books
    artifacts.py   a training job's artifacts: list, download
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from runner.api import admin, artifacts, nodes, services, sessions, workloads
from runner.api.context import AppContext
from runner.errors import (
    ArtifactStoreError, AuthError, ConflictError, NotFoundError, PolicyError, RunnerError, SpecError, UserError,
)  # fmt: skip

_STATUS: dict[type[RunnerError], int] = {AuthError: 401, PolicyError: 403, NotFoundError: 404, ConflictError: 409,
                                         SpecError: 422, UserError: 400, ArtifactStoreError: 502}  # fmt: skip


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(title="runner", version="0.1.0", description="Run containerized workloads on rented GPU nodes.")
    app.state.ctx = ctx
    app.state.store = ctx.store
    app.state.key_cache = {}

    @app.exception_handler(RunnerError)
    async def _runner_error(_: Request, exc: RunnerError) -> JSONResponse:
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
        return JSONResponse({"error": type(exc).__name__, "message": str(exc)}, status_code=status)

    for module in (workloads, sessions, services, nodes, admin, artifacts):
        app.include_router(module.router)
    return app
