"""The image cache's rules (``runner.runtime.imagecache``), without an engine: which images go
past the budget, and how a pull's progress sums over its layers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.runtime.imagecache import CachedImage, PullProgress, evictions

MB = 1_000_000


def image(name: str, last_used: float, *, mb: int = 100, pulled: bool = True, in_use: bool = False) -> CachedImage:
    return CachedImage(
        id=name, size_bytes=mb * MB, unique_bytes=mb * MB, last_used=last_used, pulled=pulled, in_use=in_use
    )


def ids(plan: list[CachedImage]) -> list[str]:
    return [i.id for i in plan]


def test_within_budget_nothing_goes() -> None:
    images = [image("a", 1), image("b", 2)]
    assert evictions(images, total_bytes=200 * MB, budget_bytes=200 * MB) == []


def test_least_recently_used_goes_first_and_only_as_many_as_the_budget_needs() -> None:
    images = [image("new", 30), image("old", 10), image("mid", 20)]
    assert ids(evictions(images, total_bytes=300 * MB, budget_bytes=250 * MB)) == ["old"]
    assert ids(evictions(images, total_bytes=300 * MB, budget_bytes=150 * MB)) == ["old", "mid"]
    assert ids(evictions(images, total_bytes=300 * MB, budget_bytes=0)) == ["old", "mid", "new"]


def test_an_image_in_use_stays_even_when_it_is_the_oldest() -> None:
    images = [image("running", 1, in_use=True), image("idle", 5)]
    assert ids(evictions(images, total_bytes=200 * MB, budget_bytes=150 * MB)) == ["idle"]


def test_images_the_node_did_not_pull_are_never_evicted() -> None:
    images = [image("built-here", 1, pulled=False), image("pulled", 5)]
    assert ids(evictions(images, total_bytes=200 * MB, budget_bytes=0)) == ["pulled"]


def test_over_budget_with_nothing_evictable_evicts_nothing() -> None:
    images = [image("running", 1, in_use=True), image("built-here", 2, pulled=False)]
    assert evictions(images, total_bytes=10_000 * MB, budget_bytes=0) == []


def test_only_the_bytes_an_image_frees_count() -> None:
    """Two images sharing a base: removing one frees only its own layers, so both go."""
    shared = [
        CachedImage(id=n, size_bytes=500 * MB, unique_bytes=50 * MB, last_used=t, pulled=True, in_use=False)
        for n, t in (("a", 1), ("b", 2), ("c", 3))
    ]
    assert ids(evictions(shared, total_bytes=600 * MB, budget_bytes=520 * MB)) == ["a", "b"]


def test_a_negative_budget_is_a_budget_of_zero() -> None:
    assert ids(evictions([image("a", 1)], total_bytes=100 * MB, budget_bytes=-5)) == ["a"]


images_st = st.lists(
    st.builds(
        CachedImage,
        id=st.uuids().map(str),
        size_bytes=st.integers(0, 10**10),
        unique_bytes=st.integers(0, 10**10),
        last_used=st.floats(0, 2e9),
        pulled=st.booleans(),
        in_use=st.booleans(),
    ),
    max_size=20,
    unique_by=lambda i: i.id,
)


@given(images_st, st.integers(0, 10**11), st.integers(0, 10**11))
def test_the_plan_is_lru_ordered_evictable_and_minimal(images: list[CachedImage], total: int, budget: int) -> None:
    plan = evictions(images, total_bytes=total, budget_bytes=budget)
    assert all(i.pulled and not i.in_use for i in plan)
    assert [i.last_used for i in plan] == sorted(i.last_used for i in plan)
    evictable = sorted((i for i in images if i.pulled and not i.in_use), key=lambda i: (i.last_used, i.id))
    assert plan == evictable[: len(plan)]  # a prefix: nothing newer goes before something older
    # Minimal: without its last image the plan would not reach the budget.
    if plan:
        assert total - sum(i.unique_bytes for i in plan[:-1]) > budget
    # Enough: it reaches the budget, or it took everything it could.
    assert total - sum(i.unique_bytes for i in plan) <= budget or plan == evictable


# -- pull progress -------------------------------------------------------------------------------------
def test_progress_sums_downloading_layers_and_counts_finished_ones_whole() -> None:
    p = PullProgress()
    events = [
        {"status": "Pulling from runner/smoke", "id": "latest"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "l1"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "l2"},
        {"status": "Already exists", "progressDetail": {}, "id": "l0"},
        {"status": "Waiting", "progressDetail": {}, "id": "l2"},
        {"status": "Downloading", "progressDetail": {"current": 100, "total": 1000}, "id": "l1"},
    ]
    for e in events:
        p.feed(e)
    assert p.bytes == (100, 1000)  # l2 has not told its size yet; l0 is not fetched at all
    p.feed({"status": "Downloading", "progressDetail": {"current": 50, "total": 400}, "id": "l2"})
    assert p.bytes == (150, 1400)
    p.feed({"status": "Download complete", "progressDetail": {}, "id": "l1"})
    p.feed({"status": "Extracting", "progressDetail": {"current": 10, "total": 1000}, "id": "l1"})
    assert p.bytes == (1050, 1400)  # extracting is the engine's work, not fetching
    p.feed({"status": "Downloading", "progressDetail": {"current": 400, "total": 400}, "id": "l2"})
    p.feed({"status": "Pull complete", "progressDetail": {}, "id": "l2"})
    p.feed({"status": "Digest: sha256:abc"})
    p.feed({"status": "Status: Downloaded newer image for runner/smoke:latest"})
    assert p.bytes == (1400, 1400)


@pytest.mark.parametrize("current", [5000, -3])
def test_progress_never_passes_the_total_nor_goes_back(current: int) -> None:
    p = PullProgress()
    p.feed({"status": "Downloading", "progressDetail": {"current": 300, "total": 1000}, "id": "l1"})
    p.feed({"status": "Downloading", "progressDetail": {"current": current, "total": 1000}, "id": "l1"})
    done, total = p.bytes
    assert total == 1000 and 300 <= done <= 1000
