"""A fuzzer for specs (issue 15, point 10): whatever a tenant writes, ``runner validate`` and the
submit route answer a valid spec or one clean error naming the file and the field; never a
traceback, never a 5xx.

Hypothesis draws documents three ways: YAML text of any shape (bytes that are not YAML, YAML
that is not a mapping); mappings built from the spec's own field names with values of every
JSON type, nested (the shapes a confused or hostile author writes); and each example spec with
one field replaced by such a value (near-valid specs, where the deepest validation runs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from runner.cli import app as cli
from runner.core.errors import SpecError
from runner.core.policy import KYC
from runner.core.spec import loads_workload, parse_workload
from runner.store import Store
from tests.support.inprocess_api import LOOPBACK_PEER, StubSupervisor, make_app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "examples").glob("*.yaml"))]
#: Field names the spec models know (and some they do not), so drawn mappings reach deep.
NAMES = sorted(
    {
        *(k for spec in EXAMPLES for k in spec),
        *("gpu", "cpu", "memory", "min", "max", "uri", "every_steps", "max_attempts", "backoff", "port"),
        *("regions", "countries", "max_price", "timeout", "env", "command", "image", "kind", "name", "x"),
    }
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["1h", "-5s", "16GB", "H100", "0", "nan", "inf", "1e309", "runner/smoke", "batch", "training"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
MAPPINGS = st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=8)


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    spec = json.loads(json.dumps(draw(st.sampled_from(EXAMPLES))))
    field = draw(st.sampled_from(sorted(spec)))
    spec[field] = draw(VALUES)
    return spec


DOCUMENTS = st.one_of(MAPPINGS, near_valid(), VALUES)
#: What a clean error looks like: the file, then the field path (or nothing for the whole file), then words.
CLEAN = re.compile(r"^fuzz\.yaml: (?:[\w\[\]\.\-]+: )?\S")


def clean_error(exc: SpecError) -> bool:
    return bool(CLEAN.match(str(exc))) and "Traceback" not in str(exc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_any_document_is_a_valid_spec_or_one_clean_error(doc: Any) -> None:
    try:
        parse_workload(doc, source="fuzz.yaml")
    except SpecError as exc:
        assert clean_error(exc), str(exc)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | DOCUMENTS.map(lambda d: yaml.safe_dump(d, allow_unicode=True)))
def test_any_text_is_a_valid_spec_or_one_clean_error(text: str) -> None:
    try:
        loads_workload(text, "fuzz.yaml")
    except SpecError as exc:
        assert clean_error(exc), str(exc)
    except RecursionError as exc:  # pragma: no cover - a failure, said plainly
        raise AssertionError("a deeply nested document crashed the parser") from exc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=120) | DOCUMENTS.map(lambda d: yaml.safe_dump(d, allow_unicode=True)))
def test_runner_validate_answers_ok_or_one_clean_line(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert str(path) in result.output


def test_the_submit_route_answers_4xx_naming_the_field_never_5xx(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'runner.db'}")
    store.add_tenant("acme", country="DE", kyc=KYC.VERIFIED)
    http = TestClient(make_app(store, StubSupervisor()), raise_server_exceptions=False, client=LOOPBACK_PEER)
    headers = {"Authorization": f"Bearer {store.create_api_key('acme')}"}

    @settings(max_examples=300, deadline=None)
    @given(DOCUMENTS)
    def submit(doc: Any) -> None:
        raw = json.dumps({"spec": doc, "source": "fuzz.yaml"}, allow_nan=True)  # NaN, Infinity as a client may send
        r = http.post("/v1/workloads", content=raw, headers={**headers, "Content-Type": "application/json"})
        assert r.status_code in (201, 400, 403, 409, 422, 429), (r.status_code, r.text[:300])
        if r.status_code >= 400:
            body = r.json()
            assert body["message"] and "Traceback" not in body["message"], body
            if body["error"] == "SpecError":
                assert CLEAN.match(body["message"]), body

    submit()
