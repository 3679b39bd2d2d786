"""The dynamic batcher on its own: grouping, max wait, back-pressure, failure isolation, drain.

The model here is a plain function run in the batcher's worker thread; a threading.Event holds
it where a test needs a full queue, so nothing depends on timing except the max-wait bound.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from workloads.inference.batcher import Batcher
from workloads.inference.errors import NotReadyError, QueueFullError


class Recorder:
    """A model that doubles numbers and records each batch it is given."""

    def __init__(self, gate: threading.Event | None = None, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate
        self.fail_on = fail_on
        self.entered = threading.Event()

    def __call__(self, batch: Sequence[int]) -> list[int]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        self.batches.append(list(batch))
        if self.fail_on is not None and self.fail_on in batch:
            raise RuntimeError(f"model failed on {self.fail_on}")
        return [x * 2 for x in batch]


def run(coro_fn: Callable[[], object]) -> object:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def test_concurrent_requests_are_grouped_and_answered_in_order() -> None:
    model = Recorder()

    async def main() -> list[list[int]]:
        batcher = Batcher(model, max_batch_size=8, max_wait_s=0.5, max_queue=100)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit([i]) for i in range(8)))
        await batcher.stop()
        return results

    results = run(main)
    assert results == [[i * 2] for i in range(8)]
    assert model.batches == [list(range(8))]  # a full batch goes at once, not after 0.5 s


def test_one_request_of_ten_and_ten_requests_of_one_batch_the_same() -> None:
    async def batches(split: bool) -> list[list[int]]:
        model = Recorder()
        batcher = Batcher(model, max_batch_size=4, max_wait_s=0.2, max_queue=100)
        batcher.start()
        if split:
            out = await asyncio.gather(*(batcher.submit([i]) for i in range(10)))
            assert [r[0] for r in out] == [i * 2 for i in range(10)]
        else:
            assert await batcher.submit(list(range(10))) == [i * 2 for i in range(10)]
        await batcher.stop()
        return [len(b) for b in model.batches]

    assert asyncio.run(batches(False)) == asyncio.run(batches(True)) == [4, 4, 2]


def test_a_lone_item_waits_at_most_max_wait() -> None:
    model = Recorder()

    async def main() -> float:
        batcher = Batcher(model, max_batch_size=32, max_wait_s=0.05, max_queue=100)
        batcher.start()
        started = time.perf_counter()
        assert await batcher.submit([3]) == [6]
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    elapsed = run(main)
    assert model.batches == [[3]]
    assert 0.045 <= elapsed < 2.0  # waited for company (the bound), then ran alone


def test_after_a_batch_its_callers_coming_back_are_waited_for_and_then_not_held() -> None:
    model = Recorder()

    async def settle() -> None:  # let the collector act on what is queued, if it is going to
        for _ in range(20):
            await asyncio.sleep(0)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=8, max_wait_s=0.01, max_queue=100)
        batcher.start()
        assert await asyncio.gather(*(batcher.submit([i]) for i in range(3))) == [[0], [2], [4]]
        batcher.max_wait_s = 3600.0  # from here, any wait for company would outlast the test
        first = [asyncio.create_task(batcher.submit([i])) for i in (10, 11)]
        await settle()
        assert batcher.depth == 2, "two of the three callers back: the batch waits for the third"
        last = asyncio.create_task(batcher.submit([12]))
        # All three are back: the batch goes now, far short of max wait and of a full batch.
        assert await asyncio.wait_for(asyncio.gather(*first, last), timeout=30) == [[20], [22], [24]]
        await batcher.stop()

    run(main)
    assert model.batches == [[0, 1, 2], [10, 11, 12]]


def test_full_queue_refuses_with_queue_full_and_recovers() -> None:
    gate = threading.Event()
    model = Recorder(gate=gate)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=2, max_wait_s=0, max_queue=3)
        batcher.start()
        first = asyncio.create_task(batcher.submit([1, 2]))  # taken by the worker, held by the gate
        await wait_until(model.entered.is_set)
        queued = asyncio.create_task(batcher.submit([3, 4, 5]))  # fills the queue (3 of 3)
        await wait_until(lambda: batcher.depth == 3)
        with pytest.raises(QueueFullError, match="the queue holds 3 items and takes at most 3"):
            await batcher.submit([6])
        gate.set()
        assert await first == [2, 4]
        assert await queued == [6, 8, 10]
        assert await batcher.submit([7]) == [14]  # room again
        await batcher.stop()

    run(main)


def test_a_request_larger_than_the_queue_gets_in_when_the_queue_is_empty() -> None:
    model = Recorder()

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=4, max_wait_s=0, max_queue=2)
        batcher.start()
        assert await batcher.submit(list(range(6))) == [i * 2 for i in range(6)]
        await batcher.stop()

    run(main)


def test_a_failing_batch_fails_only_its_own_requests() -> None:
    gate = threading.Event()
    model = Recorder(gate=gate, fail_on=13)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=2, max_wait_s=0, max_queue=100)
        batcher.start()
        before = asyncio.create_task(batcher.submit([1, 2]))  # batch 1: held by the gate
        await wait_until(model.entered.is_set)
        doomed = [asyncio.create_task(batcher.submit([x])) for x in (13, 5)]  # batch 2 fails
        after = asyncio.create_task(batcher.submit([7, 8]))  # batch 3
        await wait_until(lambda: batcher.depth == 4)
        gate.set()
        assert await before == [2, 4]
        for task in doomed:
            with pytest.raises(RuntimeError, match="model failed on 13"):
                await task
        assert await after == [14, 16]
        assert await batcher.submit([9]) == [18]  # the workers live on
        await batcher.stop()

    run(main)
    assert model.batches == [[1, 2], [13, 5], [7, 8], [9]]


def test_two_workers_run_batches_side_by_side() -> None:
    both_in = threading.Barrier(2, timeout=5)

    def model(batch: Sequence[int]) -> list[int]:
        both_in.wait()  # only returns when a second batch is running at the same time
        return list(batch)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=1, max_wait_s=0, max_queue=10, workers=2)
        batcher.start()
        assert await asyncio.gather(batcher.submit([1]), batcher.submit([2])) == [[1], [2]]
        await batcher.stop()

    run(main)


def test_idle_workers_share_the_queue() -> None:
    sizes: list[int] = []
    both_in = threading.Barrier(2, timeout=5)

    def model(batch: Sequence[int]) -> list[int]:
        sizes.append(len(batch))
        both_in.wait()  # the two halves must run at the same time
        return list(batch)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=32, max_wait_s=0.01, max_queue=100, workers=2)
        batcher.start()
        assert await batcher.submit(list(range(16))) == list(range(16))
        await batcher.stop()

    run(main)
    assert sizes == [8, 8]


def test_with_size_of_a_batch_groups_similar_sizes_and_always_takes_the_oldest() -> None:
    gate = threading.Event()
    model = Recorder(gate=gate)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=3, max_wait_s=0, max_queue=100, size_of=abs)
        batcher.start()
        first = asyncio.create_task(batcher.submit([1]))
        await wait_until(model.entered.is_set)
        sizes = [20, 5, 21, 6, 22, 5, 40]
        pending = [asyncio.create_task(batcher.submit([x])) for x in sizes]
        await wait_until(lambda: batcher.depth == len(sizes))
        gate.set()
        assert await first == [2]
        assert [(await p)[0] for p in pending] == [x * 2 for x in sizes]  # answers stay with their requests
        await batcher.stop()

    run(main)
    # The oldest (20) with its nearest (21, 22); then the oldest left (5) with 6 and 5; then 40.
    assert model.batches == [[1], [20, 21, 22], [5, 6, 5], [40]]


def test_stop_drains_queued_work_then_refuses_new_work() -> None:
    gate = threading.Event()
    model = Recorder(gate=gate)

    async def main() -> None:
        batcher = Batcher(model, max_batch_size=1, max_wait_s=0, max_queue=10)
        batcher.start()
        pending = [asyncio.create_task(batcher.submit([i])) for i in range(3)]
        await wait_until(model.entered.is_set)
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0)
        with pytest.raises(NotReadyError, match="shutting down"):
            await batcher.submit([9])
        gate.set()
        await stopping
        assert [await p for p in pending] == [[0], [2], [4]]

    run(main)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        Batcher(lambda b: b, max_batch_size=0)
