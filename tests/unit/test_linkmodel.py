"""The emulated WAN's link model (harness/linkmodel.py): pure timing, checked with a fixed clock."""

from __future__ import annotations

import random

import pytest

from harness.linkmodel import QUEUE_S, Access, arrival

NO_JITTER = lambda lo, hi: 0.0  # noqa: E731
NEVER = lambda: 0.99  # noqa: E731  (chance() >= every loss below 99 %)


def test_a_frame_arrives_after_the_core_and_both_access_delays() -> None:
    src, dst = Access(delay_ms=10), Access(delay_ms=5)
    due = arrival(100.0, 1500, src, dst, 0.115, 0.0, NO_JITTER, NEVER)
    assert due == pytest.approx(100.0 + 0.115 + 0.015)


def test_a_rate_serialises_frames_one_after_another_on_each_access_link() -> None:
    src, dst = Access(rate_mbit=12), Access()
    dues = [arrival(0.0, 1500, src, dst, 0.0, 0.0, NO_JITTER, NEVER) for _ in range(10)]
    assert dues == pytest.approx([(i + 1) * 0.001 for i in range(10)])  # 1500 B at 12 Mbit/s = 1 ms each


def test_a_full_queue_drops_at_the_tail_and_frees_up_as_it_drains() -> None:
    src = Access(rate_mbit=1.2)  # 10 ms a frame: the queue holds QUEUE_S of them
    dues = [arrival(0.0, 1500, src, Access(), 0.0, 0.0, NO_JITTER, NEVER) for _ in range(40)]
    kept = [d for d in dues if d is not None]
    assert round(QUEUE_S / 0.01) <= len(kept) <= round(QUEUE_S / 0.01) + 1 and dues[-1] is None
    assert arrival(1.0, 1500, src, Access(), 0.0, 0.0, NO_JITTER, NEVER) is not None


def test_jitter_never_reorders_a_pair() -> None:
    rng = random.Random(7)
    src, dst = Access(jitter_ms=20), Access()
    last, dues = 0.0, []
    for i in range(500):
        due = arrival(i * 0.001, 100, src, dst, 0.05, last, rng.uniform, rng.random)
        assert due is not None
        dues.append(due)
        last = due
    assert dues == sorted(dues)
    assert max(dues[i] - i * 0.001 for i in range(500)) > 0.06  # the jitter is really there


def test_loss_on_either_port_drops_about_its_share() -> None:
    rng = random.Random(3)
    src, dst = Access(loss_pct=10), Access(loss_pct=10)
    lost = sum(arrival(0.0, 100, src, dst, 0.0, 0.0, rng.uniform, rng.random) is None for _ in range(10_000))
    assert 1700 < lost < 2100  # 1 - 0.9 * 0.9 = 19 %


def test_a_port_that_is_down_passes_nothing() -> None:
    assert arrival(0.0, 100, Access(up=False), Access(), 0.0, 0.0, NO_JITTER, NEVER) is None
    assert arrival(0.0, 100, Access(), Access(up=False), 0.0, 0.0, NO_JITTER, NEVER) is None


def test_address_resolution_pays_no_core_delay_and_no_loss() -> None:
    always = lambda: 0.0  # noqa: E731  (every lossy draw would drop)
    src, dst = Access(delay_ms=50, loss_pct=50), Access(loss_pct=50)
    assert arrival(1.0, 42, src, dst, 0.115, 0.0, NO_JITTER, always, first_hop=True) == pytest.approx(1.0)
    assert arrival(1.0, 42, src, dst, 0.115, 0.0, NO_JITTER, always) is None
