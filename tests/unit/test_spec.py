"""Workload spec parsing: short forms, long forms, round trips, examples and error messages.

Every file in ``bad_specs/`` starts with ``# expect: FRAGMENT``; loading it must raise a
``SpecError`` whose text names the file first and contains the fragment, so the error a user
sees is pinned down by the bad file itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from runner.core.errors import SpecError
from runner.core.spec import (
    KINDS,
    BatchSpec,
    Duration,
    GamingSpec,
    GPURequest,
    InferenceSpec,
    Port,
    Resources,
    RetryPolicy,
    TrainingSpec,
    load_workload,
    loads_workload,
    parse_workload,
    spec_gpu_count,
    spec_to_dict,
    workload_json_schema,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BAD_SPECS = sorted((Path(__file__).parent / "bad_specs").glob("*.yaml"))
BASE: dict[str, Any] = {"kind": "batch", "name": "job", "image": "runner/smoke:latest"}


def batch(**fields: Any) -> BatchSpec:
    spec = parse_workload({**BASE, **fields})
    assert isinstance(spec, BatchSpec)
    return spec


def error_of(data: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_workload(data, "spec.yaml")
    return info.value


# ---------------------------------------------------------------- short forms
@pytest.mark.parametrize(
    ("written", "models", "count", "vram"),
    [
        ("H100", ["H100"], 1, None),
        ("H100:2", ["H100"], 2, None),
        ("A100|H100:4", ["A100", "H100"], 4, None),
        ("A100:80GB:2", ["A100"], 2, 80),
        ("rtx 4090:1", ["RTX4090"], 1, None),
        ("T4|L40S|RTX4090:1", ["T4", "L40S", "RTX4090"], 1, None),
        ("H100|h100:2", ["H100"], 2, None),
    ],
)
def test_gpu_short_forms(written: str, models: list[str], count: int, vram: int | None) -> None:
    gpu = batch(resources={"gpu": written}).resources.gpu
    assert gpu == GPURequest(models=models, count=count, min_vram_gb=vram)


def test_gpu_long_forms() -> None:
    long = {"models": ["H100", "A100"], "count": 2, "min_vram_gb": 40}
    assert batch(resources={"gpu": long}).resources.gpu == GPURequest(models=["H100", "A100"], count=2, min_vram_gb=40)
    assert batch(resources={"gpu": {"models": "H100"}}).resources.gpu == GPURequest(models=["H100"])


@pytest.mark.parametrize("none", [None, 0, "none", False])
def test_no_gpu_spellings(none: object) -> None:
    spec = batch(resources={"gpu": none})
    assert spec.resources.gpu is None
    assert spec_gpu_count(spec) == 0


def test_spec_gpu_count() -> None:
    assert spec_gpu_count(batch(resources={"gpu": "H100:3"})) == 3


@pytest.mark.parametrize(
    ("written", "mib"),
    [
        (512, 512),
        ("512MB", 512),
        ("16GB", 16384),
        ("2GiB", 2048),
        ("1.5G", 1536),
        ("4096Mi", 4096),
        ("1T", 1024 * 1024),
        ("16 gb", 16384),
        (None, None),
    ],
)
def test_memory_forms(written: object, mib: int | None) -> None:
    assert Resources(memory=written).memory == mib  # type: ignore[arg-type]


def test_ports_short_and_long() -> None:
    spec = batch(ports=[8000, "8001/udp", "8002", {"container": 9000, "protocol": "udp", "name": "stream"}])
    assert spec.ports == [
        Port(container=8000),
        Port(container=8001, protocol="udp"),
        Port(container=8002),
        Port(container=9000, protocol="udp", name="stream"),
    ]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1d", 86400.0),
        ("2h 15m 10s", 8110.0),
    ],
)
def test_durations(written: object, seconds: float) -> None:
    assert batch(timeout=written).timeout == seconds


@given(h=st.integers(0, 100), m=st.integers(0, 59), s=st.integers(1, 59))
def test_duration_parts_add_up(h: int, m: int, s: int) -> None:
    from pydantic import TypeAdapter

    assert TypeAdapter(Duration).validate_python(f"{h}h{m}m{s}s") == h * 3600 + m * 60 + s


def test_command_string_is_split_like_a_shell() -> None:
    spec = batch(command="python -c 'print(\"hi there\")'")
    assert spec.command == ["python", "-c", 'print("hi there")']
    assert batch(command=["sleep", 10]).command == ["sleep", "10"]


def test_env_values_become_strings() -> None:
    spec = batch(env={"A": 1, "B": 2.5, "C": True, "D": "x"})
    assert spec.env == {"A": "1", "B": "2.5", "C": "true", "D": "x"}


def test_inference_replicas_shorthand() -> None:
    spec = parse_workload({**BASE, "kind": "inference", "replicas": 2})
    assert isinstance(spec, InferenceSpec)
    assert (spec.replicas.min, spec.replicas.max) == (2, 2)
    spec = parse_workload({**BASE, "kind": "inference", "replicas": {"min": 3}})
    assert (spec.replicas.min, spec.replicas.max) == (3, 3)  # type: ignore[union-attr]


def test_defaults() -> None:
    spec = batch()
    assert spec.replicas == 1 and spec.command == [] and spec.timeout is None
    assert spec.resources.cpu == 1.0 and spec.resources.gpu is None and spec.resources.memory is None
    assert spec.retries.max_attempts == 1


def test_gaming_fields() -> None:
    spec = parse_workload({**BASE, "kind": "gaming", "game": "doom", "resolution": "1920x1080"})
    assert isinstance(spec, GamingSpec)
    assert (spec.width, spec.height) == (1920, 1080)
    assert spec.idle_timeout == 300.0 and spec.max_duration == 4 * 3600.0 and spec.fps == 60


def test_training_fields() -> None:
    spec = parse_workload({**BASE, "kind": "training", "workers": 8, "checkpoint": {"uri": "file:///tmp/ckpt"}})
    assert isinstance(spec, TrainingSpec)
    assert spec.workers == 8 and spec.checkpoint.uri == "file:///tmp/ckpt" and spec.checkpoint.every_steps == 100


def test_countries_are_upper_cased() -> None:
    assert batch(placement={"countries": ["de", "NL"]}).placement.countries == ["DE", "NL"]


def test_specs_are_frozen() -> None:
    spec = batch()
    with pytest.raises(ValidationError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- round trip, examples, schema
ROUND_TRIP = [
    {
        **BASE,
        "resources": {"gpu": "A100|H100:80GB:4", "memory": "16GB", "cpu": 2},
        "ports": [8000, "53/udp"],
        "env": {"X": 1},
        "timeout": "1h30m",
        "labels": {"team": "ml"},
        "retries": {"max_attempts": 3},
    },
    {**BASE, "kind": "training", "workers": 2, "checkpoint": {"uri": "s3://b/k", "every_steps": 10}},
    {
        **BASE,
        "kind": "inference",
        "replicas": {"min": 1, "max": 3},
        "model": "s3://models/x",
        "batching": {"max_wait_ms": 2},
    },
    {
        **BASE,
        "kind": "gaming",
        "game": "doom",
        "near": "eu-west",
        "idle_timeout": "5m",
        "placement": {"regions": ["eu-west"], "deny_countries": ["RU"], "max_price_per_gpu_hour": 0.5},
    },
]


@pytest.mark.parametrize("data", ROUND_TRIP, ids=[d["kind"] for d in ROUND_TRIP])
def test_round_trip(data: dict[str, Any]) -> None:
    spec = parse_workload(data)
    dumped = spec_to_dict(spec)
    assert parse_workload(dumped) == spec
    assert spec_to_dict(parse_workload(dumped)) == dumped


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_parses(path: Path) -> None:
    spec = load_workload(path)
    assert parse_workload(spec_to_dict(spec)) == spec


def test_the_five_examples_exist() -> None:
    assert {p.stem for p in EXAMPLES} >= {"smoke", "batch", "training", "inference", "gaming"}
    smoke = load_workload(ROOT / "examples" / "smoke.yaml")
    assert isinstance(smoke, BatchSpec) and smoke.name == "smoke" and smoke.resources.gpu is None
    assert smoke.command == ["python", "-m", "workloads.smoke"]
    assert (smoke.resources.cpu, smoke.resources.memory, smoke.timeout) == (0.5, 1024, 300.0)
    assert smoke.retries.max_attempts == 2


def test_schema_has_the_four_kinds() -> None:
    schema = workload_json_schema()
    assert schema["title"] == "runner workload spec"
    assert set(schema["discriminator"]["mapping"]) == set(KINDS) == {"batch", "training", "inference", "gaming"}
    assert len(schema["oneOf"]) == 4
    assert schema["$defs"]["Resources"]["properties"]["cpu"]["description"]


def test_loads_workload_reads_yaml_text() -> None:
    spec = loads_workload("kind: batch\nname: a\nimage: runner/smoke:latest\nresources: {gpu: 'H100:2'}\n")
    assert spec_gpu_count(spec) == 2


# ---------------------------------------------------------------- retries
def test_delay_before() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_s=1.0, backoff_factor=2.0, backoff_max_s=10.0)
    assert [policy.delay_before(n) for n in range(1, 8)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert RetryPolicy(backoff_s=3, backoff_factor=1).delay_before(5) == 3.0
    assert RetryPolicy(max_attempts=100, backoff_factor=10, backoff_max_s=7).delay_before(100) == 7.0


# ---------------------------------------------------------------- errors
def test_errors_attribute_lists_every_problem() -> None:
    err = error_of({**BASE, "resources": {"cpu": -1, "memory": 0}})
    assert str(err) == "spec.yaml: resources.cpu: must be > 0, got -1"
    assert (err.path, err.message) == ("resources.cpu", "must be > 0, got -1")
    assert err.errors == [("resources.cpu", "must be > 0, got -1"), ("resources.memory", "must be > 0, got 0")]


def test_discriminator_tag_is_not_in_the_path() -> None:
    assert error_of({**BASE, "resources": {"gpu": {"models": ["H100"], "count": 0}}}).path == "resources.gpu.count"


def test_top_level_not_a_mapping() -> None:
    assert str(error_of([1, 2])) == "spec.yaml: expected a mapping of fields at the top level, got a list"
    assert error_of("kind: batch").path == ""


def test_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="file not found") as info:
        load_workload(missing)
    assert str(info.value).startswith(str(missing))


@pytest.mark.parametrize("path", BAD_SPECS, ids=[p.name for p in BAD_SPECS])
def test_bad_specs(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: ...'"
    expect = first.removeprefix("# expect: ").strip()
    with pytest.raises(SpecError) as info:
        load_workload(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expect in str(info.value)


def test_enough_bad_specs() -> None:
    assert len(BAD_SPECS) >= 12


def test_empty_sections_mean_defaults() -> None:
    spec = loads_workload("kind: batch\nname: a\nimage: runner/smoke:latest\nresources:\nplacement:\nenv:\n")
    assert spec == batch(name="a")


@pytest.mark.parametrize(
    ("kind", "fields", "attempts"),
    [
        ("batch", {}, 1),
        ("training", {"workers": 2}, 3),
        ("inference", {"ports": [8000]}, 3),
        ("gaming", {"game": "g"}, 1),
    ],
)
def test_each_kind_has_its_default_attempts_whether_retries_is_absent_or_silent_on_them(
    kind: str, fields: dict[str, Any], attempts: int
) -> None:
    """One rule (``WorkloadBase.default_attempts``): no ``retries`` and a ``retries`` that names
    only a backoff give the same attempts per kind; naming them always wins."""
    base = {"name": "w", "kind": kind, "image": "runner/smoke:latest", **fields}
    assert parse_workload(base).retries.max_attempts == attempts
    silent = parse_workload({**base, "retries": {"backoff_s": 5}}).retries
    assert (silent.max_attempts, silent.backoff_s) == (attempts, 5)
    assert parse_workload({**base, "retries": {"max_attempts": 7}}).retries.max_attempts == 7


@pytest.mark.parametrize(
    "key",
    ["RUNNER_NODE", "RUNNER_CHECKPOINT_URI", "RAY_AUTH_TOKEN_PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "PATH"]
    + ["PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME"],
)
def test_a_spec_may_not_set_the_runners_rays_or_the_interpreters_variables(key: str) -> None:
    """Issue 15: on the process runtime these would reach past the workload (a preloaded library,
    another PATH, Ray's token path); in a container, they would steer the runner's own code."""
    spec = {"kind": "batch", "name": "env", "image": "runner/smoke:latest", "env": {"OK": "1", key: "x"}}
    with pytest.raises(SpecError) as info:
        parse_workload(spec, source="job.yaml")
    assert str(info.value).startswith(f"job.yaml: env: {key!r} is reserved"), info.value


def test_the_images_own_knobs_and_look_alikes_are_a_specs_to_set() -> None:
    env = {"RUNNER_REPORT_EVERY_S": "1", "RUNNER_TORCH_THREADS": "2", "MY_PATH": "/x", "XLD_FOO": "1", "PY": "3"}
    spec = parse_workload({"kind": "batch", "name": "env", "image": "runner/smoke:latest", "env": env}, source="j")
    assert spec.env == env
