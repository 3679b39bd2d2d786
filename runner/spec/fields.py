"""Scalar field types of workload specs: durations, memory sizes, names, and their checks."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import (AfterValidator, BeforeValidator, Field, WithJsonSchema)



#: The workload kinds, in the order error messages list them.
KINDS: tuple[str, ...] = ("batch", "training", "inference", "gaming")

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_REGION = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
IMAGE_REF = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?"  # optional registry[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # path
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # :tag
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"  # @digest
)
SECTIONS = frozenset({"command", "env", "ports", "resources", "placement", "retries", "labels", "checkpoint",
                       "batching"})
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B|i)?$", re.IGNORECASE)
_MEMORY_UNITS = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def describe(value: object) -> str:
    """How a bad value appears after 'got': literals as written, containers by type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, str)):
        return repr(value)
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, (list, tuple)) else \
        f"a {type(value).__name__}"


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


_DURATION_SCHEMA = {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d)?)+$"}]}

#: A duration in seconds; accepts a number of seconds or strings like "90s", "10m", "1h30m".
Duration = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0), WithJsonSchema(_DURATION_SCHEMA)]


def parse_memory(value: object) -> object:
    """MiB from an int (MiB) or a size string; see the module docstring for units."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        match = _MEMORY.match(value.strip())
        if match:
            return math.ceil(float(match.group(1)) * _MEMORY_UNITS[match.group(2).upper()])
    raise ValueError(f"expected a size like 512MB, 16GB, 2GiB or a number of MiB, got {describe(value)}")


MEMORY_SCHEMA = {"anyOf": [{"type": "integer", "exclusiveMinimum": 0},
                            {"type": "string", "pattern": r"^\d+(\.\d+)?\s*[KMGTkmgt]?(i?B|i)?$"},
                            {"type": "null"}], "default": None}


def _check_region(region: str) -> str:
    if not _REGION.match(region):
        raise ValueError(f"invalid region {region!r}: expected lowercase letters, digits and '-', e.g. 'eu-west'")
    return region


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


def _to_str(value: object, what: str) -> str:
    """Coerce a YAML scalar to str (env values, labels); bools as YAML spells them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ValueError(f"{what} must be a string, number or boolean, got {describe(value)}")
