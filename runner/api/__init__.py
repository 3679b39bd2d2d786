"""The REST API: a thin FastAPI layer over the store, the supervisor and the rules.

Every route requires a credential: ``Authorization: Bearer <key>`` (a tenant's key, or the
operator's for ``/v1/admin``), or, for ``POST /v1/nodes/join`` only, a join token in the body.
There is no open route. Errors come back as ``{"error": <class>, "message": <text>}`` with a status
that matches the error class, so the client raises the same named error the server did. A body
FastAPI itself refuses (a wrong type, a number out of bounds, inf or nan: JSON's ``1e309`` and
``NaN`` arrive as such) is a 422 whose message names each field, as a spec error does; a refused
request changes nothing, and a 5xx is never the answer to input. A stored number JSON cannot
hold (a diverged loss, ``NaN``) is answered as ``null`` (``encoding.py``), never as a 500.

Every route declares its answer (``schemas.py``: a TypedDict of each, which pydantic validates
and FastAPI documents), so the OpenAPI schema describes every answer and every error; ``GET /openapi.json`` serves it to the operator's key only
(no docs pages: FastAPI's own would be open).

    workloads.py   submit (KYC and budget admission), list, get, wait, cancel, logs, explain
    sessions.py    gaming sessions: start, list, show, wait until serving, end
    services.py    inference services: list, show (endpoint, replicas, rates); whoami and routes for the gateway
    nodes.py       health, the fleet, joining, a tenant's bill
    admin.py       tenants, providers, stakes, join tokens, drains, challenges, audit, books
    artifacts.py   a training job's artifacts: list, download
    keys.py        a tenant's own API keys: list, make, rotate, revoke
    limits.py      what one caller can take: request bodies, long-polls
    secrets.py     a tenant's secrets: set, list by name, remove
    schemas.py     every answer as a TypedDict (pydantic and runner.core only): the client returns these types
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from runner.api import admin, artifacts, keys, nodes, schemas, secrets, services, sessions, workloads
from runner.api.auth import Operator
from runner.api.context import AppContext
from runner.api.encoding import FiniteJSONResponse
from runner.api.limits import BodyLimit, LongPolls
from runner.core.errors import (
    ArtifactStoreError,
    AuthError,
    ConflictError,
    NotFoundError,
    PolicyError,
    RunnerError,
    SpecError,
    TooManyRequestsError,
    UserError,
)
from runner.core.spec.parsing import humanize_error

_STATUS: dict[type[RunnerError], int] = {
    AuthError: 401,
    PolicyError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    TooManyRequestsError: 429,
    SpecError: 422,
    UserError: 400,
    ArtifactStoreError: 502,
}


def create_app(ctx: AppContext) -> FastAPI:
    # No docs or redoc pages, and not FastAPI's own openapi.json: FastAPI serves those without any
    # credential, and there is no open route (the schema of specs is `runner schema`). The OpenAPI
    # schema is a route of ours instead, for the operator's key (`openapi` below).
    app = FastAPI(
        title="runner",
        version="0.1.0",
        description="Run containerized workloads on rented GPU nodes.",
        default_response_class=FiniteJSONResponse,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.ctx = ctx
    app.state.store = ctx.store
    app.state.key_cache = {}
    app.state.long_polls = LongPolls(
        per_tenant=ctx.config.limits.long_polls_per_tenant, total=ctx.config.limits.long_polls_total
    )
    app.add_middleware(BodyLimit)

    @app.exception_handler(RunnerError)
    async def _runner_error(_: Request, exc: RunnerError) -> FiniteJSONResponse:
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
        return FiniteJSONResponse({"error": type(exc).__name__, "message": str(exc)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> FiniteJSONResponse:
        """FastAPI's and Starlette's own refusals (a body that is not JSON at all, a route or
        method that does not exist) in the same shape as every other error, so a client (and
        the OpenAPI schema) knows one answer for a refused request."""
        error = "NotFoundError" if exc.status_code == 404 else "UserError"
        detail = exc.detail if isinstance(exc.detail, str) else "the request was refused"
        message = "the request body is not valid JSON" if "parsing the body" in detail else detail
        return FiniteJSONResponse(
            {"error": error, "message": message}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> FiniteJSONResponse:
        return FiniteJSONResponse(validation_error_body(exc.errors()), status_code=422)

    for module in (workloads, sessions, services, nodes, admin, artifacts, keys, secrets):
        app.include_router(module.router, responses=ERROR_RESPONSES)

    @app.get("/openapi.json", include_in_schema=False, response_model=dict[str, Any])
    def openapi(_: Operator) -> dict[str, Any]:
        """The OpenAPI schema of every route and answer: for the operator (a fuzzer runs as one).
        A tenant's key or none is refused as on every operator route (``auth.operator``)."""
        return app.openapi()

    return app


#: What every route may answer besides its own model: an error, in the shape the handlers write.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "model": schemas.ErrorAnswer,
        "description": " or ".join(c.__name__ for c, s in _STATUS.items() if s == code),
    }
    for code in sorted(set(_STATUS.values()))
}


def validation_error_body(errors: Any) -> dict[str, Any]:
    """FastAPI's refusal of a request, as ``{"error", "message", "detail"}``: each problem as
    ``field: what was expected, got what``. (FastAPI's own answer echoes each bad input, and an
    inf or nan there cannot be encoded as JSON: the refusal itself became a 500.)"""
    detail = []
    for err in errors:
        loc = tuple(err.get("loc") or ())
        where = loc[1:] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else loc
        if err.get("type") == "json_invalid":
            field, message = "", f"the body is not valid JSON ({(err.get('ctx') or {}).get('error', 'cannot parse')})"
        else:
            field, message = humanize_error({**err, "loc": where})
        detail.append(
            {"loc": [str(part) for part in loc], "field": field, "type": str(err.get("type", "")), "msg": message}
        )
    text = "; ".join(f"{d['field']}: {d['msg']}" if d["field"] else d["msg"] for d in detail)
    return {"error": "UserError", "message": f"bad request: {text}", "detail": detail}
