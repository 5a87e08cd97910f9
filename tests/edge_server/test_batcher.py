"""The dynamic batcher on a real event loop and a real thread: batching, delays, deadlines,
bounded queue, drain."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
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


class Scripted:
    """Doubles numbers; each batch takes the next scripted duration (then `seconds`)."""

    def __init__(self, seconds: float, script: list[float] | None = None) -> None:
        self.seconds = seconds
        self.script = list(script or [])
        self.batches: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int]:
        time.sleep(self.script.pop(0) if self.script else self.seconds)
        self.batches.append(list(items))
        return [2 * i for i in items]


def test_one_slow_outlier_does_not_poison_the_deadline_estimate(executor) -> None:
    async def main() -> None:
        run = Scripted(0.01, script=[0.01, 0.01, 0.5])  # the third batch: a 50x outlier
        batcher = make(run, executor, max_batch_size=1, probe_after_s=60)
        for i in range(3):
            await batcher.submit(i)
        # Before: the estimate after the outlier (a moving average) refused 200 ms deadlines.
        for i in range(3, 8):
            out, _ = await batcher.submit(i, deadline=time.monotonic() + 0.2)
            assert out == 2 * i
        await batcher.close()

    asyncio.run(main())


def test_a_poisoned_estimate_recovers_through_a_probe(executor) -> None:
    async def main() -> None:
        run = Scripted(0.005, script=[0.3, 0.3, 0.3])  # three slow batches: the median is slow
        batcher = make(run, executor, max_batch_size=1, probe_after_s=0.05)
        for i in range(3):
            await batcher.submit(i)
        with pytest.raises(DeadlineMissed, match="not decoded"):
            await batcher.submit(10, deadline=time.monotonic() + 0.1)
        await asyncio.sleep(0.06)  # stale now: the next doomed-looking frame goes as a probe
        answered = 0
        for i in range(20, 40):
            try:
                await batcher.submit(i, deadline=time.monotonic() + 0.1)
                answered += 1
            except DeadlineMissed:
                await asyncio.sleep(0.06)
        assert answered >= 10  # the fast batches taught it; refusals stopped
        await batcher.close()

    asyncio.run(main())


def test_refused_before_preparing_when_the_deadline_cannot_be_made(executor) -> None:
    async def main() -> None:
        run = Scripted(0.05)
        batcher = make(run, executor, max_batch_size=1, probe_after_s=60)
        await batcher.submit(1)
        prepared = []

        async def prepare() -> int:
            prepared.append(1)
            return 2

        for _ in range(20):
            with pytest.raises(DeadlineMissed):
                await batcher.admit(prepare, time.monotonic() + 0.01)
        with pytest.raises(DeadlineMissed, match="before queueing"):
            await batcher.admit(prepare, time.monotonic() - 1)
        assert prepared == []  # nothing decoded for a frame that could not make it
        await batcher.close()

    asyncio.run(main())


def test_clients_are_served_round_robin_and_the_heaviest_is_shed_first(executor) -> None:
    async def main() -> None:
        run = Scripted(0.02)
        batcher = make(run, executor, max_batch_size=1, max_pending=6)
        greedy = [asyncio.ensure_future(batcher.submit(i, client="greedy")) for i in range(6)]
        await asyncio.sleep(0)
        honest = [asyncio.ensure_future(batcher.submit(100 + i, client="honest")) for i in range(3)]
        results = await asyncio.gather(*greedy, *honest, return_exceptions=True)
        assert all(not isinstance(r, BaseException) for r in results[6:])  # honest: all served
        shed = [r for r in results[:6] if isinstance(r, Overloaded)]
        assert shed and all("shed" in str(r) for r in shed)
        order = [b[0] for b in run.batches]
        # Honest frames are not stuck behind the greedy backlog: they interleave with it.
        assert order.index(100) <= 2
        await batcher.close()

    asyncio.run(main())


def test_a_client_whose_frames_are_all_decoding_is_still_shed_first(executor) -> None:
    """The greedy client's frames fill every place while they are still being decoded (nothing
    of theirs is queued yet, so nothing can be popped): the honest frame is admitted anyway, and
    the greedy frame that finishes decoding next is shed in its place."""

    async def main() -> None:
        run = Scripted(0.01)
        batcher = make(run, executor, max_batch_size=1, max_pending=4)

        def decoding(item: int) -> Callable[[], Awaitable[int]]:
            async def prepare() -> int:
                await asyncio.sleep(0.1)
                return item
            return prepare

        greedy = [asyncio.ensure_future(batcher.admit(decoding(i), client="greedy"))
                  for i in range(4)]
        await asyncio.sleep(0.01)  # all four are decoding
        honest = await batcher.submit(100, client="honest")
        assert honest[0] == 200
        results = await asyncio.gather(*greedy, return_exceptions=True)
        shed = [r for r in results if isinstance(r, Overloaded)]
        assert len(shed) == 1 and "still being decoded" in str(shed[0])
        served = [r[0] for r in results if not isinstance(r, BaseException)]
        assert len(served) == 3 and set(served) < {0, 2, 4, 6}
        assert batcher.pending == 0 and batcher.load("greedy") == 0
        await batcher.close()

    asyncio.run(main())


def test_late_results_are_dropped_unless_the_client_accepts_them(executor) -> None:
    async def main() -> None:
        run = Scripted(0.01, script=[0.01, 0.2, 0.2])
        batcher = make(run, executor, max_batch_size=1, probe_after_s=60)
        await batcher.submit(1)  # estimate: 10 ms; the next two batches are slower than that
        with pytest.raises(DeadlineMissed, match="computed, but"):
            await batcher.submit(2, deadline=time.monotonic() + 0.1)
        out, _ = await batcher.submit(3, deadline=time.monotonic() + 0.1, accept_late=True)
        assert out == 6
        await batcher.close()

    asyncio.run(main())
