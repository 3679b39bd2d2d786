"""Request bodies of the OpenAI-compatible API, and their errors in OpenAI's shape.

pydantic checks the envelope (fields, types, enums) straight from the JSON bytes; ``input`` and
``prompt`` are checked by hand after it, because their messages must name the exact element
(``input[3]``) and say what to send instead, which a union type's error list does not.
Unknown fields are refused, as OpenAI does, so a typo (``inputs``) is a 400 naming it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workloads.inference.errors import InvalidRequestError


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EmbeddingRequest(_Body):
    input: Any = Field(description="A string or a list of strings to embed.")
    model: str
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None
    user: str | None = None


class CompletionRequest(_Body):
    prompt: Any = Field(description="A string or a list of strings to complete.")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int | None = None
    stream: bool | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None


_TYPE_NAMES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "list",
    dict: "object",
    type(None): "null",
}


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _fields(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def parse_body(model: type[_Body], raw: bytes) -> Any:
    """Validate ``raw`` JSON into ``model``; the first problem becomes an InvalidRequestError."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _to_api_error(model, exc) from None


def _to_api_error(model: type[_Body], exc: ValidationError) -> InvalidRequestError:
    err = exc.errors(include_url=False)[0]
    kind, loc = err["type"], err.get("loc", ())
    param = ".".join(str(part) for part in loc) or None
    if kind == "json_invalid":
        return InvalidRequestError(
            f"the request body is not valid JSON ({err['ctx'].get('error', err['msg'])}). To fix: send a JSON object",
            code="invalid_json",
        )
    if kind == "model_type" or not loc:
        return InvalidRequestError(f"the request body must be a JSON object with {_fields(model)}", code="invalid_json")
    if kind == "missing":
        return InvalidRequestError(f"{param} is required", param=param, code="missing_required_parameter")
    if kind == "extra_forbidden":
        return InvalidRequestError(
            f"unknown field {param!r}; this endpoint takes {_fields(model)}", param=param, code="unknown_parameter"
        )
    if kind == "literal_error":
        return InvalidRequestError(f"{param} must be {err['ctx']['expected']}, got {err['input']!r}", param=param)
    got = _type_name(err.get("input"))
    return InvalidRequestError(f"{param}: {err['msg'].lower()} (got {got} {err.get('input')!r})"[:500], param=param)


def texts_of(value: Any, field: str, max_items: int) -> list[str]:
    """``value`` as a non-empty list of non-empty strings, or an InvalidRequestError naming
    ``field`` or ``field[i]``. Token-id arrays (OpenAI also takes those) are refused: this
    server's tokenizer is not the client's."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequestError(f"{field} must not be an empty string", param=field)
        return [value]
    if not isinstance(value, list):
        raise InvalidRequestError(
            f"{field} must be a string or a list of strings, got {_type_name(value)}", param=field
        )
    if not value:
        raise InvalidRequestError(f"{field} must not be an empty list; send at least one string", param=field)
    if len(value) > max_items:
        raise InvalidRequestError(
            f"{field} has {len(value)} items; at most {max_items} per request. To fix: split it into several requests",
            param=field,
        )
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if isinstance(item, str):
            if not item:
                raise InvalidRequestError(f"{where} must not be an empty string", param=where)
            continue
        if isinstance(item, (int, list)) and not isinstance(item, bool):
            raise InvalidRequestError(
                f"{where} is a token array/id; this server takes text only. To fix: send the text as a string",
                param=where,
            )
        raise InvalidRequestError(f"{where} must be a string, got {_type_name(item)}", param=where)
    return value
