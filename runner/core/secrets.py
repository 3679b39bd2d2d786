"""Secrets in a workload's output: each value a replica prints is replaced by its name. Pure.

A spec names its secrets (``secrets: {VAR: name}``); the container gets the values in its env.
Code that prints its environment (a debug line, a crash dump) would put them in the stored log,
shown by ``runner logs`` and kept in the database: so every stored line has each value replaced
by ``[secret NAME]`` first. Values shorter than ``MIN_MASKED`` are left alone (masking ``1`` or
``on`` everywhere would garble every log and hide nothing worth hiding).
"""

from __future__ import annotations

from collections.abc import Mapping

MIN_MASKED = 6


def masked(lines: list[str], values: Mapping[str, str]) -> list[str]:
    """``lines`` with every secret value (by name) replaced by ``[secret NAME]``, longest first
    (a value inside another is not left half shown)."""
    order = sorted(((v, n) for n, v in values.items() if len(v) >= MIN_MASKED), key=lambda vn: -len(vn[0]))
    if not order:
        return lines
    out = []
    for line in lines:
        for value, name in order:
            if value in line:
                line = line.replace(value, f"[secret {name}]")
        out.append(line)
    return out
