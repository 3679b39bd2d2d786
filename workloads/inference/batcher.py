"""Dynamic batching over items: requests queue their inputs, workers run them in batches.

A request of 10 inputs and 10 requests of one input each queue the same 10 items, so the model
sees the same batches either way. One worker at a time *collects* a batch (an asyncio lock):
it takes up to ``max_batch_size`` items, and when fewer are queued it waits until the oldest
queued item is ``max_wait_s`` old or the batch is full, whichever comes first. Right after a
batch ends it also waits up to ``max_wait_s`` from that end for the callers just answered to
come back: without the wait a closed loop of 32 callers settles into batches of 16 and 16
instead of 32 (measured at 64 callers on two replicas: mean batch 16 -> 25, ~7% less replica
CPU per sentence). It stops waiting as soon as as many items have arrived since that batch
ended as it held (its callers are back: more waiting would only add latency), so one caller
sending request after request is never held, whatever ``max_wait_s``. It then runs the
model in its own thread (``run`` releases the GIL inside torch) while the next worker collects,
so ``workers`` batches can be in flight at once and the event loop stays free for HTTP. When
other workers are idle, the queue is shared out between them (16 items, 2 idle workers: two
batches of 8), so a light load still uses every worker.

With ``size_of`` (the token count, for a text model) a batch is the oldest queued item plus
the queued items nearest to it in size, looked for among the next ``SIZE_WINDOW`` batches' worth:
a batch is padded to its longest item, so similar lengths waste less compute. Under light load
(the queue holds one batch or less) this is plain FIFO.

Back-pressure: a request is refused with QueueFullError (HTTP 429) when its items do not fit in
``max_queue`` minus what is already queued; a request bigger than the whole queue still gets in
when the queue is empty, so no valid request is refused forever. An exception from ``run``
fails exactly the requests that had items in that batch; the workers go on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from workloads.inference.errors import NotReadyError, QueueFullError

P = TypeVar("P")
R = TypeVar("R")

#: Called after each batch with (items in the batch, seconds the model took).
BatchHook = Callable[[int, float], None]


@dataclass(eq=False)
class _Request:
    """One caller's share of the queue: its results fill in as its items' batches finish."""

    future: asyncio.Future[list[Any]]
    results: list[Any]
    remaining: int


@dataclass(eq=False)
class _Item:
    payload: Any
    request: _Request
    index: int
    queued_at: float = field(default_factory=time.monotonic)


class Batcher(Generic[P, R]):
    #: With ``size_of``, a batch is picked from the next this-many batches' worth of items.
    SIZE_WINDOW = 4

    def __init__(
        self,
        run: Callable[[list[P]], Sequence[R]],
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.005,
        max_queue: int = 1024,
        workers: int = 1,
        on_batch: BatchHook | None = None,
        size_of: Callable[[P], int] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or workers < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size, max_queue and workers must be >= 1, max_wait_s >= 0")
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.workers = workers
        self._on_batch = on_batch
        self._size_of = size_of
        self._items: deque[_Item] = deque()
        self._wake = asyncio.Event()  # set when the queue becomes non-empty or fills a batch
        self._collect_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self.in_flight = 0  # items handed to the model and not yet answered
        self._last_done = -float("inf")  # monotonic time the last batch was answered
        self._answered = 0  # items in the batch answered last
        self._back = 0  # items queued since then: its callers coming back
        self._running = 0  # workers inside the model right now

    @property
    def depth(self) -> int:
        """Items waiting in the queue (not yet in a batch)."""
        return len(self._items)

    def start(self) -> None:
        """Start the workers on the running loop."""
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="model")
        self._tasks = [asyncio.create_task(self._worker(), name=f"batcher-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        """Refuse new work, finish what is queued, then stop the workers and their threads."""
        self._closed = True
        self._wake.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, payloads: Sequence[P]) -> list[R]:
        """Queue ``payloads`` as items and wait for one result each, in order."""
        if self._closed:
            raise NotReadyError("the server is shutting down; retry on another replica")
        count = len(payloads)
        if count == 0:
            return []
        queued = len(self._items)
        if queued and queued + count > self.max_queue:
            raise QueueFullError(
                f"the queue holds {queued} items and takes at most {self.max_queue}; this request "
                f"adds {count}. Retry after a short wait, or send to another replica"
            )
        request = _Request(asyncio.get_running_loop().create_future(), [None] * count, count)
        self._items.extend(_Item(payload, request, index) for index, payload in enumerate(payloads))
        self._back += count
        if queued == 0 or len(self._items) >= self.max_batch_size or self._callers_back():
            self._wake.set()
        return await request.future

    # -- workers -------------------------------------------------------------------------------
    async def _collect(self) -> list[_Item] | None:
        """The next batch, or None once closed and drained. Holds the collect lock."""
        while True:
            while not self._items:
                if self._closed:
                    return None
                self._wake.clear()
                await self._wake.wait()
            # Wait for the batch to fill, but never past the oldest item's max wait, or past
            # max wait after the last batch was answered (its callers are coming back), and
            # not at all once they are back.
            while len(self._items) < self.max_batch_size and not self._closed and not self._callers_back():
                since = max(self._items[0].queued_at, self._last_done)
                left = since + self.max_wait_s - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
            # Share the queue out between the idle workers: 16 items and 2 idle workers make two
            # batches of 8 side by side rather than one of 16 beside an idle worker.
            idle = max(1, self.workers - self._running)
            take = min(self.max_batch_size, -(-len(self._items) // idle))
            batch = [item for item in self._pick(take) if not item.request.future.done()]
            if batch:  # (done: its caller went away, or an earlier batch failed it)
                return batch  # else every item was skipped: collect again

    def _callers_back(self) -> bool:
        """As many items have been queued since the last batch was answered as it held."""
        return 0 < self._answered <= self._back

    def _pick(self, take: int) -> list[_Item]:
        """Remove and return ``take`` items: FIFO, or with ``size_of`` the oldest item plus the
        queued items (among the next few batches' worth) closest to it in size, so a batch pads
        less. The oldest item always goes, so every item is served once it is the oldest."""
        items = self._items
        if self._size_of is None or len(items) <= take:
            return [items.popleft() for _ in range(min(take, len(items)))]
        window = list(itertools.islice(items, 0, take * self.SIZE_WINDOW))
        anchor = self._size_of(window[0].payload)
        ranked = sorted(range(1, len(window)), key=lambda i: abs(self._size_of(window[i].payload) - anchor))
        chosen = {0, *ranked[: take - 1]}
        picked = [window[i] for i in sorted(chosen)]
        rest = [item for i, item in enumerate(window) if i not in chosen]
        for _ in range(len(window)):
            items.popleft()
        items.extendleft(reversed(rest))
        return picked

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            async with self._collect_lock:
                batch = await self._collect()
            if batch is None:
                return
            self.in_flight += len(batch)
            self._running += 1
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._run, [i.payload for i in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the model returned {len(results)} results for {len(batch)} inputs")
            except Exception as exc:  # fail this batch's requests, keep serving
                for item in batch:
                    if not item.request.future.done():
                        item.request.future.set_exception(exc)
            else:
                for item, result in zip(batch, results):
                    request = item.request
                    if request.future.done():
                        continue
                    request.results[item.index] = result
                    request.remaining -= 1
                    if request.remaining == 0:
                        request.future.set_result(request.results)
            finally:
                self.in_flight -= len(batch)
                self._running -= 1
                self._last_done = time.monotonic()
                self._answered, self._back = len(batch), 0
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)
