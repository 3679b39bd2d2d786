"""Scalar field types of workload specs: durations, memory sizes, names, and their checks."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

#: The workload kinds, in the order error messages list them.
KINDS: tuple[str, ...] = ("batch", "training", "inference", "gaming")

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_REGION = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Environment names a spec may not set: the runner's contract with its containers (``RUNNER_*``),
#: Ray's credentials and settings (``RAY_*``), the dynamic loader's (``LD_PRELOAD`` and kin) and
#: the interpreters' search paths (``PATH``, ``PYTHON*``). On the process runtime any of them
#: would reach past the workload, and in a container they would confuse the runner's own code.
RESERVED_ENV = re.compile(r"^(?:RUNNER_|RAY_|LD_|PYTHON)|^PATH$")
#: ``RUNNER_*`` knobs of the runner's own workload images that a spec may turn (documented in
#: ``workloads/``): they tune the image's code, not the runner's.
IMAGE_KNOBS = frozenset(
    {
        "RUNNER_REPORT_EVERY_S",
        "RUNNER_MODEL_WORKERS",
        "RUNNER_TORCH_THREADS",
        "RUNNER_MAX_INPUTS",
        "RUNNER_CHECKPOINT_KEEP",
    }
)
LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
IMAGE_REF = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?"  # optional registry[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # path
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # :tag
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"  # @digest
)
SECTIONS = frozenset(
    {"command", "env", "ports", "resources", "placement", "retries", "labels", "checkpoint", "batching"}
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B|i)?$", re.IGNORECASE)
_MEMORY_UNITS = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}

# ----------------------------------------------------------------------------- bounds
# Every number a user writes, in a spec or in an API body, is finite and bounded, and this is the
# one place the bounds are kept. Each is far beyond any real use, yet small enough that whatever is
# computed from it stays exact and cheap: money in integer micro-USD fits a signed 64-bit column
# with room to spare, seconds and counts fit a float, nothing allocates per unit of a count. (An
# infinite price cap once passed validation and then stopped the supervisor for every tenant, on
# an OverflowError converting it to micro-USD.) tests/unit/test_spec_bounds.py walks every model
# and fails for a number field without an upper bound, or one that takes inf or nan.

#: A price cap, USD per GPU-hour. The dearest GPUs rent for a few tens of USD an hour; 1000 leaves
#: room for what comes next (1000 USD is 1e9 micro-USD).
MAX_USD_PER_GPU_HOUR = 1000
#: Money an operator moves at once (a tenant's budget, a provider's stake), USD: a billion is
#: 1e15 micro-USD, a ten-thousandth of what a signed 64-bit column holds.
MAX_USD = 1_000_000_000
#: The largest row id or sequence number a route takes: what a database's 64-bit integer holds.
MAX_ROW_ID = 2**63 - 1
#: CPU cores per replica: the largest single servers have fewer than 1000 hardware threads.
MAX_CORES = 1024
#: Memory per replica in MiB: 32 TiB, above the largest single machines sold (about 24 TiB).
MAX_MEMORY_MIB = 32 * 1024 * 1024
#: GPUs per replica: a node holds 8, rarely 16; more is a training gang of several workers.
MAX_GPUS_PER_REPLICA = 16
#: A VRAM floor per GPU, GB: today's largest GPUs hold under 300 GB.
MAX_VRAM_GB = 1024
#: Any duration (timeouts, session lengths, autoscale windows): a year. Work that must run longer
#: in one attempt is not work anyone can supervise or bill as one run; it checkpoints and retries.
MAX_DURATION_S = 366 * 86_400
#: Attempts of a replica or gang, first included.
MAX_ATTEMPTS = 100
#: Seconds between retries: a day between attempts is already a human's decision, not a backoff.
MAX_BACKOFF_S = 86_400
#: Growth of the wait from one retry to the next (10 reaches the day above within 5 retries).
MAX_BACKOFF_FACTOR = 10
#: Independent copies of a batch job, or replicas of a service.
MAX_REPLICAS = 1000
#: Workers of one training gang (all placed at once, on distinct nodes).
MAX_WORKERS = 1024
#: Training steps between checkpoints: a billion steps is far beyond any run.
MAX_CHECKPOINT_STEPS = 1_000_000_000
#: Requests in one server-side batch: the model server allocates a batch this large to warm up.
MAX_BATCH_SIZE = 4096
#: How long a request may wait for its batch to fill, ms: beyond 10 s it is queueing, not batching.
MAX_BATCH_WAIT_MS = 10_000
#: Requests queued per replica before new ones are refused.
MAX_QUEUE = 1_000_000
#: Requests in flight per replica that the autoscaler aims for.
MAX_CONCURRENCY = 100_000
#: Latency targets, ms (a service's p99, a session's round trip to the player): a minute.
MAX_LATENCY_MS = 60_000
#: A joining node's measured TFLOPS: today's fastest GPUs reach a few thousand at low precision.
MAX_TFLOPS = 100_000
#: Frames per second of a game stream: the fastest consumer displays refresh at 240 Hz.
MAX_FPS = 240


def describe(value: object) -> str:
    """How a bad value appears after 'got': literals as written, containers by type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, int) and len(str(abs(value))) > 30:  # no wall of digits in an error line
        return f"{'-' if value < 0 else ''}a {len(str(abs(value)))}-digit number"
    if isinstance(value, str) and len(value) > 60:
        return repr(value[:40] + "...")
    if isinstance(value, (int, float, str)):
        return repr(value)
    return (
        "a mapping"
        if isinstance(value, dict)
        else "a list"
        if isinstance(value, (list, tuple))
        else f"a {type(value).__name__}"
    )


