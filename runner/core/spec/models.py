"""The pydantic models of workload specs: resources, placement, retries and the four kinds."""

from __future__ import annotations

import difflib
import math
import re
import shlex
from typing import Annotated, Any, ClassVar, Literal, TypeAlias, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from runner.core.catalog import CATALOG, canonical_gpu_name, known_gpu_names
from runner.core.spec.fields import (
    DNS_LABEL,
    ENV_KEY,
    IMAGE_REF,
    LABEL_KEY,
    MAX_REPLICAS,
    SECRET_NAME,
    SECTIONS,
    Attempts,
    BackoffFactor,
    BackoffSeconds,
    BatchSize,
    BatchWaitMs,
    CheckpointSteps,
    Concurrency,
    Cores,
    Duration,
    Fps,
    Fraction,
    GpuCount,
    LatencyMs,
    Memory,
    PortNumber,
    PricePerGpuHour,
    QueueLength,
    Region,
    Replicas,
    VramGb,
    Workers,
    check_mapping,
    describe,
    reserved_env_problem,
)


# ----------------------------------------------------------------------------- base model
class SpecModel(BaseModel):
    """Base of every model a user writes: unknown fields are errors, and parsed specs are frozen.
    No float takes inf or nan (each number field also has its own bounds: ``runner.core.spec.fields``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @classmethod
    def _unknown_field_hint(cls, name: str) -> str:
        """Suffix for an unknown-field error: the closest real field, if one is close."""
        close = difflib.get_close_matches(name, list(cls.model_fields), n=1, cutoff=0.6)
        return f" (did you mean {close[0]!r}?)" if close else f"; allowed fields: {', '.join(cls.model_fields)}"

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_fields(cls, data: Any) -> Any:
        # Runs after subclasses' short-form validators, so it sees the mapping form.
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise PydanticCustomError(
                        "unknown_field",
                        "unknown field '{field}'{hint}",
                        {"field": str(key), "hint": cls._unknown_field_hint(str(key))},
                    )
        return data


# ----------------------------------------------------------------------------- resources
class GPURequest(SpecModel):
    """GPUs one replica needs: any of ``models``, ``count`` of them, optionally a VRAM floor.

    Short forms: ``"H100"``, ``"H100:2"``, ``"A100|H100:4"``, ``"A100:80GB:2"`` (dstack style).
    """

    models: list[str] = Field(min_length=1, description="Acceptable GPU models (catalog names); any one will do.")
    count: GpuCount = Field(default=1, description="GPUs per replica, all of the same model.")
    min_vram_gb: VramGb | None = Field(default=None, description="Only models with at least this much VRAM.")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            return _parse_gpu_string(data)
        if isinstance(data, dict) and isinstance(data.get("models"), str):
            return {**data, "models": data["models"].split("|")}
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            raise ValueError(f"a GPU request names a model, e.g. 'H100' or 'H100:{data}'; got {data}")
        return data

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: list[str]) -> list[str]:
        out: list[str] = []
        for name in models:
            try:
                canonical = canonical_gpu_name(name.strip())
            except KeyError:
                raise ValueError(f"unknown GPU model {name!r}; known models: {', '.join(known_gpu_names())}") from None
            if canonical not in out:
                out.append(canonical)
        return out

    @model_validator(mode="after")
    def _some_model_has_vram(self) -> GPURequest:
        if self.min_vram_gb is not None and all(CATALOG[m].vram_gb < self.min_vram_gb for m in self.models):
            have = ", ".join(f"{m} {CATALOG[m].vram_gb}GB" for m in self.models)
            raise ValueError(f"no listed model has {self.min_vram_gb}GB of VRAM ({have})")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {"anyOf": [handler(core_schema), {"type": "string", "examples": ["H100:2", "A100|H100:4"]}]}


def _parse_gpu_string(text: str) -> dict[str, Any]:
    """'A100|H100:80GB:4' -> {models: [A100, H100], min_vram_gb: 80, count: 4}."""
    parts = [p.strip() for p in text.split(":")]
    out: dict[str, Any] = {"models": [m.strip() for m in parts[0].split("|")]}
    for part in parts[1:]:
        vram = re.fullmatch(r"(\d+)\s*(?:GB|GiB|G)", part, re.IGNORECASE)
        if vram and "min_vram_gb" not in out:
            out["min_vram_gb"] = int(vram.group(1))
        elif part.isdigit() and "count" not in out:
            out["count"] = int(part)
        else:
            raise ValueError(
                f"cannot read GPU request {text!r}: expected MODEL[|MODEL...][:VRAM][:COUNT], "
                "e.g. 'H100:2' or 'A100:80GB:2'"
            )
    return out


class Resources(SpecModel):
    """What one replica needs from a node. No ``gpu`` means a CPU-only workload."""

    gpu: GPURequest | None = Field(default=None, description="GPUs per replica; null, 0 or 'none' for CPU-only.")
    cpu: Cores = Field(default=1.0, description="CPU cores per replica (fractions allowed).")
    memory: Memory = Field(
        default=None, description="Memory per replica in MiB; accepts '512MB', '16GB', '2GiB' (GB = GiB)."
    )

    @field_validator("gpu", mode="before")
    @classmethod
    def _no_gpu(cls, value: Any) -> Any:
        if (
            value is False
            or (isinstance(value, int) and value == 0)
            or (isinstance(value, str) and value.strip().lower() in ("", "none", "no", "0"))
        ):
            return None
        return value


class Port(SpecModel):
    """A container port to expose. Short forms: ``8000`` or ``"8000/udp"``."""

    container: PortNumber = Field(description="Port number inside the container.")
    protocol: Literal["tcp", "udp"] = Field(default="tcp", description="Transport protocol.")
    name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9-]{0,62}$", description="Optional port name.")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, int) and not isinstance(data, bool):
            return {"container": data}
        if isinstance(data, str):
            match = re.fullmatch(r"\s*(\d+)\s*(?:/\s*(\w+))?\s*", data)
            if not match:
                raise ValueError(f"expected a port like 8000 or '8000/udp', got {data!r}")
            return {"container": int(match.group(1)), "protocol": (match.group(2) or "tcp").lower()}
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        port_string = {"type": "string", "pattern": r"^\d+(/(tcp|udp))?$"}
        return {"anyOf": [handler(core_schema), {"type": "integer", "minimum": 1, "maximum": 65535}, port_string]}


class Placement(SpecModel):
    """Where replicas may run and at what price; empty lists mean no constraint."""

    regions: list[Region] = Field(default_factory=list, description="Allowed regions; empty means any.")
    deny_regions: list[Region] = Field(default_factory=list, description="Regions never to use.")
    countries: list[str] = Field(default_factory=list, description="Allowed ISO 3166 alpha-2 countries; empty = any.")
    deny_countries: list[str] = Field(default_factory=list, description="ISO 3166 alpha-2 countries never to use.")
    max_price_per_gpu_hour: PricePerGpuHour | None = Field(
        default=None, description="Price ceiling in USD per GPU-hour."
    )
    min_reliability: Fraction | None = Field(default=None, description="Minimum provider reliability, 0..1.")
    spread_providers: bool = Field(default=False, description="Put replicas on different providers where possible.")

    @field_validator("countries", "deny_countries", mode="before")
    @classmethod
    def _country_codes(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        out = []
        for code in value:
            if isinstance(code, bool):  # YAML 1.1 reads NO (Norway) as false
                raise ValueError(f"got {describe(code)} where a country code was expected; quote codes like 'NO'")
            if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z]{2}", code.strip()):
                raise ValueError(f"invalid country code {describe(code)}: expected ISO 3166 alpha-2, e.g. 'DE'")
            out.append(code.strip().upper())
        return out

    @model_validator(mode="after")
    def _no_contradictions(self) -> Placement:
        for allowed, denied, what in (
            (self.regions, self.deny_regions, "region"),
            (self.countries, self.deny_countries, "country"),
        ):
            both = sorted(set(allowed) & set(denied))
            if both:
                raise ValueError(f"{what} {both[0]!r} is both allowed and denied")
        return self


class RetryPolicy(SpecModel):
    """How often a failed replica is started again, with exponential backoff between attempts."""

    max_attempts: Attempts = Field(default=1, description="Total attempts, including the first.")
    backoff_s: BackoffSeconds = Field(default=1.0, description="Seconds to wait before the second attempt.")
    backoff_factor: BackoffFactor = Field(default=2.0, description="Each further wait is this many times longer.")
    backoff_max_s: BackoffSeconds = Field(default=60.0, description="Upper bound on any single wait, in seconds.")

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (1-based; the first waits 0)."""
        if attempt <= 1:
            return 0.0
        try:
            delay = self.backoff_s * self.backoff_factor ** (attempt - 2)
        except OverflowError:
            delay = math.inf
        return min(delay, self.backoff_max_s)


