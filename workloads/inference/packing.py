"""Packing a batch of sentences into rows, so the model computes on tokens, not on padding.

A padded batch costs its size times its longest input: 24 sentences of 8 to 30 tokens run as a
24 x 30 tensor, a third of it padding. Packed, several sentences sit side by side in one row;
each attends only to itself (a block-diagonal attention mask) and its positions restart at 0,
which gives the same vectors as running it alone (cosine > 0.99999, tested), and the rows are
nearly full. A row holds about ``ROW_TOKENS`` tokens: attention is quadratic in the row length,
so rows stay short (rows of 512 tokens ran slower than plain padding; rows of 48 to 160 ran
alike within this machine's noise, 80 ahead in most paired runs). The tokens are spread evenly
over the fewest rows, so the last row is not mostly padding. Every row is as wide as the fullest
one, so with an input longer than a row, rows are that long instead (fewer, fuller rows).

Measured here (all-MiniLM-L6-v2, one core, the bench's sentences): batches of 24 ran at ~170
sentences/s packed against ~153 as the length-sorted padded calls this replaced, batches of 64
at ~180 against ~172. Packing gains most on the small batches a server sees under load.

Pure: lengths in, rows of indices out. Used on CPU; a GPU runs each batch as one padded call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Tokens a row holds, about (see above).
ROW_TOKENS = 80
#: Room over an even share of the tokens per row, so first-fit decreasing can place them all.
SLACK = 1.04


def pack(lengths: Sequence[int], row_tokens: int = ROW_TOKENS) -> list[list[int]]:
    """Indices into ``lengths`` grouped into rows (first-fit decreasing), every index once; a
    row's lengths sum to at most the row capacity: an even share of the tokens over the fewest
    rows of ``row_tokens``, or the longest length when that is more."""
    if not lengths:
        return []
    total = sum(lengths)
    rows_wanted = max(1, math.ceil(total / row_tokens))
    capacity = max(max(lengths), math.ceil(total / rows_wanted * SLACK))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows
