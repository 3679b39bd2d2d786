"""The API's answers, as TypedDicts: what every route returns, key by key.

Each route declares one of these as its ``response_model`` (``runner/api/*.py``), so the OpenAPI
schema (``GET /openapi.json``, operator key) describes every answer, and FastAPI checks each answer
against its type on the way out: pydantic validates a TypedDict as it does a model, and each one is
a named component of the schema. The routes build plain dicts (``workload_json`` and the views in
``runner.core``); a TypedDict names exactly the keys those dicts have, with their types, so the
answer's JSON is what it was before the types existed. A key a TypedDict lacks is dropped from the
answer silently (pydantic ignores a TypedDict's extra keys by default): ``tests/unit/test_api_schema.py``
compares the two. A key marked ``NotRequired`` may be absent (not null): it is left out of the
answer where the route's dict leaves it out. A route answers a dict, not an object: a TypedDict is
validated from a mapping only (``runner.api.nodes.join`` dumps its pydantic grant).

The client (``runner.client``) names these same types as what each call returns: at runtime an
answer is the plain dict the server sent (the server validated it), read as ``w["state"]``, and a
type checker knows its keys.

Three kinds of values are kept loose on purpose:

- free-form JSON the API passes through (a workload's spec, a replica's reports, an audit
  entry's payload, a placement's candidate rows) is ``dict[str, Any]`` or ``Any``;
- figures a workload reports about itself (a service's requests per second, a session's fps) are
  ``Reported``: the workload's own stdout, usually a number, never trusted to be one;
- a number that may arrive as an int or a float is ``Number``, so ``60`` stays ``60`` (a ``float``
  key would answer ``60.0``).

Only pydantic and ``runner.core`` are imported here (no FastAPI, no SQLAlchemy). Importing this
module still loads ``runner.api`` (the server) first, so the client imports it for type checking
only. ``typing_extensions.TypedDict``, not ``typing``'s: pydantic requires it before Python 3.12.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter
from typing_extensions import NotRequired, TypeAliasType, TypedDict

from runner.core.events import EventKind, StopReason
from runner.core.ledger import TxKind
from runner.core.policy import KYC, NodeState
from runner.core.states import ReplicaState, WorkloadState

#: A JSON number kept as it came: an int stays an int, a float a float.
Number = int | float
#: A figure from the workload's own reports (its stdout): shown as reported, None when absent.
Reported = Any
#: A workload's kind, as its spec says (``runner.core.spec``).
WorkloadKind = Literal["batch", "training", "inference", "gaming"]


def json_schema(answer: Any) -> dict[str, Any]:
    """The JSON schema of an answer type (a TypedDict has no ``model_json_schema``)."""
    return TypeAdapter(answer).json_schema()


# -- errors ------------------------------------------------------------------------------------------
class ValidationProblem(TypedDict):
    """One problem with a request FastAPI refused: where, and what was expected."""

    loc: list[str]
    field: str
    type: str
    msg: str


class ErrorAnswer(TypedDict):
    """Every refusal: the error's class (the client raises the same named error) and its message;
    ``detail`` only for a request FastAPI itself refused (422)."""

    error: Annotated[str, Field(description="The error's class: AuthError, PolicyError, NotFoundError, ...")]
    message: str
    detail: NotRequired[list[ValidationProblem] | None]


# -- workloads ---------------------------------------------------------------------------------------
class Workload(TypedDict):
    """A workload as ``submit``, ``list``, ``wait`` and ``cancel`` answer it (``runner ls``)."""

    id: str
    name: str
    kind: WorkloadKind
    state: WorkloadState
    attempts: Annotated[int, Field(description="Attempts started so far (1 for the first).")]
    relocations: Annotated[int, Field(description="Times the work was moved to other nodes (not failures).")]
    node: Annotated[str | None, Field(description="The node of the current attempt's first replica, if placed.")]
    exit_code: int | None
    message: Annotated[str, Field(description="The latest word on the workload, for people.")]
    source: Annotated[str, Field(description="Where the spec came from (a file name, '<api>', 'session').")]
    created_at: float
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool
    stop_reason: Annotated[str, Field(description="Why the current attempt is being stopped, in words ('' if not).")]
    stop_kind: Annotated[StopReason | None, Field(description="Why the current attempt is being stopped, as data.")]
    tenant: str
    spec: Annotated[dict[str, Any], Field(description="The spec as parsed and stored (see `runner schema`).")]


class Replica(TypedDict):
    """One replica attempt on one node: its container, money and reports."""

    key: str
    index: Annotated[int, Field(description="The replica's slot (a gang's rank, a service's member).")]
    attempt: int
    node: str
    state: ReplicaState
    handle: Annotated[str, Field(description="The runtime's handle of the container or process.")]
    exit_code: int | None
    error: str
    started_at: float | None
    finished_at: float | None
    provider: str
    price_micros: Annotated[int, Field(description="Price per unit-hour in micro-USD.")]
    milli_units: Annotated[int, Field(description="GPUs (or CPU cores) billed, in thousandths.")]
    metered_s: Annotated[int, Field(description="Seconds metered and billed so far.")]
    ports: Annotated[dict[str, str], Field(description="Published ports: '8000/tcp' -> 'host:port'.")]
    reports: Annotated[dict[str, Any], Field(description="The latest report of each type the replica printed.")]
    pull_done_bytes: int
    pull_total_bytes: int


class Event(TypedDict):
    """One line of a workload's timeline."""

    ts: float
    state: WorkloadState
    kind: EventKind
    message: str