# ----------------------------------------------------------------------------- workloads
_COMMAND_SCHEMA = {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]}


class WorkloadBase(SpecModel):
    """Fields every workload kind shares: what to run, with what, where, how often."""

    name: str = Field(description="Workload name: lowercase letters, digits and '-', starting with a letter.")
    image: str = Field(description="Container image reference, e.g. 'runner/smoke:latest'.")
    command: Annotated[list[str], WithJsonSchema(_COMMAND_SCHEMA)] = Field(
        default_factory=list, description="Command to run; a string is split like a shell does. Empty: image default."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables; numbers become strings.")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables set from the tenant's secrets, by name ({AWS_SECRET_ACCESS_KEY: "
        "aws-key}): the value is never in the spec, the database, status or events; only the container sees it.",
    )
    ports: list[Port] = Field(default_factory=list, description="Container ports to expose.")
    resources: Resources = Field(default_factory=Resources, description="What one replica needs.")
    placement: Placement = Field(default_factory=Placement, description="Where replicas may run.")
    retries: RetryPolicy = Field(default_factory=RetryPolicy, description="Retry policy for failed replicas.")
    timeout: Duration | None = Field(default=None, description="Wall-clock limit per attempt ('90s', '1h30m').")
    labels: dict[str, str] = Field(default_factory=dict, description="Free-form labels for listing and filtering.")

    #: Attempts a ``retries:`` section that names no ``max_attempts`` gets: RetryPolicy's own unless
    #: a kind says otherwise (rented nodes vanish under training; a service must outlive a crash).
    default_attempts: ClassVar[int | None] = None

    @field_validator("retries", mode="before")
    @classmethod
    def _kind_default_attempts(cls, value: Any) -> Any:
        if cls.default_attempts is not None and isinstance(value, dict) and "max_attempts" not in value:
            return {**value, "max_attempts": cls.default_attempts}
        return value

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_mean_defaults(cls, data: Any) -> Any:
        # `resources:` with everything under it commented out reads as null; treat it as unset.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in SECTIONS)}
        return data

    @classmethod
    def _unknown_field_hint(cls, name: str) -> str:
        for other in WorkloadBase.__subclasses__():
            if other is not cls and name in other.model_fields and name not in WorkloadBase.model_fields:
                return f" for kind {_kind_of(cls)} (it belongs to kind {_kind_of(other)})"
        return super()._unknown_field_hint(name)

    @field_validator("name")
    @classmethod
    def _dns_label(cls, name: str) -> str:
        if not DNS_LABEL.match(name):
            raise ValueError(
                f"must be 1-63 lowercase letters, digits or '-', start with a letter and not end with '-', got {name!r}"
            )
        return name

    @field_validator("image")
    @classmethod
    def _image_reference(cls, image: str) -> str:
        if not image.strip():
            raise ValueError("must not be empty")
        if not IMAGE_REF.match(image):
            raise ValueError(f"not a valid image reference: {image!r} (expected e.g. 'repo/name:tag')")
        return image

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"cannot split command {value!r}: {exc}") from None
        if isinstance(value, list):
            return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        value = check_mapping(value, ENV_KEY, "variable name")
        for key in value if isinstance(value, dict) else ():
            problem = reserved_env_problem(key)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("secrets", mode="before")
    @classmethod
    def _secrets(cls, value: Any) -> Any:
        value = check_mapping(value, ENV_KEY, "variable name")
        for key, name in value.items() if isinstance(value, dict) else ():
            problem = reserved_env_problem(key)
            if problem:
                raise ValueError(problem)
            if not SECRET_NAME.match(name):
                raise ValueError(f"{key}: {name!r} is no secret name (must match {SECRET_NAME.pattern})")
        return value

    @model_validator(mode="after")
    def _secret_or_env(self) -> Any:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"secrets: {', '.join(both)} is set in env too; a variable comes from one of them")
        return self

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        return check_mapping(value, LABEL_KEY, "label key")

    @field_validator("ports")
    @classmethod
    def _unique_ports(cls, ports: list[Port]) -> list[Port]:
        seen: set[tuple[int, str]] = set()
        for port in ports:
            if (port.container, port.protocol) in seen:
                raise ValueError(f"port {port.container}/{port.protocol} is listed twice")
            seen.add((port.container, port.protocol))
        return ports


