"""The game stream's rate controller (workloads/gaming/rate.py), on made-up links: pure arithmetic.

A ``Link`` here is the controller's view of a bottleneck: frames of the encoder's size go in at
60 fps, each waits for the ones before it, and its receipt comes back after the base round trip
plus that wait. Nothing else (no sockets, no clock but the one the test moves).
"""

from __future__ import annotations

import pytest

from workloads.gaming import rate
from workloads.gaming.rate import RateController, Rung, ladder

FPS = 60


class Link:
    """A bottleneck of ``mbit`` with a base round trip; frames queue FIFO in front of it."""

    def __init__(self, mbit: float, rtt_ms: float) -> None:
        self.mbit, self.rtt_ms = mbit, rtt_ms
        self.free_at = 0.0

    def send(self, now: float, nbytes: int) -> float:
        """When the receipt of a frame sent at ``now`` comes back."""
        start = max(now, self.free_at)
        self.free_at = start + nbytes * 8 / (self.mbit * 1e6)
        return self.free_at + self.rtt_ms / 1000


def run(
    controller: RateController, link: Link, seconds: float, start: float, *, content_kbps: float = 1e9
) -> tuple[float, list[rate.Decision]]:
    """Stream for ``seconds``: each frame is what the target allows (or what the content needs, if
    less), sent while the window has room; receipts arrive when the link says. Returns the end
    time and the decisions made."""
    now, pending, decisions = start, [], []  # pending: (receipt time, rtt ms, bytes)
    end = start + seconds
    while now < end:
        for item in sorted(p for p in pending if p[0] <= now):
            controller.receipt(item[0], item[1], item[2])
            pending.remove(item)
        if (d := controller.update(now)) is not None:
            decisions.append(d)
        if len(pending) < controller.window_frames(FPS):
            nbytes = int(min(controller.kbps, content_kbps) * 1000 / 8 / FPS)
            back = link.send(now, nbytes)
            controller.sent(now, nbytes)
            pending.append((back, (back - now) * 1000, nbytes))
        now += 1 / FPS
    return now, decisions


def controller(start_kbps: float = 4000, max_kbps: float = 12000) -> RateController:
    return RateController(ladder(1280, 720, FPS), start_kbps=start_kbps, max_kbps=max_kbps, now=0.0)


def test_the_ladder_goes_down_in_picture_then_frame_rate_with_even_sizes() -> None:
    rungs = ladder(1920, 1080, 60)
    assert rungs == (Rung(1920, 1080, 60), Rung(1280, 720, 60), Rung(960, 540, 60), Rung(960, 540, 30))
    assert all(r.width % 2 == 0 and r.height % 2 == 0 for r in ladder(1366, 768, 60))
    assert rungs[1].min_kbps == pytest.approx(rate.MIN_BITS_PER_PIXEL * 1280 * 720 * 60 / 1000)


def test_a_link_with_room_lets_the_target_grow_to_the_ceiling_and_no_further() -> None:
    c = controller(start_kbps=2000, max_kbps=6000)
    _, decisions = run(c, Link(mbit=50, rtt_ms=20), seconds=15, start=0.0)
    assert c.kbps == pytest.approx(6000)
    assert {d.reason for d in decisions} >= {"probe"} and "overuse" not in {d.reason for d in decisions}
    assert c.rung == 0


def test_after_a_drop_from_25_to_5_mbit_the_target_lands_under_5_within_3_s() -> None:
    c = controller(start_kbps=12000, max_kbps=20000)
    link = Link(mbit=25, rtt_ms=20)
    now, _ = run(c, link, seconds=10, start=0.0)
    assert c.kbps > 12000  # it had grown into the fat link
    link.mbit = 5.0
    now, decisions = run(c, link, seconds=3, start=now)
    assert c.kbps < 5000, decisions
    overuse = [d for d in decisions if d.reason == "overuse"]
    assert overuse and "queueing" in overuse[0].detail and "delivered" in overuse[0].detail
    # and the queue it built drains: the round trip is back near the base within the next seconds
    now, _ = run(c, link, seconds=3, start=now)
    assert c.recent_rtt_ms(now) < 20 + 40


def test_flat_content_that_needs_little_does_not_push_the_target_up() -> None:
    """Growth only where it is proven: an encoder spending 600 of 4000 kbps probes nothing."""
    c = controller(start_kbps=4000)
    _, decisions = run(c, Link(mbit=100, rtt_ms=20), seconds=5, start=0.0, content_kbps=600)
    assert c.kbps == pytest.approx(4000)
    assert decisions[-1].reason == "app_limited"


def test_a_link_narrower_than_the_rung_needs_steps_the_picture_down_then_back_up() -> None:
    c = controller(start_kbps=4000)
    link = Link(mbit=0.5, rtt_ms=30)
    now, decisions = run(c, link, seconds=12, start=0.0)
    assert c.rung >= 1 and any(d.reason == "step_down" for d in decisions)
    down = next(d for d in decisions if d.reason == "step_down")
    assert "1280x720@60 needs" in down.detail
    link.mbit = 50.0
    _, decisions = run(c, link, seconds=40, start=now)
    assert c.rung == 0 and any(d.reason == "step_up" for d in decisions)


def test_one_slow_update_is_not_a_queue_and_the_first_second_is_not_judged() -> None:
    c = controller(start_kbps=3000)
    t = 0.0
    for _ in range(120):  # two seconds at a steady 20 ms
        t += 1 / FPS
        c.sent(t, 6000)
        c.receipt(t, 20.0, 6000)
        c.update(t)
    assert c.decision.reason != "overuse"
    for _ in range(12):  # 0.2 s of 80 ms receipts: one update's worth
        t += 1 / FPS
        c.sent(t, 6000)
        c.receipt(t, 80.0, 6000)
        c.update(t)
    assert c.decision.reason != "overuse" and c.kbps >= 3000

    fresh = controller(start_kbps=3000)
    for i in range(50):  # a page starting its decoder: slow receipts, all inside WARMUP_S
        now = i / FPS
        fresh.receipt(now, 200.0, 6000)
        fresh.update(now)
    assert fresh.kbps == 3000 and fresh.decision.reason == "start"


def test_the_window_is_a_round_trip_of_frames_plus_slack() -> None:
    c = controller()
    assert c.window_frames(60) == 3  # nothing measured yet: the slack alone
    t = 0.0
    for _ in range(60):
        t += 1 / FPS
        c.receipt(t, 100.0, 1000)
        c.update(t)
    assert c.window_frames(60) == 9  # (100 + 50) ms at 60 fps
