"""MicroBatcher: bounded batches, per-item results, errors to every caller, loop never blocked."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agents.models.batching import MicroBatcher
from agents.models.exceptions import ModelError


class RecordingFn:
    """A blocking batch function that doubles items, sleeps, and records its batches."""

    def __init__(self, sleep_s: float = 0.0, fail_on: int | None = None) -> None:
        self.sleep_s = sleep_s
        self.fail_on = fail_on
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError(f"boom on {self.fail_on}")
        return [2 * x for x in items]


def test_concurrent_submits_are_batched_within_max_batch_with_correct_results() -> None:
    fn = RecordingFn(sleep_s=0.01)

    async def main() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=32, max_wait_s=0.05)
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(100)))
        finally:
            await batcher.close()

    results = asyncio.run(main())
    assert results == [2 * i for i in range(100)]
    assert all(1 <= len(batch) <= 32 for batch in fn.batches)
    assert sorted(x for batch in fn.batches for x in batch) == list(range(100))
    assert len(fn.batches) == 4  # 32 + 32 + 32 + 4: concurrent items really are grouped
    assert fn.threads and not any(name == "MainThread" for name in fn.threads)


def test_single_submit_returns_after_about_max_wait() -> None:
    fn = RecordingFn()

    async def main() -> tuple[int, float]:
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=32, max_wait_s=0.1)
        started = time.perf_counter()
        result = await batcher.submit(21)
        elapsed = time.perf_counter() - started
        await batcher.close()
        return result, elapsed

    result, elapsed = asyncio.run(main())
    assert result == 42
    assert 0.09 <= elapsed < 0.5
    assert fn.batches == [[21]]


def test_full_batch_goes_without_waiting_for_max_wait() -> None:
    fn = RecordingFn()

    async def main() -> float:
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=4, max_wait_s=5.0)
        started = time.perf_counter()
        await batcher.submit_many(range(4))
        elapsed = time.perf_counter() - started
        await batcher.close()
        return elapsed

    assert asyncio.run(main()) < 1.0


def test_event_loop_keeps_running_while_fn_sleeps() -> None:
    fn = RecordingFn(sleep_s=0.3)

    async def main() -> int:
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=8, max_wait_s=0.0)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await batcher.submit(1)
        task.cancel()
        await batcher.close()
        return ticks

    assert asyncio.run(main()) >= 10


def test_a_batch_error_reaches_every_caller_of_that_batch_only() -> None:
    fn = RecordingFn(fail_on=3)

    async def main() -> tuple[list[int | BaseException], list[int]]:
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=4, max_wait_s=0.05)
        failed = await asyncio.gather(
            *(batcher.submit(i) for i in range(4)), return_exceptions=True
        )
        ok = await batcher.submit_many([10, 11])
        await batcher.close()
        return failed, ok

    failed, ok = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "boom on 3" in str(r) for r in failed)
    assert ok == [20, 22]
    assert list(MicroBatcher(fn).last_batch_sizes) == []


def test_submit_many_returns_results_in_order_and_records_batch_sizes() -> None:
    fn = RecordingFn()

    async def main() -> tuple[list[int], list[int]]:
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=10, max_wait_s=0.01)
        results = await batcher.submit_many(range(25))
        await batcher.close()
        return results, list(batcher.last_batch_sizes)

    results, sizes = asyncio.run(main())
    assert results == [2 * i for i in range(25)]
    assert sizes == [10, 10, 5]


def test_close_finishes_submitted_items_and_refuses_new_ones() -> None:
    fn = RecordingFn(sleep_s=0.05)

    async def main() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=2, max_wait_s=0.01)
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)  # let the submits enqueue
        await batcher.close()
        with pytest.raises(ModelError, match="closed") as raised:
            await batcher.submit(99)
        assert raised.value.retriable
        return [await p for p in pending]

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]


def test_a_cancelled_caller_is_skipped_and_others_still_get_results() -> None:
    fn = RecordingFn()

    async def main() -> int:
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_batch=8, max_wait_s=0.05)
        doomed = asyncio.ensure_future(batcher.submit(1))
        kept = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0)
        doomed.cancel()
        result = await kept
        await batcher.close()
        return result

    assert asyncio.run(main()) == 4
    assert fn.batches == [[2]]