def _kind_of(cls: type[WorkloadBase]) -> str:
    """The ``kind`` tag a workload class is selected by."""
    return str(cls.model_fields["kind"].annotation.__args__[0])  # type: ignore[union-attr]


class BatchSpec(WorkloadBase):
    """Run-to-completion job: ``replicas`` independent copies, done when all exit 0."""

    kind: Literal["batch"] = Field(description="Workload kind.")
    replicas: Replicas = Field(default=1, description="Independent copies to run.")


class CheckpointPolicy(SpecModel):
    """Where and how often a training job saves state, so a retry resumes instead of restarting."""

    uri: str | None = Field(default=None, description="Checkpoint location: file:// or s3:// URI.")
    every_steps: CheckpointSteps = Field(default=100, description="Save every this many training steps.")

    @field_validator("uri")
    @classmethod
    def _scheme(cls, uri: str | None) -> str | None:
        if uri is not None and not re.match(r"^(file|s3)://.+", uri):
            raise ValueError(f"must be a file:// or s3:// URI, got {uri!r}")
        return uri


#: Attempts a training job gets unless its spec says otherwise.
TRAINING_ATTEMPTS = 3


class TrainingSpec(WorkloadBase):
    """Distributed training: ``workers`` cooperating replicas with checkpointing."""

    kind: Literal["training"] = Field(description="Workload kind.")
    workers: Workers = Field(default=1, description="Number of cooperating worker replicas.")
    checkpoint: CheckpointPolicy = Field(default_factory=CheckpointPolicy, description="Checkpoint policy.")
    # Rented nodes vanish: a training job resumes from its last checkpoint without being asked.
    default_attempts: ClassVar[int | None] = TRAINING_ATTEMPTS
    retries: RetryPolicy = Field(
        default_factory=lambda: RetryPolicy(max_attempts=TRAINING_ATTEMPTS),
        description="Retry policy; a retried gang resumes from its last checkpoint (default: 3 attempts).",
    )


