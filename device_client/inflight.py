"""Frames awaiting the edge: the window, the replies, the deadline watcher, the fallback hand-off.

    in_flight = InFlight(uplink, window=4, sla_s=0.4, metrics=m,
                         on_result=..., on_failure=..., on_late=...)
    in_flight.start()
    in_flight.send(job, request)     # blocks while the window is full
    ...                              # exactly one of on_result(job, reply) / on_failure(job, …)
    in_flight.stop()                 # once nothing is in flight

Threads: `send` runs on the pipeline thread; replies resolve on the uplink's thread; the deadline
watcher claims frames whose reply is late. Whoever `claim`s an in-flight frame first owns its
outcome; a reply that comes after that is only counted (`on_late`). A frame the edge did not
answer with a result goes to `on_failure` with its reason (`edge_unavailable`, `deadline_missed`,
`edge_error:<code>`) and, when the edge answered, the typed error it answered with
(`shared.errors`). `inline` says the caller is the pipeline thread (the edge was unreachable at
send time), where running the fallback is the backpressure.

Never imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial

from device_client.metrics import DeviceMetrics
from device_client.outcomes import FrameJob, failure_reason
from device_client.uplink import Uplink
from shared.errors import DeadlineMissed, FrameError, UplinkUnavailable
from shared.messages import error_of, wire_bytes
from shared.wire import pb

log = logging.getLogger("splitedge.device.inflight")

OnResult = Callable[[FrameJob, pb.InferResponse], None]
# (job, reason, the edge's typed error if it answered with one, inline)
OnFailure = Callable[[FrameJob, str, FrameError | None, bool], None]


class InFlightBook:
    """Frames awaiting the edge, by id. `claim` pops one for exactly one caller."""

    def __init__(self) -> None:
        self._frames: dict[int, FrameJob] = {}
        self._changed = threading.Condition()

    def add(self, item: FrameJob) -> None:
        with self._changed:
            self._frames[item.frame.frame_id] = item
            self._changed.notify_all()

    def claim(self, frame_id: int) -> FrameJob | None:
        """The frame if still in flight (the caller now owns its outcome), else None."""
        with self._changed:
            item = self._frames.pop(frame_id, None)
            self._changed.notify_all()
            return item

    def claim_expired(self, now: float) -> list[FrameJob]:
        with self._changed:
            expired = [f for f in self._frames.values() if f.deadline <= now]
            for item in expired:
                del self._frames[item.frame.frame_id]
            if expired:
                self._changed.notify_all()
            return expired

    def next_deadline(self) -> float | None:
        with self._changed:
            return min((f.deadline for f in self._frames.values()), default=None)

    def wait_below(self, limit: int, timeout: float | None = None) -> bool:
        """Block until fewer than `limit` frames are in flight; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while len(self._frames) >= limit:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def wait_change(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def __len__(self) -> int:
        with self._changed:
            return len(self._frames)


class InFlight:
    def __init__(
        self,
        uplink: Uplink,
        *,
        window: int,
        sla_s: float,
        metrics: DeviceMetrics,
        on_result: OnResult,
        on_failure: OnFailure,
        on_late: Callable[[], None],
    ) -> None:
        self.uplink = uplink
        self.window = window
        self.sla_s = sla_s
        self.metrics = metrics
        self.on_result = on_result
        self.on_failure = on_failure
        self.on_late = on_late
        self.book = InFlightBook()
        self._watching = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch_deadlines, name="deadlines", daemon=True
        )

    def start(self) -> None:
        self._watching.set()
        self._watcher.start()

    def __len__(self) -> int:
        return len(self.book)

    def wait_empty(self) -> None:
        """Every in-flight frame ends by its deadline at the latest (the watcher claims it)."""
        while len(self.book):
            self.book.wait_change(0.05)

    def stop(self) -> None:
        self._watching.clear()
        if self._watcher.is_alive():
            self._watcher.join(timeout=5)

    def send(self, job: FrameJob, request: pb.InferRequest) -> None:
        # The window: the watcher frees a slot at the oldest frame's deadline at the latest.
        self.book.wait_below(self.window)
        job.deadline = job.frame.captured + self.sla_s
        job.sent = time.monotonic()
        job.bytes_sent = wire_bytes(request)  # whole, until the uplink says what it sent
        self.book.add(job)
        self.metrics.in_flight.set(len(self.book))
        try:
            reply = self.uplink.send(request)
        except UplinkUnavailable:
            if self.book.claim(job.frame.frame_id) is not None:
                job.bytes_sent = 0
                self.on_failure(job, "edge_unavailable", None, True)
            return
        job.bytes_sent = reply.wire_bytes
        reply.add_done_callback(partial(self._on_reply, job.frame.frame_id))

    def _on_reply(self, frame_id: int, future: Future[pb.InferResponse]) -> None:
        job = self.book.claim(frame_id)
        self.metrics.in_flight.set(len(self.book))
        if job is None:  # the deadline watcher got there first
            self.on_late()
            self.metrics.late_replies.inc()
            return
        job.timings_ms["uplink"] = (time.monotonic() - job.sent) * 1e3
        error = future.exception()
        if error is not None:
            if not isinstance(error, UplinkUnavailable):
                log.warning("frame %d: uplink error %r", frame_id, error)
            self.on_failure(job, "edge_unavailable", None, False)
            return
        reply = future.result()
        answered = error_of(reply.status)
        if answered is None:
            self.on_result(job, reply)
            return
        if not isinstance(answered, DeadlineMissed):
            log.warning("frame %d: edge answered %s: %s", frame_id, answered.code_name, answered)
        self.on_failure(job, failure_reason(answered), answered, False)

    def _watch_deadlines(self) -> None:
        while self._watching.is_set() or len(self.book):
            now = time.monotonic()
            for job in self.book.claim_expired(now):
                job.timings_ms["uplink"] = (now - job.sent) * 1e3
                self.on_failure(job, "deadline_missed", None, False)
            self.metrics.in_flight.set(len(self.book))
            upcoming = self.book.next_deadline()
            wait = 0.2 if upcoming is None else min(0.2, max(0.0, upcoming - time.monotonic()))
            self.book.wait_change(wait + 0.001)
