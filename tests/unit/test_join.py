"""A joined machine's side of the network, without a network: its lease on the head."""

from __future__ import annotations

from runner.join import START_ATTEMPTS, START_GRACE_S, HeadLease, start_again_in


def test_a_joined_machine_stops_its_replicas_once_its_head_is_silent_for_the_lease() -> None:
    lease = HeadLease(now=100.0, lease_s=5.0)
    assert not lease.observe(False, 103.0)  # a blip: still within the lease
    assert not lease.observe(True, 104.0)  # reached again: the lease starts over
    assert not lease.observe(False, 108.9)
    assert lease.observe(False, 109.0)  # 5 s since the head last answered: stop now ...
    assert not lease.observe(False, 120.0)  # ... once
    assert not lease.observe(True, 121.0) and lease.observe(False, 126.5)  # back, then cut off again


def test_a_ray_node_declared_dead_as_it_starts_is_started_again_with_growing_waits_then_left() -> None:
    waits = [start_again_in("died", 10.0, attempt) for attempt in range(1, START_ATTEMPTS + 1)]
    assert all(w is not None for w in waits[:-1]) and waits[-1] is None  # a bounded number of tries
    assert waits[:-1] == sorted(waits[:-1]) and len(set(waits[:-1])) == len(waits) - 1  # each waits longer


def test_a_node_that_ran_and_was_cut_off_or_shut_down_or_stopped_leaves_at_once() -> None:
    assert start_again_in("died", START_GRACE_S + 1, 1) is None  # it ran: a cut link, not a slow start
    assert start_again_in("shut_down", 1.0, 1) is None  # offboarded: the head shut it down
    assert start_again_in("interrupted", 1.0, 1) is None  # its owner pressed Ctrl-C