class ReplicaRange(SpecModel):
    """Autoscaling bounds; ``replicas: 2`` means exactly two, ``{min: 2}`` means max = min."""

    min: Replicas = Field(default=1, description="Fewest replicas kept running.")
    max: Replicas = Field(default=1, description="Most replicas scaled up to.")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, int) and not isinstance(data, bool):
            return {"min": data, "max": data}
        if isinstance(data, dict) and "min" in data and "max" not in data:
            return {**data, "max": data["min"]}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {"anyOf": [handler(core_schema), {"type": "integer", "minimum": 1, "maximum": MAX_REPLICAS}]}


class Batching(SpecModel):
    """Server-side request batching: trade a little latency for GPU throughput."""

    max_batch_size: BatchSize = Field(default=32, description="Largest batch handed to the model.")
    max_wait_ms: BatchWaitMs = Field(default=5, description="Longest a request waits for a batch to fill.")
    max_queue: QueueLength = Field(default=1024, description="Requests queued before new ones are refused.")


class Autoscale(SpecModel):
    """When a service adds or removes replicas between ``replicas.min`` and ``.max``, judged from
    its replicas' own metrics reports (``runner/core/autoscale.py``): up fast, down slowly."""

    target_concurrency: Concurrency | None = Field(
        default=None,
        description="Requests in flight (queued or running) per replica to aim for; "
        "default: batching.max_batch_size (one full batch each).",
    )
    max_p99_ms: LatencyMs | None = Field(
        default=None, description="Also add a replica while the replicas' p99 latency is above this (off by default)."
    )
    up_after: Duration = Field(
        default=10.0, description="How long the load must call for more replicas before they are added."
    )
    down_after: Duration = Field(
        default=120.0, description="How long the load must allow fewer replicas before one is removed (one at a time)."
    )


