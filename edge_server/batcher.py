"""Dynamic batching of frames for one (model, branch, tasks) key.

Frames queue up; a worker releases a batch when it is full, when the oldest frame has waited
`max_queue_delay` (default 0: release whatever is queued at once, so batches grow only while the
tail is busy — no added latency at low load), and runs it on the tail executor, off the event loop.

Deadlines: a frame whose deadline has passed, or that cannot make it given the tail's recent
compute time, is answered at once with DeadlineMissed and is not computed. The queue is bounded:
past `max_pending` a submit fails with Overloaded and a retry hint, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.errors import DeadlineMissed, FrameError, Overloaded, ShuttingDown

In = TypeVar("In")
Out = TypeVar("Out")

_EWMA = 0.2  # weight of the newest batch in the compute-time estimate


@dataclass(frozen=True)
class BatchTiming:
    queue_wait_s: float
    compute_s: float
    batch_size: int


@dataclass
class _Queued(Generic[In, Out]):
    item: In
    deadline: float  # time.monotonic() seconds; inf when none
    enqueued: float
    future: asyncio.Future[tuple[Out, BatchTiming]]


class DynamicBatcher(Generic[In, Out]):
    """Batch `submit`ted items through `run` (a blocking function of a list, in `executor`)."""

    def __init__(
        self,
        run: Callable[[list[In]], Sequence[Out]],
        executor: Executor,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_pending: int,
        on_batch: Callable[[int, str, float], None] = lambda size, reason, compute_s: None,
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_pending = max_pending
        self._on_batch = on_batch
        self._queue: deque[_Queued[In, Out]] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._in_flight = 0
        self.compute_estimate_s = 0.0
        self._worker: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._queue) + self._in_flight

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, item: In, deadline: float = float("inf")) -> tuple[Out, BatchTiming]:
        if self._closed:
            raise ShuttingDown("the server is shutting down and takes no new frames")
        now = time.monotonic()
        if deadline <= now:
            raise DeadlineMissed(f"deadline passed {1e3 * (now - deadline):.1f} ms before queueing")
        if len(self._queue) >= self.max_pending:
            raise Overloaded(
                f"{len(self._queue)} frames already queued for this model branch "
                f"(max_pending={self.max_pending})",
                retry_after_ms=self.retry_after_ms(),
            )
        future: asyncio.Future[tuple[Out, BatchTiming]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(item, deadline, now, future))
        self._wakeup.set()
        return await future

    def retry_after_ms(self) -> int:
        """How long until the queue has room, from the recent compute time (at least 10 ms)."""
        batches_ahead = -(-len(self._queue) // self.max_batch_size)
        return max(10, round(1e3 * batches_ahead * self.compute_estimate_s))

    async def close(self) -> None:
        """Stop taking frames; answer every queued one (computed or deadline-missed); return."""
        self._closed = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            reason = await self._wait_for_batch()
            size = min(self.max_batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(size)]
            runnable = self._drop_hopeless(batch)
            if runnable:
                await self._compute(runnable, reason)

    async def _wait_for_batch(self) -> str:
        if len(self._queue) >= self.max_batch_size:
            return "full"
        if self.max_queue_delay_s <= 0:
            return "immediate"
        release_at = self._queue[0].enqueued + self.max_queue_delay_s
        while len(self._queue) < self.max_batch_size and not self._closed:
            remaining = release_at - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        return "full" if len(self._queue) >= self.max_batch_size else "delay"

    def _drop_hopeless(self, batch: list[_Queued[In, Out]]) -> list[_Queued[In, Out]]:
        now = time.monotonic()
        runnable = []
        for queued in batch:
            if queued.future.done():  # its caller went away (cancelled stream, client deadline)
                continue
            if now + self.compute_estimate_s > queued.deadline:
                late = now + self.compute_estimate_s - queued.deadline
                queued.future.set_exception(
                    DeadlineMissed(
                        f"cannot make the deadline (by ~{1e3 * late:.1f} ms after "
                        f"{1e3 * (now - queued.enqueued):.1f} ms queued); not computed"
                    )
                )
            else:
                runnable.append(queued)
        return runnable

    async def _compute(self, runnable: list[_Queued[In, Out]], reason: str) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self._in_flight = len(runnable)
        try:
            outputs = await loop.run_in_executor(
                self._executor, self._run, [q.item for q in runnable]
            )
            if len(outputs) != len(runnable):
                raise RuntimeError(f"tail returned {len(outputs)} results for {len(runnable)}")
        except Exception as exc:  # one failing batch must not stop the worker
            error = exc if isinstance(exc, FrameError) else FrameError(f"tail failed: {exc!r}")
            for queued in runnable:
                if not queued.future.done():
                    queued.future.set_exception(error)
            return
        finally:
            self._in_flight = 0
        compute_s = time.monotonic() - started
        self.compute_estimate_s = (
            compute_s
            if self.compute_estimate_s == 0
            else (1 - _EWMA) * self.compute_estimate_s + _EWMA * compute_s
        )
        self._on_batch(len(runnable), reason, compute_s)
        for queued, output in zip(runnable, outputs, strict=True):
            if not queued.future.done():
                timing = BatchTiming(started - queued.enqueued, compute_s, len(runnable))
                queued.future.set_result((output, timing))
