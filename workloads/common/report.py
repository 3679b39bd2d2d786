"""Structured report lines: the workload contract's way of talking to the runner.

One JSON object per line on stdout, flushed at once, with a ``"runner"`` key naming the report
type (``progress``, ``checkpoint``, ``result``, ...). The runner keeps the latest report of each
type per replica; every other stdout line is a plain log line.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, TextIO


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: send them as null so every reader can parse the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_line(kind: str, **fields: Any) -> str:
    """The line for one report, without the newline (``kind`` goes first under ``"runner"``)."""
    return json.dumps({"runner": kind, **{k: _clean(v) for k, v in fields.items()}}, separators=(", ", ": "))


def emit(kind: str, stream: TextIO | None = None, **fields: Any) -> None:
    """Print one report line and flush, so a `docker logs -f` reader sees it at once."""
    out = stream or sys.stdout
    out.write(report_line(kind, **fields) + "\n")
    out.flush()


def parse_report(line: str) -> dict[str, Any] | None:
    """The report in ``line``, or None for a plain log line (what the runner's reader does)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("runner"), str) else None
