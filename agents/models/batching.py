"""Micro-batching of a blocking batch function, run in its own thread so the loop never waits."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from agents.models.exceptions import ModelError, ModelMismatchError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class BatchResults(Protocol[R_co]):
    """What a batch function returns: one result per item, in order (a list, or an ndarray)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[R_co]: ...


@dataclass(frozen=True)
class _Pending(Generic[T, R]):
    """One submitted item, the future its caller awaits, and when it arrived (loop time)."""

    item: T
    future: asyncio.Future[R]
    arrived: float


class MicroBatcher(Generic[T, R]):
    """Groups concurrent submits into batches of up to ``max_batch``, or ``max_wait_s`` after
    the first item, and runs ``fn`` on each batch in a single worker thread owned by the batcher.

    One batch runs at a time (a model is not faster run twice at once, and this gives
    backpressure); items that arrive meanwhile form the next batch. A batcher belongs to
    the event loop of its first submit.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], BatchResults[R]],
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.01,
        name: str = "micro-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.name = name
        self.last_batch_sizes: deque[int] = deque(maxlen=100)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        # None is queued by close(): items before it still run, none come after it.
        self._queue: asyncio.Queue[_Pending[T, R] | None] = asyncio.Queue()
        self._inflight: list[_Pending[T, R]] = []
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T) -> R:
        """Return ``fn``'s result for ``item``; an exception of its batch is raised here."""
        return await self._enqueue(item)

    async def submit_many(self, items: Iterable[T]) -> list[R]:
        """Return the results for ``items`` in order; they are queued together so they batch."""
        futures = [self._enqueue(item) for item in items]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    async def close(self) -> None:
        """Finish the items already submitted, then stop the worker; later submits fail."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None and not self._worker.done():
            self._queue.put_nowait(None)
            await asyncio.gather(self._worker, return_exceptions=True)
        # wait=False: if the worker was cancelled mid-batch, its thread finishes on its own.
        self._executor.shutdown(wait=False)

    def _enqueue(self, item: T) -> asyncio.Future[R]:
        if self._closed:
            raise ModelError(f"batcher {self.name!r} is closed; submit again after restart")
        loop = asyncio.get_running_loop()
        # A worker cancelled from outside (loop shutdown) is replaced, so no caller hangs.
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(), name=f"{self.name}-worker")
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put_nowait(_Pending(item, future, loop.time()))
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            closing = False
            while not closing:
                first = await self._queue.get()
                if first is None:
                    return
                batch = [first]
                # The wait counts from the first item's arrival: items that queued up
                # during the previous batch go at once.
                deadline = first.arrived + self.max_wait_s
                while len(batch) < self.max_batch:
                    try:
                        entry = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        try:
                            entry = await asyncio.wait_for(self._queue.get(), remaining)
                        except TimeoutError:
                            break
                    if entry is None:
                        closing = True
                        break
                    batch.append(entry)
                self._inflight = batch
                await self._run_batch(loop, batch)
                self._inflight = []
        finally:
            self._fail_waiting()

    async def _run_batch(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[T, R]]
    ) -> None:
        live = [entry for entry in batch if not entry.future.done()]  # skip cancelled callers
        if not live:
            return
        items = [entry.item for entry in live]
        self.last_batch_sizes.append(len(items))
        try:
            results = await loop.run_in_executor(self._executor, self._fn, items)
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            logger.warning("batcher %s: batch of %s failed: %r", self.name, len(items), exc)
            self._settle(live, exc)
            return
        if len(results) != len(items):
            self._settle(
                live,
                ModelMismatchError(
                    f"batcher {self.name!r}: fn returned {len(results)} results "
                    f"for a batch of {len(items)}"
                ),
            )
            return
        for entry, result in zip(live, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)

    @staticmethod
    def _settle(entries: list[_Pending[T, R]], exc: BaseException) -> None:
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(exc)

    def _fail_waiting(self) -> None:
        """Fail what the worker will never run (it was cancelled), so no caller hangs."""
        waiting = list(self._inflight)
        self._inflight = []
        while not self._queue.empty():
            entry = self._queue.get_nowait()
            if entry is not None:
                waiting.append(entry)
        self._settle(waiting, ModelError(f"batcher {self.name!r} stopped before this item ran"))
