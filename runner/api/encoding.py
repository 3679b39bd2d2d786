"""Responses as strict JSON, whatever a stored number holds.

JSON has no infinity and no NaN, and Starlette's ``JSONResponse`` refuses them (a 500). They can
still reach stored state: a trainer's loss that diverged is ``NaN`` in its report line, and a spec
stored by a version that did not bound its numbers may hold ``Infinity``. Routes with a response
model (``schemas.py``) are serialized by pydantic first, which writes such a value as ``null`` (as
JavaScript's ``JSON.stringify`` does); this class makes every other response (one a route builds
itself, as submit does for its 201, and the error handlers) answer the same, instead of a 500.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (inf, -inf, nan) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class FiniteJSONResponse(JSONResponse):
    """The API's response class: the usual encoding, and ``finite`` only when it is needed."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # "Out of range float values are not JSON compliant"
            return super().render(finite(content))
