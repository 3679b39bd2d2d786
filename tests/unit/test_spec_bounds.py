"""Every number a user writes is finite and bounded, and a refusal names the field and the bound.

The number fields are found by walking the models (``model_fields``) and the JSON schema, not
listed by hand, so a field added later without bounds fails here. Each one is then fed inf, -inf
and nan the three ways they arrive: as Python floats, as JSON (``1e309``, ``NaN``, ``-Infinity``,
which Python's json and so FastAPI read as floats) and as YAML (``.inf``, ``.nan``, ``1.0e+309``).
"""

from __future__ import annotations

import copy
import json
import math
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml

from runner.core.errors import SpecError, UserError
from runner.core.spec import KINDS, WORKLOAD_ADAPTER, SpecModel, load_workload, loads_workload, parse_workload
from runner.core.spec.fields import describe
from runner.core.spec.models import BatchSpec, GamingSpec, InferenceSpec, TrainingSpec

KIND_MODELS: dict[str, type[SpecModel]] = {
    "batch": BatchSpec,
    "training": TrainingSpec,
    "inference": InferenceSpec,
    "gaming": GamingSpec,
}

#: A valid spec of each kind with every section that has required fields filled in, so that any
#: one number in it can be replaced and the rest still parses.
BASE: dict[str, dict[str, Any]] = {
    kind: {
        "kind": kind,
        "name": "n",
        "image": "runner/smoke:latest",
        "ports": [{"container": 8000}],
        "resources": {"gpu": {"models": ["H100"]}},
        **({"game": "breakout"} if kind == "gaming" else {}),
    }
    for kind in KINDS
}


# ---------------------------------------------------------------- the walk
def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """An annotation without ``Annotated``, and the metadata that was on it (outermost first)."""
    metadata: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata.extend(extra)
    return annotation, metadata


def _leaves(annotation: Any, path: str, metadata: list[Any]) -> Iterator[tuple[str, Any, list[Any]]]:
    """(path, leaf type, metadata) for every leaf of an annotation: numbers, strings, models..."""
    annotation, inner = _strip(annotation)
    metadata = metadata + inner
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _leaves(arg, path, metadata)
    elif origin is list:
        yield from _leaves(typing.get_args(annotation)[0], f"{path}[0]", [])
    elif isinstance(annotation, type) and issubclass(annotation, SpecModel):
        yield from number_fields(annotation, path)
    else:
        yield path, annotation, metadata


def number_fields(model: type[SpecModel], prefix: str = "") -> Iterator[tuple[str, Any, list[Any]]]:
    """Every int or float field under ``model``: its dotted path, type and constraints."""
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        for leaf_path, leaf, metadata in _leaves(field.annotation, path, list(field.metadata)):
            if leaf in (int, float):
                yield leaf_path, leaf, metadata


def upper_bound(metadata: list[Any]) -> float | None:
    for item in metadata:
        for attr in ("le", "lt"):
            value = getattr(item, attr, None)
            bounds = (annotated_types.Le, annotated_types.Lt, annotated_types.Interval)
            if isinstance(item, bounds) and value is not None:
                return float(value)
        for sub in getattr(item, "metadata", []) or []:  # a FieldInfo inside Annotated
            found = upper_bound([sub])
            if found is not None:
                return found
    return None


FIELDS = sorted(
    {
        (kind, path, leaf, upper_bound(md))
        for kind, model in KIND_MODELS.items()
        for path, leaf, md in number_fields(model)
    },
    key=lambda f: (f[0], f[1]),
)
IDS = [f"{kind}:{path}" for kind, path, _, _ in FIELDS]


def test_the_walk_finds_the_number_fields() -> None:
    paths = {(kind, path) for kind, path, _, _ in FIELDS}
    for expected in [
        ("batch", "placement.max_price_per_gpu_hour"),
        ("batch", "resources.cpu"),
        ("batch", "resources.memory"),
        ("batch", "resources.gpu.count"),
        ("batch", "ports[0].container"),
        ("batch", "timeout"),
        ("batch", "retries.backoff_s"),
        ("batch", "replicas"),
        ("training", "workers"),
        ("training", "checkpoint.every_steps"),
        ("inference", "replicas.max"),
        ("inference", "batching.max_batch_size"),
        ("inference", "autoscale.up_after"),
        ("gaming", "fps"),
        ("gaming", "latency_budget_ms"),
        ("gaming", "max_duration"),
    ]:
        assert expected in paths
    assert len(FIELDS) >= 60