class WorkloadDetail(Workload):
    """One workload with its replicas and its timeline (``runner status``)."""

    replicas: list[Replica]
    events: list[Event]


class PlacementUndecided(TypedDict):
    """``explain`` before any placement decision was recorded."""

    workload: str
    state: WorkloadState
    decided: Literal[False]
    message: str
    rows: list[dict[str, Any]]


class PlacementDecided(TypedDict):
    """``explain``: the candidate table of the latest placement decision (``runner explain``)."""

    workload: str
    state: WorkloadState
    decided: Literal[True]
    attempt: int
    ts: float
    placed: bool
    nodes: Annotated[list[str], Field(description="The nodes chosen, one per replica (empty if not placed).")]
    message: str
    rows: Annotated[list[dict[str, Any]], Field(description="One row per candidate node: its verdict and score.")]
    total_nodes: int


#: A union under a name (``TypeAliasType``), so the OpenAPI schema has an ``Explain`` component (the
#: description says what it is, as a docstring would).
Explain = TypeAliasType(
    "Explain",
    Annotated[
        PlacementDecided | PlacementUndecided,
        Field(
            title="Explain",
            description="``explain``'s answer: the latest placement decision, or that there is none yet (``decided``).",
        ),
    ],
)


class LogLine(TypedDict):
    """One line of ``GET /v1/workloads/{id}/logs`` (NDJSON: one of these per line)."""

    id: Annotated[int, Field(description="The cursor: pass the last one seen as ``after`` to resume.")]
    replica: str
    seq: int
    line: str


# -- artifacts ---------------------------------------------------------------------------------------
class Checkpoint(TypedDict):
    step: int
    complete: bool
    uri: str


class ArtifactItem(TypedDict):
    key: str
    size: int
    modified: float
    uri: str


class Artifacts(TypedDict):
    """What a training job stored under its checkpoint URI (``runner artifacts``)."""

    workload: str
    state: WorkloadState
    final_checkpoint: Annotated[Reported, Field(description="The checkpoint rank 0 named in its result report.")]
    uri: str
    latest: Annotated[Any, Field(description="The store's latest.json (a hint for people), or None.")]
    checkpoints: list[Checkpoint]
    items: list[ArtifactItem]


# -- sessions ----------------------------------------------------------------------------------------
class SessionSla(TypedDict):
    state: Literal["ok", "breached"]
    breaches: int
    last: Annotated[str, Field(description="The last SLA change, in words ('' if none).")]


