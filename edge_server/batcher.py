"""Dynamic batching of frames for one (model, branch, tasks) key, with admission and fair shares.

Admission comes first, before a frame costs anything (`admit` decodes only once it has passed):
  - the queue is bounded: past `max_pending` frames (queued, or admitted and being decoded) a
    frame is refused with Overloaded and a retry hint — unless another client holds more than
    its share, in which case that client's newest frame is shed instead, so one client's
    overload falls on that client first (if all its frames are still being decoded, the next
    of them to finish decoding is shed: a decode in progress is not interrupted);
  - a frame that cannot make its deadline — given the frames ahead of it in the round-robin and
    the branch's robust per-frame estimate (edge_server/estimate.py) — is refused with
    DeadlineMissed, not decoded, not computed. When the estimate has not been refreshed for
    `probe_after_s`, one such frame is let through as a probe, so a branch whose estimate went
    bad (or whose tail got faster) recovers by itself.

Batching: a worker releases a batch when it is full, or when the oldest frame has waited
`max_queue_delay` (default 0: release whatever is queued at once, so batches grow only while the
tail is busy), taking frames round-robin across clients, and runs it on the tail executor, off
the event loop.

Deadlines after admission: a frame whose deadline can no longer be met when its batch is formed
is dropped (DeadlineMissed, not computed); one whose batch finished after its deadline is
answered DeadlineMissed too — unless its client asked for late answers (`accept_late`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

from edge_server.estimate import FrameCostEstimate
from edge_server.redact import scrubbed
from shared.errors import DeadlineMissed, FrameError, Overloaded, ShuttingDown

In = TypeVar("In")
Out = TypeVar("Out")

# A probe that never came back (its caller left) must not block the next one for ever.
_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class BatchTiming:
    queue_wait_s: float
    compute_s: float
    batch_size: int


@dataclass
class _Queued(Generic[In, Out]):
    item: In
    client: str
    deadline: float  # time.monotonic() seconds; inf when none
    accept_late: bool
    probe: bool
    enqueued: float
    future: asyncio.Future[tuple[Out, BatchTiming]]


class DynamicBatcher(Generic[In, Out]):
    """Batch frames through `run` (a blocking function of a list, in `executor`)."""

    def __init__(
        self,
        run: Callable[[list[In]], Sequence[Out]],
        executor: Executor,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_pending: int,
        prior_s_per_frame: float = 0.0,
        probe_after_s: float = 0.5,
        on_batch: Callable[[int, str, float], None] = lambda size, reason, compute_s: None,
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_pending = max_pending
        self.probe_after_s = probe_after_s
        self._on_batch = on_batch
        # Per client, FIFO; the dict's order is the round-robin order (a served client moves to
        # the back).
        self._queues: dict[str, deque[_Queued[In, Out]]] = {}
        self._queued = 0
        self._reserved: Counter[str] = Counter()  # admitted, still being prepared (decoded)
        # per client, frames being prepared that are shed once prepared: room made for another
        # client while every frame this one held was still decoding
        self._owed: Counter[str] = Counter()
        self.compute = FrameCostEstimate(prior_s_per_frame)
        self.prepare = FrameCostEstimate()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._in_flight = 0
        self._in_flight_until = 0.0
        self._probe_until = float("-inf")
        self._worker: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return self._queued + self._reserved.total() + self._in_flight

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def submit(
        self,
        item: In,
        deadline: float = float("inf"),
        *,
        client: str = "",
        accept_late: bool = False,
    ) -> tuple[Out, BatchTiming]:
        """Admit and queue an item that needs no preparation."""

        async def ready() -> In:
            return item

        return await self.admit(ready, deadline, client=client, accept_late=accept_late)

    async def admit(
        self,
        prepare: Callable[[], Awaitable[In]],
        deadline: float = float("inf"),
        *,
        client: str = "",
        accept_late: bool = False,
    ) -> tuple[Out, BatchTiming]:
        """Admission checks, then `prepare()` (the decode), then the queue; the result once its
        batch has run. Raises Overloaded, DeadlineMissed, ShuttingDown or what `prepare` raises."""
        if self._closed:
            raise ShuttingDown("the server is shutting down and takes no new frames")
        now = time.monotonic()
        if deadline <= now:
            raise DeadlineMissed(f"deadline passed {1e3 * (now - deadline):.1f} ms before queueing")
        self._make_room(client)
        probe = self._check_feasible(client, deadline, accept_late, now)
        self._reserved[client] += 1
        try:
            started = time.monotonic()
            item = await prepare()
            self.prepare.observe(time.monotonic() - started, 1, time.monotonic())
        except BaseException:
            if probe:
                self._probe_until = float("-inf")
            raise
        finally:
            self._reserved[client] -= 1
            if self._reserved[client] <= 0:
                del self._reserved[client]
            owed = self._owed[client] > 0
            if owed:
                self._owed[client] -= 1
                if self._owed[client] <= 0:
                    del self._owed[client]
        if owed:
            raise Overloaded(
                "shed to make room for another client: this frame was still being decoded "
                f"when your frames held more than your share of the {self.max_pending} places",
                retry_after_ms=self.retry_after_ms(),
            )
        if self._closed:
            raise ShuttingDown("the server is shutting down and takes no new frames")
        now = time.monotonic()
        if deadline <= now and not accept_late:
            raise DeadlineMissed(
                f"deadline passed {1e3 * (now - deadline):.1f} ms while decoding; not computed"
            )
        future: asyncio.Future[tuple[Out, BatchTiming]] = asyncio.get_running_loop().create_future()
        queued = _Queued(item, client, deadline, accept_late, probe, now, future)
        self._queues.setdefault(client, deque()).append(queued)
        self._queued += 1
        self._wakeup.set()
        return await future

    def retry_after_ms(self) -> int:
        """How long until the queue has room, from the per-frame estimate (at least 10 ms)."""
        return max(10, round(1e3 * self._queued * self.compute.per_frame(time.monotonic())))

    def load(self, client: str) -> int:
        """Frames of `client` queued or being prepared."""
        queue = self._queues.get(client)
        return (len(queue) if queue else 0) + self._reserved[client] - self._owed[client]

    async def close(self) -> None:
        """Stop taking frames; answer every queued one (computed or deadline-missed); return."""
        self._closed = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker

    # -- admission -------------------------------------------------------------------------------
    def _make_room(self, client: str) -> None:
        held_now = self._queued + self._reserved.total() - self._owed.total()
        if held_now < self.max_pending:
            return
        mine = self.load(client)
        heaviest = max(set(self._queues) | set(self._reserved), key=self.load, default=None)
        if heaviest is not None and heaviest != client and self.load(heaviest) > mine + 1:
            held = self.load(heaviest)
            if heaviest not in self._queues:
                # Every frame it holds is being decoded: the next to finish is shed instead.
                self._owed[heaviest] += 1
                return
            # Shed the heaviest client's newest frame: its oldest are closest to being served.
            victim = self._queues[heaviest].pop()
            self._queued -= 1
            if not self._queues[heaviest]:
                del self._queues[heaviest]
            if not victim.future.done():
                victim.future.set_exception(
                    Overloaded(
                        f"shed to make room for another client: yours held {held} of "
                        f"the {self.max_pending} places of this model branch's queue",
                        retry_after_ms=self.retry_after_ms(),
                    )
                )
            return
        raise Overloaded(
            f"{held_now} frames already queued for this model branch "
            f"(max_pending={self.max_pending}); {mine} of them yours",
            retry_after_ms=self.retry_after_ms(),
        )

    def _check_feasible(self, client: str, deadline: float, accept_late: bool, now: float) -> bool:
        """Raise DeadlineMissed if the frame is expected to finish after its deadline; return
        whether it is admitted anyway, as a probe of a stale estimate."""
        per_frame = self.compute.per_frame(now)
        if accept_late or per_frame <= 0 or deadline == float("inf"):
            return False
        mine = self.load(client)
        # Round-robin: every other client gets at most one frame in before each of ours.
        clients = set(self._queues) | set(self._reserved)
        ahead = mine + sum(min(self.load(c), mine + 1) for c in clients if c != client)
        computing = max(0.0, self._in_flight_until - now) if self._in_flight else 0.0
        finish = now + self.prepare.per_frame(now) + computing + per_frame * (ahead + 1)
        if finish <= deadline:
            return False
        if now > self._probe_until and self.compute.stale(now, self.probe_after_s):
            self._probe_until = now + _PROBE_TIMEOUT_S
            return True
        raise DeadlineMissed(
            f"cannot make the deadline: expected to finish ~{1e3 * (finish - deadline):.1f} ms "
            f"after it ({ahead} frames ahead at ~{1e3 * per_frame:.1f} ms each); "
            "not decoded, not computed"
        )

    # -- the worker ------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            if not self._queued:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            reason = await self._wait_for_batch()
            if not self._queued:  # every queued frame was shed meanwhile
                continue
            runnable = self._drop_hopeless(self._take_batch())
            if runnable:
                await self._compute(runnable, reason)

    async def _wait_for_batch(self) -> str:
        if self._queued >= self.max_batch_size:
            return "full"
        if self.max_queue_delay_s <= 0:
            return "immediate"
        oldest = min(queue[0].enqueued for queue in self._queues.values())
        release_at = oldest + self.max_queue_delay_s
        while self._queued < self.max_batch_size and not self._closed:
            remaining = release_at - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        return "full" if self._queued >= self.max_batch_size else "delay"

    def _take_batch(self) -> list[_Queued[In, Out]]:
        batch: list[_Queued[In, Out]] = []
        while len(batch) < self.max_batch_size and self._queues:
            client = next(iter(self._queues))
            queue = self._queues.pop(client)
            batch.append(queue.popleft())
            self._queued -= 1
            if queue:
                self._queues[client] = queue  # to the back of the round-robin
        return batch

    def _drop_hopeless(self, batch: list[_Queued[In, Out]]) -> list[_Queued[In, Out]]:
        now = time.monotonic()
        expected = self.compute.batch(len(batch), now)
        runnable = []
        for queued in batch:
            if queued.future.done():  # its caller went away (cancelled stream, client deadline)
                continue
            if not (queued.probe or queued.accept_late) and now + expected > queued.deadline:
                late = now + expected - queued.deadline
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
        self._in_flight_until = started + self.compute.batch(len(runnable), started)
        try:
            outputs = await loop.run_in_executor(
                self._executor, self._run, [q.item for q in runnable]
            )
            if len(outputs) != len(runnable):
                raise RuntimeError(f"tail returned {len(outputs)} results for {len(runnable)}")
        except Exception as exc:  # one failing batch must not stop the worker
            error = (
                exc
                if isinstance(exc, FrameError)
                else FrameError(f"the tail failed: {type(exc).__name__}: {scrubbed(str(exc))}")
            )
            for queued in runnable:
                if not queued.future.done():
                    queued.future.set_exception(error)
            return
        finally:
            self._in_flight = 0
        finished = time.monotonic()
        compute_s = finished - started
        self.compute.observe(compute_s, len(runnable), finished)
        self._probe_until = float("-inf")
        self._on_batch(len(runnable), reason, compute_s)
        for queued, output in zip(runnable, outputs, strict=True):
            if queued.future.done():
                continue
            if finished > queued.deadline and not queued.accept_late:
                queued.future.set_exception(
                    DeadlineMissed(
                        f"computed, but {1e3 * (finished - queued.deadline):.1f} ms after the "
                        "deadline: not answered late (a client that wants late answers sends "
                        "the metadata `splitedge-accept-late: 1`)"
                    )
                )
                continue
            timing = BatchTiming(started - queued.enqueued, compute_s, len(runnable))
            queued.future.set_result((output, timing))
