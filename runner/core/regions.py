"""Regions and the round-trip times between them: how far a node is from a player.

Pure: the table comes from ``runner/data/regions.yaml`` (or another file), parsed once.
A region the table does not know is infinitely far, so a session with a latency budget never
lands there by accident.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class RegionTable:
    """Symmetric region-to-region RTT in milliseconds."""

    names: tuple[str, ...]
    local_rtt_ms: float
    rtt: dict[tuple[str, str], float]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RegionTable":
        names = tuple(data.get("regions") or {})
        rtt: dict[tuple[str, str], float] = {}
        for a, row in (data.get("rtt_ms") or {}).items():
            for b, ms in row.items():
                for pair in ((a, b), (b, a)):
                    if pair[0] not in names or pair[1] not in names:
                        raise ValueError(
                            f"rtt_ms names region {pair[0] if pair[0] not in names else pair[1]!r}, "
                            "which is not under regions:"
                        )
                    rtt[pair] = float(ms)
        return cls(names=names, local_rtt_ms=float(data.get("local_rtt_ms", 5)), rtt=rtt)

    def rtt_ms(self, a: str, b: str) -> float:
        """Round trip between two regions; ``inf`` when either is unknown or the pair is missing."""
        if a == b and a in self.names:
            return self.local_rtt_ms
        return self.rtt.get((a, b), math.inf)

    def nearest(self, region: str) -> list[tuple[str, float]]:
        """Every known region with its RTT from ``region``, nearest first."""
        return sorted(((r, self.rtt_ms(region, r)) for r in self.names), key=lambda item: (item[1], item[0]))


@lru_cache(maxsize=1)
def default_regions() -> RegionTable:
    text = (resources.files("runner") / "data" / "regions.yaml").read_text()
    return RegionTable.from_dict(yaml.safe_load(text))
