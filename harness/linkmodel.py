"""When a frame crossing the emulated WAN arrives, or whether it is lost: pure, no I/O.

A path from port ``a`` to port ``b`` is three parts, as a real one is: ``a``'s access link (its
uplink), the core between the two regions, and ``b``'s access link (its downlink). Each access link
has a rate (a serialisation time per frame, one frame at a time, a queue in front of it), an extra
one-way delay of its own (a player's last mile, a chaos spike), jitter and loss; the core adds half
the regions' round trip. Frames of one pair never overtake each other (a path is FIFO), so jitter
spreads the gaps between frames instead of reordering a TCP stream, as ``netem`` does when a rate is
set. The switch (``harness/wan.py``) owns the clock and the randomness and hands them in.

The WAN is emulated as one Ethernet segment, but a real one is routed: a host's ARP is answered by
its first hop, a millisecond away, not by a machine across an ocean. So an address-resolution frame
(``first_hop``) pays only the links' rates: no core, extra delay, jitter or loss. Without that,
every new neighbour would cost two extra round trips and the first probes would measure ARP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: A frame that would wait longer than this for its access link is dropped (a router's buffer).
QUEUE_S = 0.2


@dataclass
class Access:
    """One port's access link: its shape, and when each direction is next free."""

    delay_ms: float = 0.0  # extra one-way delay, each direction
    jitter_ms: float = 0.0  # +/- this, uniformly, each direction
    loss_pct: float = 0.0  # each frame, each direction
    rate_mbit: float | None = None  # each direction; None: as fast as the machine goes
    up: bool = True
    uplink_free_at: float = 0.0  # when the port -> core direction has sent its last queued frame
    downlink_free_at: float = 0.0


def serialised(free_at: float, now: float, size: int, rate_mbit: float | None) -> float | None:
    """When a ``size``-byte frame reaching a link at ``now`` has crossed it; None when the queue in
    front of it is full (tail drop). The caller records the answer as the link's next free time."""
    if rate_mbit is None:
        return now
    start = max(now, free_at)
    if start - now > QUEUE_S:
        return None
    return start + size * 8 / (rate_mbit * 1e6)


def arrival(
    now: float,
    size: int,
    src: Access,
    dst: Access,
    core_one_way_s: float,
    pair_last: float,
    uniform: Callable[[float, float], float],
    chance: Callable[[], float],
    *,
    first_hop: bool = False,
) -> float | None:
    """When a frame that ``src`` hands over at ``now`` reaches ``dst``, or None when it is lost.

    ``pair_last`` is when the previous frame of this pair arrived (FIFO). ``uniform(lo, hi)`` and
    ``chance()`` (in [0, 1)) are the switch's randomness. Updates both links' free times.
    """
    if not (src.up and dst.up):
        return None
    if not first_hop and (chance() * 100 < src.loss_pct or chance() * 100 < dst.loss_pct):
        return None
    sent = serialised(src.uplink_free_at, now, size, src.rate_mbit)
    if sent is None:
        return None
    if src.rate_mbit is not None:
        src.uplink_free_at = sent
    one_way = 0.0 if first_hop else core_one_way_s + (src.delay_ms + dst.delay_ms) / 1000
    jitter = 0.0 if first_hop else (src.jitter_ms + dst.jitter_ms) / 1000
    if jitter:
        one_way = max(0.0, one_way + uniform(-jitter, jitter))
    reached = sent + one_way
    delivered = serialised(dst.downlink_free_at, reached, size, dst.rate_mbit)
    if delivered is None:
        return None
    if dst.rate_mbit is not None:
        dst.downlink_free_at = delivered
    return max(delivered, pair_last)
