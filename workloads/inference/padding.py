"""Split one batch into the sub-batches that cost least once padding is counted.

A padded batch costs its row count times its longest row: 16 sentences of 8 to 30 tokens run
as a 16 x 30 tensor, a third of it padding. Each model call also has a fixed cost (the Python
and dispatch work of a forward pass). So a batch is cheapest run as a few calls over its
inputs sorted by length, each call padded only to its own longest input. Which split is best
is a small dynamic programme over the sorted lengths, minimising

    sum over calls of (call_cost + rows x longest row)

in token slots. For all-MiniLM-L6-v2 on one core here a straight-line fit of uniform batches
gives ~4.2 ms a call and ~0.25 ms a token slot (16 slots a call), but of 8, 16 and 32 slots, 32
ran best (small calls cost more than the line says); with it a batch of 32 mixed-length
sentences ran 1.3x faster than as one padded tensor, 64 of them 1.5x. On a GPU the fixed cost
dwarfs padding, and one call is right: pass ``call_cost=inf``.

Pure: lengths in, groups of indices out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def split_by_length(lengths: Sequence[int], call_cost: float) -> list[list[int]]:
    """Groups of indices into ``lengths`` (each group one model call), cheapest first-to-last
    by length; every index appears exactly once. ``call_cost`` is one call's fixed cost in
    token slots; ``inf`` gives one group (no split)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    if len(order) <= 1 or math.isinf(call_cost):
        return [order] if order else []
    sizes = [lengths[i] for i in order]
    n = len(sizes)
    best = [0.0] + [math.inf] * n  # best[j]: cheapest way to run the j shortest inputs
    cut = [0] * (n + 1)  # cut[j]: where the last call of that way starts
    for j in range(1, n + 1):
        longest = sizes[j - 1]  # sorted, so a call's last row is its longest
        for i in range(j):
            cost = best[i] + call_cost + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]
