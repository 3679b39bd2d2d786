"""From YAML text or a dict to a validated spec, or one SpecError naming file, field and expectation."""

from __future__ import annotations

import os
from typing import Any

import yaml
from pydantic import ValidationError

from runner.core.errors import SpecError
from runner.core.spec.fields import KINDS, describe
from runner.core.spec.models import WORKLOAD_ADAPTER, WorkloadBase, WorkloadSpec

# ----------------------------------------------------------------------------- errors
_ANY = "must be {what}, got {input}"
#: Human messages for pydantic's error types; ``{input}`` and numbers in ctx are shown as written.
_MESSAGES = {
    "missing": "missing required field",
    "greater_than_equal": "must be >= {ge}, got {input}",
    "greater_than": "must be > {gt}, got {input}",
    "less_than_equal": "must be <= {le}, got {input}",
    "less_than": "must be < {lt}, got {input}",
    "literal_error": "must be {expected}, got {input}",
    "string_pattern_mismatch": "must match {pattern}, got {input}",
    "finite_number": "must be a finite number, got {input}",  # (bounded fields say their bound: not_finite)
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
    **{
        t: _ANY.replace("{what}", what)
        for t, what in {
            "int_type": "an integer",
            "int_parsing": "an integer",
            "int_from_float": "a whole number",
            "float_type": "a number",
            "float_parsing": "a number",
            "bool_type": "true or false",
            "bool_parsing": "true or false",
            "string_type": "a string",
            "list_type": "a list",
            "dict_type": "a mapping",
            "model_type": "a mapping",
            "model_attributes_type": "a mapping",
        }.items()
    },
}


def _error_path(loc: tuple[Any, ...]) -> str:
    """('batch', 'ports', 0, 'container') -> 'ports[0].container' (the union tag is dropped)."""
    if loc and loc[0] in KINDS:
        loc = loc[1:]
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":
            path += f".{part}" if path else str(part)
    return path


def humanize_error(err: dict[str, Any]) -> tuple[str, str]:
    """One pydantic error as (dotted path, human message)."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    path = _error_path(tuple(err["loc"]))
    if kind == "unknown_field":
        return (f"{path}.{ctx['field']}" if path else ctx["field"]), err["msg"]
    if kind == "union_tag_not_found":
        return "kind", "missing required field"
    if kind == "union_tag_invalid":
        return "kind", f"kind must be one of {', '.join(KINDS)}, got {ctx.get('tag')!r}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return path, str(ctx["error"])
    if kind in _MESSAGES:
        shown = {k: describe(v) if isinstance(v, (int, float)) else v for k, v in ctx.items()}
        return path, _MESSAGES[kind].format(**shown, input=describe(value))
    return path, str(err["msg"])


def parse_workload(data: object, source: str = "<spec>") -> WorkloadSpec:
    """Validate a parsed spec (a dict); any problem raises one ``SpecError``.

    The raised error describes the first problem; all of them are on ``exc.errors`` as
    ``(path, message)`` pairs so a CLI or API can show every one.
    """
    if isinstance(data, WorkloadBase):
        return data  # type: ignore[return-value]
    if not isinstance(data, dict):
        errors = [("", f"expected a mapping of fields at the top level, got {describe(data)}")]
    else:
        try:
            return WORKLOAD_ADAPTER.validate_python(data)
        except ValidationError as exc:
            errors = [humanize_error(e) for e in exc.errors(include_url=False)]  # type: ignore[arg-type]
    error = SpecError(source, *errors[0])
    error.errors = errors  # type: ignore[attr-defined]
    raise error


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if isinstance(key, (str, int, float, bool)):
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def loads_workload(text: str, source: str = "<string>") -> WorkloadSpec:
    """Parse and validate a YAML (or JSON) spec held in a string."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot parse"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if exc.context and exc.context_mark and exc.problem_mark:  # e.g. where an unclosed '[' began
            m = exc.context_mark
            problem += f" ({exc.context} started at line {m.line + 1}, column {m.column + 1})"
        raise SpecError(source, "", f"invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(source, "", f"invalid YAML: {exc}") from None
    if data is None:
        raise SpecError(source, "", "the spec is empty; expected a mapping with at least kind, name and image")
    return parse_workload(data, source)


def load_workload(path: str | os.PathLike[str]) -> WorkloadSpec:
    """Read, parse and validate a spec file; errors name the file as given."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise SpecError(source, "", "file not found") from None
    except IsADirectoryError:
        raise SpecError(source, "", "is a directory, expected a YAML spec file") from None
    except UnicodeDecodeError:
        raise SpecError(source, "", "is not UTF-8 text") from None
    except OSError as exc:
        raise SpecError(source, "", f"cannot read file: {exc.strerror or exc}") from None
    return loads_workload(text, source)