# ----------------------------------------------------------------------------- bounded numbers
def _not_finite(value: object, bound: str) -> PydanticCustomError:
    return PydanticCustomError(
        "not_finite", "must be a finite number {bound}, got {input}", {"bound": bound, "input": describe(value)}
    )


def finite_check(*, le: float, ge: float | None = None, gt: float | None = None) -> Any:
    """A before-validator refusing inf, -inf and nan (as numbers, or strings such as "inf", which
    pydantic would read as numbers), naming the bound: ``must be a finite number <= 1000, got inf``.
    JSON's ``1e309`` and YAML's ``.inf`` both arrive here as inf."""
    upper = f"<= {describe(le)}"
    lower = f">= {describe(ge)}" if ge is not None else f"> {describe(gt)}" if gt is not None else upper

    def check(value: Any) -> Any:
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                return value  # not a number at all: pydantic's own type error says so
        if isinstance(number, float) and not math.isfinite(number):
            raise _not_finite(value, lower if number < 0 else upper)
        return value

    return check


def bounded(base: type, *, le: float, ge: float | None = None, gt: float | None = None) -> Any:
    """An int or float field type that is finite and within its bounds (``le`` always)."""
    # The constraints come first, so pydantic applies them in its core (and the JSON schema shows
    # them as minimum/maximum); the before-validator wraps that and runs ahead of it.
    return Annotated[
        base, Field(ge=ge, gt=gt, le=le, allow_inf_nan=False), BeforeValidator(finite_check(le=le, ge=ge, gt=gt))
    ]


# The number types of specs, one per kind of quantity, each with its bound from above.
GpuCount = bounded(int, ge=1, le=MAX_GPUS_PER_REPLICA)
VramGb = bounded(int, ge=1, le=MAX_VRAM_GB)
Cores = bounded(float, gt=0, le=MAX_CORES)
PortNumber = bounded(int, ge=1, le=65535)
PricePerGpuHour = bounded(float, gt=0, le=MAX_USD_PER_GPU_HOUR)
Fraction = bounded(float, ge=0, le=1)
Attempts = bounded(int, ge=1, le=MAX_ATTEMPTS)
BackoffSeconds = bounded(float, ge=0, le=MAX_BACKOFF_S)
BackoffFactor = bounded(float, ge=1, le=MAX_BACKOFF_FACTOR)
Replicas = bounded(int, ge=1, le=MAX_REPLICAS)
Workers = bounded(int, ge=1, le=MAX_WORKERS)
CheckpointSteps = bounded(int, ge=1, le=MAX_CHECKPOINT_STEPS)
BatchSize = bounded(int, ge=1, le=MAX_BATCH_SIZE)
BatchWaitMs = bounded(float, ge=0, le=MAX_BATCH_WAIT_MS)
QueueLength = bounded(int, ge=1, le=MAX_QUEUE)
Concurrency = bounded(float, gt=0, le=MAX_CONCURRENCY)
LatencyMs = bounded(float, gt=0, le=MAX_LATENCY_MS)
Fps = bounded(int, ge=1, le=MAX_FPS)
#: Money in an operator's request (budgets, stakes), USD.
Usd = bounded(float, ge=0, le=MAX_USD)
#: What a joining machine says of itself: its cores, memory in MiB, measured TFLOPS.
NodeCores = bounded(float, gt=0, le=MAX_CORES)
NodeMemoryMiB = bounded(int, gt=0, le=MAX_MEMORY_MIB)
Tflops = bounded(float, ge=0, le=MAX_TFLOPS)


