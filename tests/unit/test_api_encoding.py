"""The API answers stored non-finite numbers (a diverged loss, an old unbounded spec) as null,
strict JSON, instead of failing the whole read with a 500."""

from __future__ import annotations

import json
import math

from fastapi import FastAPI
from fastapi.testclient import TestClient

from runner.api.encoding import FiniteJSONResponse, finite


def test_non_finite_numbers_become_their_names_and_the_rest_is_unchanged() -> None:
    value = {"loss": math.nan, "cap": math.inf, "floor": -math.inf, "steps": [1, 2.5, math.nan], "ok": "x", "n": None}
    assert finite(value) == {"loss": None, "cap": None, "floor": None, "steps": [1, 2.5, None], "ok": "x", "n": None}
    body = FiniteJSONResponse(value).body
    assert json.loads(body, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) == finite(value)


def test_a_route_returning_nan_answers_200_with_strict_json() -> None:
    app = FastAPI(default_response_class=FiniteJSONResponse)

    @app.get("/report")
    def report():  # type: ignore[no-untyped-def]  # no annotation: no pydantic pass before the response
        return {"progress": {"step": 120, "loss": math.nan}}

    response = TestClient(app, raise_server_exceptions=False).get("/report")
    assert response.status_code == 200
    assert response.json() == {"progress": {"step": 120, "loss": None}}
    assert "NaN" not in response.text
