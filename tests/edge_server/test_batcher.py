"""The dynamic batcher on a real event loop and a real thread: batching, delays, deadlines,
bounded queue, drain."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from edge_server.batcher import DynamicBatcher
from shared.errors import DeadlineMissed, FrameError, Overloaded, ShuttingDown


class SlowDoubler:
    """Doubles numbers, taking `seconds` per call; records each batch it saw."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.batches: list[list[int]] = []
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        time.sleep(self.seconds)
        with self.lock:
            self.batches.append(list(items))
        return [2 * i for i in items]


@pytest.fixture
def executor():
    with ThreadPoolExecutor(1) as pool:
        yield pool


def make(run, executor, **kw) -> DynamicBatcher[int, int]:
    options = {"max_batch_size": 4, "max_queue_delay_s": 0.0, "max_pending": 64} | kw
    batcher: DynamicBatcher[int, int] = DynamicBatcher(run, executor, **options)
    batcher.start()
    return batcher


def test_every_frame_answered_once_and_batches_form_under_load(executor) -> None:
    async def main() -> None:
        run = SlowDoubler(0.02)
        batcher = make(run, executor)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        assert [out for out, _ in results] == [2 * i for i in range(20)]
        assert sorted(i for b in run.batches for i in b) == list(range(20))
        assert max(len(b) for b in run.batches) == 4  # batched, never above the maximum
        assert all(timing.batch_size == len(run.batches[0]) for _, timing in results[:1])
        await batcher.close()

    asyncio.run(main())


def test_zero_delay_never_waits_at_low_load(executor) -> None:
    async def main() -> None:
        run = SlowDoubler()
        reasons: list[str] = []
        batcher = make(run, executor, on_batch=lambda n, reason, s: reasons.append(reason))
        for i in range(5):
            _, timing = await batcher.submit(i)
            assert timing.batch_size == 1
            assert timing.queue_wait_s < 0.05
        assert reasons == ["immediate"] * 5
        await batcher.close()

    asyncio.run(main())


def test_queue_delay_bounds_the_wait_and_fills_batches(executor) -> None:
    async def main() -> None:
        run = SlowDoubler()
        reasons: list[str] = []
        batcher = make(
            run,
            executor,
            max_queue_delay_s=0.05,
            on_batch=lambda n, reason, s: reasons.append(reason),
        )
        _, timing = await batcher.submit(1)  # alone: released by the delay, not before
        assert 0.04 <= timing.queue_wait_s < 0.5
        results = await asyncio.gather(*(batcher.submit(i) for i in range(4)))
        assert {t.batch_size for _, t in results} == {4}
        assert reasons == ["delay", "full"]
        await batcher.close()

    asyncio.run(main())


def test_expired_and_hopeless_deadlines_are_not_computed(executor) -> None:
    async def main() -> None:
        run = SlowDoubler(0.05)
        batcher = make(run, executor, max_batch_size=1)
        with pytest.raises(DeadlineMissed, match="before queueing"):
            await batcher.submit(1, deadline=time.monotonic() - 0.001)
        await batcher.submit(2)  # teaches the batcher that a batch takes ~50 ms
        blocker = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0.005)
        with pytest.raises(DeadlineMissed, match="not computed"):
            await batcher.submit(4, deadline=time.monotonic() + 0.02)
        await blocker
        assert [b for b in run.batches] == [[2], [3]]  # 1 and 4 never reached the tail
        await batcher.close()

    asyncio.run(main())


def test_bounded_queue_refuses_with_a_retry_hint_while_admitted_frames_finish(executor) -> None:
    async def main() -> None:
        run = SlowDoubler(0.02)
        batcher = make(run, executor, max_batch_size=2, max_pending=3)
        admitted = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0)  # all three queued (one may already be computing)
        refused = 0
        for i in range(3, 10):
            try:
                await asyncio.wait_for(batcher.submit(i), 0.001)
            except Overloaded as exc:
                refused += 1
                assert exc.retry_after_ms >= 10
            except TimeoutError:
                pass
        assert refused >= 1
        assert [r[0] for r in await asyncio.gather(*admitted)] == [0, 2, 4]
        await batcher.close()

    asyncio.run(main())


def test_a_failing_batch_fails_its_frames_and_the_worker_goes_on(executor) -> None:
    async def main() -> None:
        calls = []

        def flaky(items: list[int]) -> list[int]:
            calls.append(items)
            if len(calls) == 1:
                raise ValueError("boom")
            return items

        batcher = make(flaky, executor)
        with pytest.raises(FrameError, match="boom"):
            await batcher.submit(1)
        assert (await batcher.submit(2))[0] == 2
        await batcher.close()

    asyncio.run(main())


def test_close_drains_queued_frames_then_refuses(executor) -> None:
    async def main() -> None:
        run = SlowDoubler(0.01)
        batcher = make(run, executor, max_batch_size=1)
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.close()
        assert [f.result()[0] for f in queued] == [0, 2, 4, 6, 8]
        with pytest.raises(ShuttingDown):
            await batcher.submit(9)

    asyncio.run(main())
