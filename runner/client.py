"""The Python client: httpx over the REST API, raising runner's own named errors.

Used by the CLI, the tests and anyone scripting runner::

    client = Client.from_settings(Settings.from_env())
    w = client.submit(load_workload("examples/smoke.yaml"), source="examples/smoke.yaml")
    done = client.wait(w["id"])

Each call returns its route's answer type (``runner.api.schemas``: ``get`` a ``WorkloadDetail``,
``list`` a list of ``Workload``, ``bill`` a ``Bill``, ...). Those are TypedDicts: at runtime an
answer is the plain dict the server sent, read as ``w["state"]``, not validated again here (the
server validated it on the way out); a type checker knows its keys and their types. The types
are imported for type checking only (importing ``runner.api`` loads the whole server).
``admin(method, path, ...)`` stays untyped: it reaches any operator route.
"""

from __future__ import annotations

import builtins
import json
import math
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from runner.core import errors
from runner.core.spec import parse_workload, spec_to_dict
from runner.settings import Settings
from runner.tls import trusting

if TYPE_CHECKING:
    from runner.api import schemas

_ERRORS: dict[str, type[errors.RunnerError]] = {
    cls.__name__: cls
    for cls in (
        errors.AuthError,
        errors.NotFoundError,
        errors.ConflictError,
        errors.PolicyError,
        errors.UserError,
        errors.ArtifactStoreError,
        errors.UntrustedServerError,
        errors.RunnerError,
    )
}