# ----------------------------------------------------------------------------- scalar types
def _parse_duration(value: object) -> object:
    """Seconds from a number or '90s' / '10m' / '1h30m' / '500ms' / '1d'; bad -> ValueError."""
    if not isinstance(value, str):
        return value  # numbers (and None for optional fields) go on to pydantic's own checks
    text = value.strip().lower().replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    if text and _DURATION_PART.sub("", text) == "":
        return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    raise ValueError(f"expected a duration like 90, '90s', '10m' or '1h30m', got {value!r}")


_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION_S},
        {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d)?)+$"},
    ]
}
_finite_duration = finite_check(gt=0, le=MAX_DURATION_S)

#: A duration in seconds; accepts a number of seconds or strings like "90s", "10m", "1h30m"; at
#: most ``MAX_DURATION_S`` (a year).
Duration = Annotated[
    float,
    Field(gt=0, le=MAX_DURATION_S, allow_inf_nan=False),
    BeforeValidator(lambda v: _finite_duration(_parse_duration(v))),
    WithJsonSchema(_DURATION_SCHEMA),
]


def parse_memory(value: object) -> object:
    """MiB from an int (MiB) or a size string; see the module docstring for units."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _not_finite(value, f"<= {MAX_MEMORY_MIB} (MiB, 32 TiB)")
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        match = _MEMORY.match(value.strip())
        if match:
            mib = float(match.group(1)) * _MEMORY_UNITS[match.group(2).upper()]
            if not math.isfinite(mib):  # 400 digits of GB read as inf
                raise _not_finite(value, f"<= {MAX_MEMORY_MIB} (MiB, 32 TiB)")
            return math.ceil(mib)
    raise ValueError(f"expected a size like 512MB, 16GB, 2GiB or a number of MiB, got {describe(value)}")


MEMORY_SCHEMA = {
    "anyOf": [
        {"type": "integer", "exclusiveMinimum": 0, "maximum": MAX_MEMORY_MIB},
        {"type": "string", "pattern": r"^\d+(\.\d+)?\s*[KMGTkmgt]?(i?B|i)?$"},
        {"type": "null"},
    ],
    "default": None,
}


def _check_region(region: str) -> str:
    if not _REGION.match(region):
        raise ValueError(f"invalid region {region!r}: expected lowercase letters, digits and '-', e.g. 'eu-west'")
    return region


#: Memory per replica in MiB, from a number of MiB or a size string; at most ``MAX_MEMORY_MIB``; null
#: for the default. (The bounds sit on the int alone: on the union they would be tried on null too.)
Memory = Annotated[
    Annotated[int, Field(gt=0, le=MAX_MEMORY_MIB), BeforeValidator(parse_memory)] | None, WithJsonSchema(MEMORY_SCHEMA)
]


#: A region name such as ``eu-west`` (the ``region`` label of fleet nodes).
Region = Annotated[str, AfterValidator(_check_region)]


def check_mapping(value: Any, key_pattern: re.Pattern[str], what: str) -> Any:
    """Env and labels: validate keys, coerce YAML scalars to str (bools as YAML spells them)."""
    if not isinstance(value, dict):
        return value
    for key in value:
        if not isinstance(key, str) or not key_pattern.match(key):
            raise ValueError(f"invalid {what} {describe(key)}: must match {key_pattern.pattern}")
    return {key: _to_str(v, f"value of {key!r}") for key, v in value.items()}


#: A tenant's secret's name (``runner secrets set NAME``).
SECRET_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def reserved_env_problem(key: str) -> str | None:
    """Why a spec may not set ``key``, in words; None when it may."""
    if key in IMAGE_KNOBS or not RESERVED_ENV.match(key):
        return None
    return (
        f"{key!r} is reserved: a spec may not set RUNNER_*, RAY_*, LD_*, PATH or PYTHON* variables "
        f"(the runner's and the interpreter's own; allowed knobs: {', '.join(sorted(IMAGE_KNOBS))})"
    )


def _to_str(value: object, what: str) -> str:
    """Coerce a YAML scalar to str (env values, labels); bools as YAML spells them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ValueError(f"{what} must be a string, number or boolean, got {describe(value)}")