class Session(TypedDict):
    """A gaming session as its player and studio see it (``runner session ls``)."""

    id: str
    name: str
    game: str | None
    state: WorkloadState
    phase: Literal["waiting", "starting", "serving", "ending", "ended"]
    node: str | None
    region: str | None
    near: Annotated[str | None, Field(description="The player's region.")]
    expected_rtt_ms: float | None
    measured_rtt_ms: float | None
    measured_rtt_p95_ms: float | None
    measured_rtt_samples: int | None
    url: Annotated[str | None, Field(description="Where the player connects, once the session serves.")]
    resolution: str | None
    target_fps: Number | None
    latency_budget_ms: Number | None
    fps: Reported
    frame_p95_ms: Reported
    latency_p50_ms: Reported
    latency_p95_ms: Reported
    players: Reported
    metrics_at: Reported
    sla: SessionSla
    ended_reason: Reported
    attempt: int
    message: str
    created_at: float
    started_at: float | None
    finished_at: float | None


# -- services ----------------------------------------------------------------------------------------
class ServiceSize(TypedDict):
    min: int
    max: int
    desired: int
    serving: int
    live: int


class ServiceMember(TypedDict):
    """One live replica of a service, with the rates it last reported (None when stale)."""

    key: str
    slot: int
    attempt: int
    node: str
    provider: str
    state: ReplicaState
    serving: bool
    ports: dict[str, str]
    requests_per_s: Reported
    items_per_s: Reported
    latency_ms_p50: Reported
    latency_ms_p99: Reported
    queue_depth: Reported
    batch_size_mean: Reported
    report_age_s: float | None


class Service(TypedDict):
    """An inference service: its endpoint, size, members and rates (``runner services``)."""

    id: str
    name: str
    state: WorkloadState
    message: str
    model: str
    endpoint: Annotated[str | None, Field(description="The OpenAI base URL on the gateway, None without a gateway.")]
    replicas: ServiceSize
    requests_per_s: Number | None
    items_per_s: Number | None
    members: list[ServiceMember]
    last_scaling: str | None


class Whoami(TypedDict):
    """Whose key this is: a tenant's (``tenant`` set) or the operator's."""

    tenant: str | None
    operator: bool
    #: Why the tenant may not call its services now (its KYC is not verified); None when it may.
    refused: str | None


class Backend(TypedDict):
    key: str
    node: str
    url: str


class RoutedService(TypedDict):
    id: str
    name: str
    tenant: str
    created_at: float
    state: WorkloadState
    backends: list[Backend]


class GatewayRoutes(TypedDict):
    """Every live service and the replicas the gateway may send requests to."""

    services: list[RoutedService]
    #: Changes whenever a key is revoked or a tenant's access changes: the gateway then forgets
    #: every key it cached (``ApiKeyStore.access_epoch``).
    access_epoch: int


# -- nodes and money ---------------------------------------------------------------------------------
class Health(TypedDict):
    """The control plane answers: its runtime and how many Ray nodes are alive."""

    ok: bool
    runtime: str
    nodes: int


class Node(TypedDict):
    """A node as Ray sees it joined with the registry (``runner nodes``)."""

    name: str
    alive: bool
    labels: dict[str, str]
    resources: dict[str, Number]
    address: str
    replicas: Annotated[int, Field(description="Replicas running on it now.")]
    state: NodeState | Literal["unregistered"]
    provider: str
    region: str
    country: str
    gpu_model: str | None
    gpu_count: int
    gpu_price_micros: int
    cpu_price_micros: int
    verified_tflops: float
    simulated: bool | None
    reliability: float | None
    challenge_failures: int
    message: str


class JoinGrant(TypedDict):
    """What a machine that joins is given: how to join Ray, and as what (``runner node join``)."""

    node: str
    state: NodeState
    ray_address: str
    ray_token: str
    labels: dict[str, str]
    num_gpus: int
    control_public_key: str
    #: This machine's certificate (PEM), signed by the network's CA for the address the control
    #: plane saw it at; empty in a network without TLS.
    tls_cert: str


class StatementLine(TypedDict):
    key: str
    kind: TxKind
    memo: str
    refs: dict[str, Any]
    amount: Annotated[int, Field(description="Its net effect on the statement's accounts, in micro-USD.")]


class TenantTotals(TypedDict):
    """A bill's totals in micro-USD; ``budget`` and ``budget_left`` only where a budget is set."""

    charges: int
    credits: int
    refunds: Annotated[int, Field(description="Preemption refunds received less those paid.")]
    owed: int
    budget: NotRequired[int | None]
    budget_left: NotRequired[int | None]


class Bill(TypedDict):
    """A tenant's bill: every charge and credit, and the totals (``runner bill``)."""

    tenant: str
    account: str
    totals: TenantTotals
    lines: list[StatementLine]