def non_finite(value: Any, path: str = "") -> tuple[str, float] | None:
    """The first inf or nan in a JSON-able value and its path (``placement.max_price_per_gpu_hour``),
    or None. JSON has no such numbers: httpx refuses to encode them, and the server refuses them."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "body", value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = non_finite(item, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def certificate_refusal(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed under a connection error (httpx wraps httpcore's, which
    wraps the ``ssl`` module's), or None when the connection failed otherwise."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Client:
    def __init__(self, base_url: str, api_key: str, *, ca: Path | None = None, timeout_s: float = 30.0) -> None:
        """``ca``: the network's CA certificate, the only one the API's certificate is checked
        against (``Settings.server_ca``); None: the system's trust store (a head with a public
        certificate)."""
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}  # join uses a token instead
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, verify=trusting(ca))

    @classmethod
    def from_settings(cls, settings: Settings, *, operator: bool = False) -> "Client":
        """A tenant's client (``$RUNNER_HOME/api-key``), or the operator's (``admin-key``)."""
        path = settings.admin_key_path if operator else settings.api_key_path
        if not path.exists():
            raise errors.ServerUnavailableError(
                f"no {'operator' if operator else 'API'} key in {path}: no cluster was started for this home. "
                "To fix: runner up --cpu"
            )
        return cls(settings.server_url, path.read_text().strip(), ca=settings.server_ca)

    def close(self) -> None:
        self._http.close()

    # -- plumbing ------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        bad = non_finite(kwargs.get("json"))
        if bad:  # (httpx would raise a bare ValueError encoding it: a traceback instead of an answer)
            raise errors.UserError(f"{bad[0]}: must be a finite number, got {bad[1]}")
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            refusal = certificate_refusal(exc)
            if refusal is not None:  # refused in the handshake, before any byte of the request
                raise errors.UntrustedServerError(
                    f"{self.base_url} presented a certificate not signed by this network's CA "
                    f"({refusal.verify_message}): not this network's head, nothing was sent. "
                    "To fix: check the head's address and the CA file or pin the operator gave you"
                ) from None
            raise errors.ServerUnavailableError(
                f"the control plane at {self.base_url} does not answer ({exc.__class__.__name__}). To fix: runner up --cpu"
            ) from None
        except httpx.TransportError as exc:
            raise errors.ServerUnavailableError(
                f"the control plane at {self.base_url} does not answer ({exc.__class__.__name__}). To fix: runner up --cpu"
            ) from None
        return self._decode(response)

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        if response.status_code < 400:
            return response.json()
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code == 422 and "detail" in body:  # FastAPI's own request validation
            raise errors.UserError(body.get("message") or f"bad request: {body['detail']}")
        if body.get("error") == "SpecError":
            raise errors.SpecError("", "", body.get("message", "invalid spec"))
        cls = _ERRORS.get(body.get("error", ""), errors.RunnerError)
        raise cls(body.get("message", f"HTTP {response.status_code}"))

    # -- API -----------------------------------------------------------------------------------------
    def health(self) -> schemas.Health:
        return self._call("GET", "/v1/health")

    def submit(self, spec: Any, *, source: str = "<client>", idempotency_key: str | None = None) -> schemas.Workload:
        body = spec if isinstance(spec, dict) else spec_to_dict(spec)
        if non_finite(body):  # validate here: the same error, naming the field and its bound, that the server gives
            parse_workload(body, source=source)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/v1/workloads", json={"spec": body, "source": source}, headers=headers)

    def list(self, limit: int = 100) -> builtins.list[schemas.Workload]:
        return self._call("GET", "/v1/workloads", params={"limit": limit})

    def get(self, workload_id: str) -> schemas.WorkloadDetail:
        return self._call("GET", f"/v1/workloads/{workload_id}")

    def cancel(self, workload_id: str) -> schemas.Workload:
        return self._call("POST", f"/v1/workloads/{workload_id}/cancel")

    def nodes(self) -> builtins.list[schemas.Node]:
        return self._call("GET", "/v1/nodes")

    def explain(self, workload_id: str) -> schemas.Explain:
        return self._call("GET", f"/v1/workloads/{workload_id}/explain")

    def artifacts(self, workload_id: str) -> schemas.Artifacts:
        """A training job's artifacts: ``uri``, ``items``, ``checkpoints``, ``latest``, ``final_checkpoint``."""
        return self._call("GET", f"/v1/workloads/{workload_id}/artifacts")

    def artifact_get(self, workload_id: str, key: str, dest: Path) -> Path:
        """Download one artifact to ``dest``, streamed to a temporary name and renamed when whole."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with self._http.stream(
                "GET", f"/v1/workloads/{workload_id}/artifacts/{quote(key)}", timeout=None
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._decode(response)
                with open(tmp, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
            tmp.replace(dest)
        except httpx.TransportError:
            raise errors.ServerUnavailableError(f"the control plane at {self.base_url} does not answer") from None
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def bill(self) -> schemas.Bill:
        return self._call("GET", "/v1/bill")

    # -- secrets -------------------------------------------------------------------------------------
    def secrets(self) -> builtins.list[schemas.SecretInfo]:
        """This tenant's secrets by name (values never come back)."""
        return self._call("GET", "/v1/secrets")

    def set_secret(self, name: str, value: str) -> schemas.SecretInfo:
        return self._call("PUT", f"/v1/secrets/{name}", json={"value": value})

    def delete_secret(self, name: str) -> schemas.SecretInfo:
        return self._call("DELETE", f"/v1/secrets/{name}")

    # -- keys ----------------------------------------------------------------------------------------
    def keys(self) -> builtins.list[schemas.ApiKeyInfo]:
        """This tenant's API keys by id (``current``: the one this client uses)."""
        return self._call("GET", "/v1/keys")

    def new_key(self) -> schemas.NewApiKey:
        return self._call("POST", "/v1/keys")

    def rotate_key(self) -> schemas.NewApiKey:
        """A new key in place of this client's, which stops working at once; this client then
        uses the new one."""
        made: schemas.NewApiKey = self._call("POST", "/v1/keys/rotate")
        self._http.headers["Authorization"] = f"Bearer {made['api_key']}"
        return made

    def revoke_key(self, key_id: str) -> schemas.ApiKeyInfo:
        return self._call("DELETE", f"/v1/keys/{key_id}")

    # -- sessions ------------------------------------------------------------------------------------
    def session_start(
        self, game: str, near: str, *, idempotency_key: str | None = None, **options: Any
    ) -> schemas.Session:
        """Start a gaming session near the player (``fps``, ``resolution``, ``gpu``, ... optional)."""
        body = {"game": game, "near": near, **{k: v for k, v in options.items() if v is not None}}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/v1/sessions", json=body, headers=headers)

    def sessions(self, *, all: bool = False, limit: int = 100) -> builtins.list[schemas.Session]:
        return self._call("GET", "/v1/sessions", params={"all": all, "limit": limit})

    def session(self, workload_id: str) -> schemas.Session:
        return self._call("GET", f"/v1/sessions/{workload_id}")

    def session_wait(self, workload_id: str, *, until: str = "serving", timeout_s: float = 60.0) -> schemas.Session:
        """Block until the session serves (``until="serving"``) or ends, or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            step = max(0.0, min(25.0, deadline - time.monotonic()))
            v = self._call(
                "GET", f"/v1/sessions/{workload_id}/wait", params={"until": until, "timeout": step}, timeout=step + 10
            )
            if v["phase"] == "ended" or (until == "serving" and v["phase"] == "serving"):
                return v
            if time.monotonic() >= deadline:
                return v

    def session_end(self, workload_id: str) -> schemas.Session:
        """End a session in order (the server gets SIGTERM and reports its last metrics)."""
        return self._call("POST", f"/v1/sessions/{workload_id}/end")

    # -- services ------------------------------------------------------------------------------------
    def services(self, *, all: bool = False, limit: int = 100) -> builtins.list[schemas.Service]:
        """The tenant's inference services: endpoint, size, replicas with their nodes and rates."""
        return self._call("GET", "/v1/services", params={"all": all, "limit": limit})

    def service(self, workload_id: str) -> schemas.Service:
        return self._call("GET", f"/v1/services/{workload_id}")

    def admin(self, method: str, path: str, **body: Any) -> Any:
        """An operator call: ``admin("POST", "/tenants", id="acme", country="DE")``."""
        params = {k: v for k, v in (body.pop("params", None) or {}).items() if v is not None}
        return self._call(method, f"/v1/admin{path}", json=body or None, params=params or None)

    def join(self, request: dict[str, Any]) -> schemas.JoinGrant:
        """A machine joins (its join token is in ``request``; no API key is needed)."""
        return self._call("POST", "/v1/nodes/join", json=request)

    def wait(self, workload_id: str, *, until: str = "terminal", timeout_s: float | None = None) -> schemas.Workload:
        """Block until the workload reaches ``until`` (long-polls; no busy loop)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            step = 25.0 if deadline is None else max(0.0, min(25.0, deadline - time.monotonic()))
            w = self._call(
                "GET", f"/v1/workloads/{workload_id}/wait", params={"until": until, "timeout": step}, timeout=step + 10
            )
            reached = w["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") or (
                until == "running" and w["state"] == "RUNNING"
            )
            if reached or (deadline is not None and time.monotonic() >= deadline):
                return w

    def logs(self, workload_id: str, *, follow: bool = False, after: int = 0) -> Iterator[schemas.LogLine]:
        """Log lines as dicts ``{"id", "replica", "seq", "line"}``; with ``follow``, until the workload ends.
        A dropped stream is resumed from the last id seen, so no line is lost or repeated."""
        cursor = after
        while True:
            try:
                with self._http.stream(
                    "GET", f"/v1/workloads/{workload_id}/logs", params={"after": cursor, "follow": follow}, timeout=None
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        self._decode(response)
                    for raw in response.iter_lines():
                        if raw:
                            item = json.loads(raw)
                            cursor = item["id"]
                            yield item
                return
            except httpx.TransportError:
                if not follow:
                    raise errors.ServerUnavailableError(
                        f"the control plane at {self.base_url} does not answer"
                    ) from None
                time.sleep(0.5)  # the server restarts; resume from the cursor