#: Failures in a row without ever serving, per replica, unless the spec says otherwise.
SERVICE_ATTEMPTS = 3


class InferenceSpec(WorkloadBase):
    """Long-running model server behind a port, scaled between ``replicas.min`` and ``.max``."""

    kind: Literal["inference"] = Field(description="Workload kind.")
    replicas: ReplicaRange = Field(default_factory=ReplicaRange, description="Replica count or {min, max} range.")
    batching: Batching = Field(default_factory=Batching, description="Request batching settings.")
    model: str | None = Field(default=None, min_length=1, description="Model name or checkpoint URI to serve.")
    autoscale: Autoscale = Field(default_factory=Autoscale, description="When to add or remove replicas.")
    # A service runs for good: a replica that served and then died is always replaced; this bounds
    # only a crash loop (replicas that fail again and again before they ever serve).
    default_attempts: ClassVar[int | None] = SERVICE_ATTEMPTS
    retries: RetryPolicy = Field(
        default_factory=lambda: RetryPolicy(max_attempts=SERVICE_ATTEMPTS),
        description="Per replica: attempts in a row that may fail before serving "
        "(default: 3), with backoff between them.",
    )


class GamingSpec(WorkloadBase):
    """Interactive game stream: one session near the player, under a latency budget."""

    kind: Literal["gaming"] = Field(description="Workload kind.")
    game: str = Field(min_length=1, description="Game (or title id) to launch.")
    fps: Fps = Field(default=60, description="Target frames per second.")
    resolution: str = Field(default="1280x720", description="Stream resolution as WIDTHxHEIGHT.")
    near: Region | None = Field(default=None, description="Region the player is in; placement prefers it.")
    idle_timeout: Duration = Field(default=300.0, description="End the session after this long without input.")
    max_duration: Duration = Field(default=4 * 3600.0, description="Hard cap on session length.")
    latency_budget_ms: LatencyMs = Field(default=50, description="Acceptable network round trip to the player.")

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        match = re.fullmatch(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*", value)
        if not match or not (16 <= int(match.group(1)) <= 7680 and 16 <= int(match.group(2)) <= 4320):
            raise ValueError(f"expected WIDTHxHEIGHT up to 7680x4320, e.g. '1920x1080', got {value!r}")
        return f"{int(match.group(1))}x{int(match.group(2))}"

    @property
    def width(self) -> int:
        """Stream width in pixels."""
        return int(self.resolution.split("x")[0])

    @property
    def height(self) -> int:
        """Stream height in pixels."""
        return int(self.resolution.split("x")[1])


#: Any workload; ``kind`` picks the model.
WorkloadSpec = Annotated[Union[BatchSpec, TrainingSpec, InferenceSpec, GamingSpec], Field(discriminator="kind")]
#: The same four kinds as a plain union, for annotations: a parsed spec of any kind (narrow it with
#: ``spec.kind == ...`` or ``isinstance`` before reading a field only one kind has).
AnySpec: TypeAlias = BatchSpec | TrainingSpec | InferenceSpec | GamingSpec
#: Validator for ``WorkloadSpec`` (built once: building it is the slow part).
WORKLOAD_ADAPTER: TypeAdapter[WorkloadSpec] = TypeAdapter(WorkloadSpec)


def spec_to_dict(spec: WorkloadSpec) -> dict[str, Any]:
    """JSON-able dict of a spec; ``parse_workload`` of it gives an equal spec back."""
    return spec.model_dump(mode="json")


def workload_json_schema() -> dict[str, Any]:
    """JSON schema of a workload spec, for editors and the API docs."""
    schema = WORKLOAD_ADAPTER.json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "runner workload spec", **schema}


def spec_gpu_count(spec: WorkloadSpec) -> int:
    """GPUs one replica (or worker) needs; 0 for a CPU-only workload."""
    gpu = spec.resources.gpu
    return gpu.count if gpu is not None else 0