class ProviderTotals(TypedDict):
    """A provider's totals in micro-USD."""

    gross: int
    fees: int
    earned: int
    paid_out: int
    slashed: int
    stake: int


class Earnings(TypedDict):
    """A provider's earnings statement (``runner admin earnings``)."""

    provider: str
    account: str
    totals: ProviderTotals
    lines: list[StatementLine]


# -- the operator's ----------------------------------------------------------------------------------
class TenantInfo(TypedDict):
    """A tenant as the operator manages it."""

    id: str
    country: str
    kyc: KYC
    budget_micros: int | None
    spent_micros: int
    created_at: float


class ProviderInfo(TypedDict):
    """A provider as the operator manages it: KYC, stake and nodes."""

    id: str
    country: str
    kyc: KYC
    stake_micros: int
    nodes: list[str]
    created_at: float


class NewApiKey(TypedDict):
    """A tenant's new API key: shown this once (only its hash is kept)."""

    tenant: str
    api_key: str
    #: What the key is called by from now on (the start of its hash).
    key_id: str


class SecretInfo(TypedDict):
    """One of a tenant's secrets, by name: its value is never shown."""

    name: str
    updated_at: float


class ApiKeyInfo(TypedDict):
    """One of a tenant's API keys, by its id (the key itself is never shown again)."""

    key_id: str
    created_at: float
    revoked_at: float | None
    #: True for the key the listing was asked with.
    current: bool


class NewJoinToken(TypedDict):
    """A join token for one of the provider's machines (shown once)."""

    provider: str
    token: str
    ttl_s: float


class ImagePin(TypedDict):
    """An image of the network's registry, by the digest the operator's push recorded."""

    reference: str
    digest: str
    pinned_at: float


class AllowedEndpoint(TypedDict):
    """An endpoint inside a network that the control plane may open for tenants."""

    endpoint: str
    note: str
    allowed_at: float


class NodeMove(TypedDict):
    """A node's state after the operator moved it (drain, activate)."""

    node: str
    state: NodeState


class Offboarded(TypedDict):
    """A node removed: the work moved off it, and the stake slashed if it was not drained."""

    node: str
    state: NodeState
    replicas_moved: int
    slashed_micros: int | None


class ChallengeResult(TypedDict):
    """A benchmark challenge the node answered (or failed to in time)."""

    node: str
    ok: bool
    measured_tflops: float
    expected_tflops: float
    failures: Annotated[int, Field(description="Challenges failed in a row.")]
    message: str


class ChallengeUnreachable(TypedDict):
    """A challenge that could not be sent: the node is not reachable."""

    node: str
    ok: bool
    message: str


#: A named union as ``Explain`` is; the first type that fits wins (``left_to_right``).
Challenge = TypeAliasType(
    "Challenge",
    Annotated[
        ChallengeResult | ChallengeUnreachable,
        Field(
            union_mode="left_to_right",
            title="Challenge",
            description="A challenge's outcome: measured against what the node should reach, or not reachable.",
        ),
    ],
)


class CheckRow(TypedDict):
    """One stored check of a node: a heartbeat or a benchmark challenge."""

    ts: float
    kind: str
    ok: bool
    measured: float | None
    expected: float | None
    message: str


class UptimeSla(TypedDict):
    monthly_uptime: float
    max_daily_offline_s: float


class UptimeDayRow(TypedDict):
    day: Annotated[str, Field(description="YYYY-MM-DD, UTC.")]
    observed_s: float
    online_s: float
    offline_s: float
    breached: bool


class Uptime(TypedDict):
    """A node's uptime per UTC day against the SLA."""

    node: str
    sla: UptimeSla
    monthly_uptime: Annotated[
        float | None, Field(description="Online share over the last 30 days; None if never observed.")
    ]
    meets_sla: bool
    days: list[UptimeDayRow]


class AuditEntry(TypedDict):
    """One entry of the audit chain."""

    seq: int
    ts: float
    kind: str
    payload: Any
    hash: str


class AuditVerify(TypedDict):
    """Whether the audit chain holds, and where it breaks if not."""

    ok: bool
    entries: int
    first_bad_seq: int | None
    problem: str
