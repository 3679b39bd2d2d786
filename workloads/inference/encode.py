"""Response bodies in OpenAI's exact shapes, as JSON bytes.

orjson is used when installed (the image has it): it writes a float32 numpy row directly, about
ten times faster than ``json.dumps(row.tolist())``, which matters at hundreds of 384-float
vectors a second on a CPU the model also needs. The stdlib ``json`` is the fallback.
``base64`` (what the official ``openai`` client asks for by default) is the raw little-endian
float32 bytes, as OpenAI sends them.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.responses import Response

from workloads.inference.backend import CompletionOutput
from workloads.inference.errors import ApiError

try:
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None


def dumps(obj: Any) -> bytes:
    """JSON bytes of ``obj``; numpy arrays allowed (as lists)."""
    if orjson is not None:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, separators=(",", ":"), default=_numpy_default).encode()


def _numpy_default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if tolist is None:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")
    return tolist()


def _base64_f32(vector: Any) -> str:
    import numpy as np

    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def embeddings_body(vectors: Sequence[Any], encoding_format: str, model: str, prompt_tokens: int) -> bytes:
    """``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage"}``."""
    if encoding_format == "base64":
        data = [{"object": "embedding", "index": i, "embedding": _base64_f32(v)} for i, v in enumerate(vectors)]
    else:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    )


def completions_body(outputs: Sequence[CompletionOutput], model: str, prompt_tokens: Sequence[int]) -> bytes:
    """A ``text_completion`` object, one choice per prompt, with usage summed over prompts."""
    completion_tokens = sum(o.completion_tokens for o in outputs)
    prompt_total = sum(prompt_tokens)
    return dumps(
        {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"text": o.text, "index": i, "logprobs": None, "finish_reason": o.finish_reason}
                for i, o in enumerate(outputs)
            ],
            "usage": {
                "prompt_tokens": prompt_total,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_total + completion_tokens,
            },
        }
    )


def error_response(error: ApiError) -> Response:
    headers = {"retry-after": "1"} if error.status in (429, 503) else None
    return Response(dumps(error.body()), status_code=error.status, media_type="application/json", headers=headers)
