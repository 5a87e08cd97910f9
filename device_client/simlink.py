"""A simulated uplink: a token bucket and a round trip in front of a real `Uplink`.

    link = SimulatedLink(GrpcUplink(...), mbit=10, rtt_ms=20)
    link.set_rate(0.3)                  # from now on the bottleneck carries 0.3 Mbit/s

Requests queue behind each other on one bottleneck (first in, first out): a request of n bytes
leaves `n × 8 / rate` after the one before it left, and reaches the inner uplink half a round
trip later; its reply comes back the other half later. Rate changes apply to the bytes not yet
sent. Deterministic enough for tests of the scheduler (no kernel, no root, no sockets of its own:
`tc` in network namespaces does the real thing in `benchmarks/scheduler.py`).

Never imports torch.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from concurrent.futures import Future

from device_client.uplink import Reply, Uplink
from shared.errors import UplinkUnavailable
from shared.messages import wire_bytes
from shared.wire import pb


class SimulatedLink:
    def __init__(self, inner: Uplink, mbit: float, rtt_ms: float = 10.0) -> None:
        self.inner = inner
        self.rtt_s = rtt_ms / 1e3
        self._rate_bps = mbit * 1e6
        self._free_at = 0.0  # monotonic time the bottleneck finishes what is queued
        self._events: list[tuple[float, int, pb.InferRequest, Future[pb.InferResponse]]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._deliver, name="simlink", daemon=True)
        self.bytes_sent = 0

    @property
    def available(self) -> bool:
        return self.inner.available

    @property
    def mbit(self) -> float:
        return self._rate_bps / 1e6

    def set_rate(self, mbit: float) -> None:
        with self._cond:
            now = time.monotonic()
            if self._free_at > now:  # the backlog drains at the new rate
                self._free_at = now + (self._free_at - now) * self._rate_bps / (mbit * 1e6)
            self._rate_bps = mbit * 1e6

    def start(self) -> None:
        self.inner.start()
        self._worker.start()

    def send(self, request: pb.InferRequest) -> Reply:
        if not self.inner.available:
            raise UplinkUnavailable("the simulated link's edge is unreachable")
        # Whole frames: the bottleneck sits in front of the inner uplink's lean encoding, so
        # the simulated link carries (and reports) a little more than the inner one sends.
        size = wire_bytes(request)
        future = Reply(size)
        with self._cond:
            now = time.monotonic()
            self._free_at = max(self._free_at, now) + size * 8 / self._rate_bps
            self.bytes_sent += size
            arrival = self._free_at + self.rtt_s / 2
            heapq.heappush(self._events, (arrival, next(self._order), request, future))
            self._cond.notify()
        return future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending, self._events = self._events, []
            self._cond.notify()
        for _, _, _, future in pending:
            future.set_exception(UplinkUnavailable("simulated link closed"))
        self.inner.close()

    def _deliver(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (
                    not self._events or self._events[0][0] > time.monotonic()
                ):
                    wait = self._events[0][0] - time.monotonic() if self._events else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                _, _, request, future = heapq.heappop(self._events)
            self._forward(request, future)

    def _forward(self, request: pb.InferRequest, outer: Future[pb.InferResponse]) -> None:
        try:
            inner = self.inner.send(request)
        except UplinkUnavailable as exc:
            outer.set_exception(exc)
            return
        half_rtt = self.rtt_s / 2

        def back(done: Future[pb.InferResponse]) -> None:
            # The reply's way back: half a round trip (replies are small; no bottleneck there).
            timer = threading.Timer(half_rtt, _copy, (done, outer))
            timer.daemon = True
            timer.start()

        inner.add_done_callback(back)


def _copy(source: Future[pb.InferResponse], target: Future[pb.InferResponse]) -> None:
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())