@pytest.mark.parametrize(("kind", "path", "leaf", "bound"), FIELDS, ids=IDS)
def test_every_number_field_has_an_upper_bound(kind: str, path: str, leaf: type, bound: float | None) -> None:
    assert bound is not None, (
        f"{kind} {path} ({leaf.__name__}) has no upper bound (le=...): see runner/core/spec/fields.py"
    )
    assert math.isfinite(bound)


def _numbers_in_schema(node: Any, where: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") in ("number", "integer"):
            yield where, node
        for key, value in node.items():
            yield from _numbers_in_schema(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _numbers_in_schema(value, f"{where}[{index}]")


def test_every_number_in_the_json_schema_has_a_maximum() -> None:
    """What editors and API clients see: `runner schema` promises the bounds the parser keeps."""
    numbers = list(_numbers_in_schema(WORKLOAD_ADAPTER.json_schema()))
    assert len(numbers) >= 30
    unbounded = [where for where, node in numbers if "maximum" not in node and "exclusiveMaximum" not in node]
    assert unbounded == []


# ---------------------------------------------------------------- poison values at every field
def _with(kind: str, path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE[kind])
    parts = [p for p in re.split(r"\.|(\[\d+\])", path) if p]
    node: Any = doc
    for part, nxt in zip(parts, parts[1:] + [None]):
        if nxt is None:
            break
        key: Any = int(part[1:-1]) if part.startswith("[") else part
        if isinstance(node, dict) and key not in node:
            node[key] = [{}] if nxt.startswith("[") else {}
        node = node[key]
    last = parts[-1]
    node[int(last[1:-1]) if last.startswith("[") else last] = value
    return doc


def _valid_value(path: str, leaf: type, bound: float) -> Any:
    """A value that the field takes: the walk's tests are only as good as a base that parses."""
    return {"ports[0].container": 8000}.get(path, 1 if leaf is int else 1.0)


POISONS = [
    ("inf", math.inf, "1e309", ".inf"),
    ("-inf", -math.inf, "-1e309", "-.inf"),
    ("nan", math.nan, "NaN", ".nan"),
    ("inf (long form)", math.inf, "Infinity", "1.0e+309"),
]
MARK = "__POISON__"


def _refusals(kind: str, path: str, python_value: float, json_text: str, yaml_text: str) -> list[SpecError]:
    """The errors for the value given as a float, as JSON text and as YAML text."""
    out = []
    with pytest.raises(SpecError) as raised:
        parse_workload(_with(kind, path, python_value), source="job.yaml")
    out.append(raised.value)
    as_json = json.dumps(_with(kind, path, MARK)).replace(json.dumps(MARK), json_text)
    with pytest.raises(SpecError) as raised:
        parse_workload(json.loads(as_json), source="job.json")
    out.append(raised.value)
    as_yaml = yaml.safe_dump(_with(kind, path, MARK)).replace(MARK, yaml_text)
    with pytest.raises(SpecError) as raised:
        loads_workload(as_yaml, source="job.yaml")
    out.append(raised.value)
    return out


@pytest.mark.parametrize(("kind", "path", "leaf", "bound"), FIELDS, ids=IDS)
def test_inf_and_nan_are_refused_naming_field_and_bound(kind: str, path: str, leaf: type, bound: float | None) -> None:
    assert bound is not None
    parse_workload(_with(kind, path, _valid_value(path, leaf, bound)))  # the base with this field set parses
    for name, python_value, json_text, yaml_text in POISONS:
        for error in _refusals(kind, path, python_value, json_text, yaml_text):
            assert error.path == path, f"{name}: {error}"
            assert "must be a finite number" in error.message, f"{name}: {error}"
            if name != "-inf":  # too big: the upper bound is named
                assert f"<= {describe(bound)}" in error.message, f"{name}: {error}"


@pytest.mark.parametrize(("kind", "path", "leaf", "bound"), FIELDS, ids=IDS)
def test_a_number_past_the_bound_is_refused_naming_it(kind: str, path: str, leaf: type, bound: float | None) -> None:
    assert bound is not None
    for too_big in (bound * 10 + 1 if leaf is float else int(bound) * 10 + 1, 10**400 if leaf is int else 1e300):
        with pytest.raises(SpecError) as raised:
            parse_workload(_with(kind, path, too_big), source="job.yaml")
        assert raised.value.path == path
        assert f"<= {describe(bound)}" in raised.value.message, str(raised.value)


# ---------------------------------------------------------------- the examples
def test_an_infinite_price_cap_is_refused_with_file_field_and_bound(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("kind: batch\nname: a\nimage: runner/smoke:latest\nplacement:\n  max_price_per_gpu_hour: .inf\n")
    with pytest.raises(SpecError) as raised:
        load_workload(spec)
    assert str(raised.value) == f"{spec}: placement.max_price_per_gpu_hour: must be a finite number <= 1000, got inf"


def test_1e309_in_json_is_refused() -> None:
    body = json.loads('{"kind": "batch", "name": "a", "image": "x", "placement": {"max_price_per_gpu_hour": 1e309}}')
    assert body["placement"]["max_price_per_gpu_hour"] == math.inf  # what FastAPI hands the route
    with pytest.raises(
        SpecError,
        match=r"^<api>: placement.max_price_per_gpu_hour: must be a finite number <= 1000, "
        r"got inf$",
    ):
        parse_workload(body, source="<api>")


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("resources: {memory: .inf}", "resources.memory: must be a finite number <= 33554432 (MiB, 32 TiB), got inf"),
        (
            "resources: {memory: 99999999999999999999999999999999999999999999999999999999" + "9" * 400 + "GB}",
            "resources.memory: must be a finite number <= 33554432 (MiB, 32 TiB), got '999999",
        ),
        ("resources: {memory: 64TB}", "resources.memory: must be <= 33554432, got 67108864"),
        (
            "timeout: 9999999999999999999999999999999999999999999999999" + "9" * 400 + "d",
            "timeout: must be a finite number <= 31622400, got inf",
        ),
        ("timeout: inf", "timeout: must be a finite number <= 31622400, got inf"),
        (
            "resources: {gpu: 'H100:99999999999999999999999999999999999999'}",
            "resources.gpu.count: must be <= 16, got a 38-digit number",
        ),
        (
            "placement: {max_price_per_gpu_hour: 'inf'}",
            "placement.max_price_per_gpu_hour: must be a finite number <= 1000, got 'inf'",
        ),
    ],
)
def test_string_forms_that_read_as_huge_or_infinite(written: str, message: str) -> None:
    with pytest.raises(SpecError) as raised:
        loads_workload(f"kind: batch\nname: a\nimage: runner/smoke:latest\n{written}\n", source="job.yaml")
    assert str(raised.value).startswith(f"job.yaml: {message}")


def test_the_bounds_leave_real_specs_alone() -> None:
    for path in sorted(Path(__file__).parents[2].joinpath("examples").glob("*.yaml")):
        load_workload(path)
    big = loads_workload(
        "kind: training\nname: big\nimage: runner/training:latest\nworkers: 64\ntimeout: 30d\n"
        "resources: {gpu: 'H100:8', cpu: 192, memory: 2TB}\n"
        "placement: {max_price_per_gpu_hour: 12.5}\n"
    )
    assert big.resources.memory == 2 * 1024 * 1024 and big.timeout == 30 * 86400


# ---------------------------------------------------------------- the client: an error, never a traceback
def test_the_client_refuses_a_non_finite_number_before_sending() -> None:
    from runner.client import Client

    client = Client("http://127.0.0.1:9", "rk_nothing")  # nothing listens there: no request may be sent
    spec = {"kind": "batch", "name": "a", "image": "x", "placement": {"max_price_per_gpu_hour": math.inf}}
    with pytest.raises(SpecError, match="job.yaml: placement.max_price_per_gpu_hour: must be a finite number <= 1000"):
        client.submit(spec, source="job.yaml")
    with pytest.raises(UserError, match=r"^budget_usd: must be a finite number, got inf$"):
        client.admin("POST", "/tenants", id="acme", country="DE", budget_usd=math.inf)
    with pytest.raises(UserError, match=r"^benchmark.tflops: must be a finite number, got nan$"):
        client.join({"token": "t", "benchmark": {"tflops": math.nan}})
