"""Splitting a batch by length: every input once, and the split is the cheapest there is."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from workloads.inference.padding import split_by_length


def cost(lengths: list[int], groups: list[list[int]], call_cost: float) -> float:
    return sum(call_cost + len(g) * max(lengths[i] for i in g) for g in groups)


def brute_force(lengths: list[int], call_cost: float) -> float:
    """The cheapest split of the sorted inputs into consecutive runs, by trying every cut set."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = math.inf
    for cuts in itertools.product((False, True), repeat=len(order) - 1):
        groups, start = [], 0
        for k, cut in enumerate(cuts, start=1):
            if cut:
                groups.append(order[start:k])
                start = k
        groups.append(order[start:])
        best = min(best, cost(lengths, groups, call_cost))
    return best


@given(st.lists(st.integers(1, 64), min_size=1, max_size=10), st.floats(0, 100))
def test_every_input_once_and_the_cheapest_split(lengths: list[int], call_cost: float) -> None:
    groups = split_by_length(lengths, call_cost)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(g for g in groups)
    assert math.isclose(cost(lengths, groups, call_cost), brute_force(lengths, call_cost), rel_tol=1e-9)


def test_mixed_lengths_split_into_a_short_and_a_long_call() -> None:
    lengths = [30, 8, 9, 29, 8, 30, 10, 28]
    groups = split_by_length(lengths, call_cost=16)
    assert [[lengths[i] for i in g] for g in groups] == [[8, 8, 9, 10], [28, 29, 30, 30]]


def test_equal_lengths_or_an_infinite_call_cost_stay_one_call() -> None:
    assert split_by_length([12] * 6, call_cost=16) == [list(range(6))]
    assert len(split_by_length([5, 50, 5, 50], call_cost=math.inf)) == 1
    assert split_by_length([], call_cost=16) == []
