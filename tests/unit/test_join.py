"""A joined machine's side of the network, without a network: its lease on the head."""

from __future__ import annotations

from runner.join import HeadLease


def test_a_joined_machine_stops_its_replicas_once_its_head_is_silent_for_the_lease() -> None:
    lease = HeadLease(now=100.0, lease_s=5.0)
    assert not lease.observe(False, 103.0)  # a blip: still within the lease
    assert not lease.observe(True, 104.0)  # reached again: the lease starts over
    assert not lease.observe(False, 108.9)
    assert lease.observe(False, 109.0)  # 5 s since the head last answered: stop now ...
    assert not lease.observe(False, 120.0)  # ... once
    assert not lease.observe(True, 121.0) and lease.observe(False, 126.5)  # back, then cut off again
