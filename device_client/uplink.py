"""The uplink interface: hand a request to the edge, get a future of its reply.

    uplink.start()
    reply = uplink.send(request)        # UplinkUnavailable at once when no stream is up
    reply.wire_bytes                    # what gRPC sends for it (a lean frame, framing included)
    reply.add_done_callback(...)        # resolves to an InferResponse (in-band errors included),
                                        # or fails with UplinkUnavailable when the stream is lost

Two implementations: `GrpcUplink` (device_client/grpc_uplink.py; a bidi stream with reconnect)
and `InMemoryUplink` here, which answers with a Python function, so the pipeline's tests run
without sockets. Like httpx's transports: the pipeline only ever sees this interface.

Never imports torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

from shared.errors import UplinkUnavailable
from shared.messages import wire_bytes
from shared.wire import pb

Handler = Callable[[pb.InferRequest], pb.InferResponse]


class Reply(Future[pb.InferResponse]):
    """A frame's reply to come, and the bytes that carried the frame: `shared.messages.wire_bytes`
    of the message the uplink really sent (lean on a stream that takes lean frames)."""

    def __init__(self, wire_bytes: int) -> None:
        super().__init__()
        self.wire_bytes = wire_bytes
        self.set_running_or_notify_cancel()


class Uplink(Protocol):
    @property
    def available(self) -> bool:
        """True while a stream is up: a frame sent now can reach the edge."""
        ...

    def start(self) -> None: ...

    def send(self, request: pb.InferRequest) -> Reply:
        """Queue `request` on the stream. Raises UplinkUnavailable when no stream is up."""
        ...

    def close(self) -> None:
        """Stop; frames still in flight fail with UplinkUnavailable."""
        ...


class InMemoryUplink:
    """An edge in this process. `handler` answers each request; the switches below let a test
    play the network: `available = False` (unreachable), `hold()` (replies wait until
    `release()`), `lose_stream()` (in-flight frames fail as on a broken connection)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.available = True
        self.sent: list[pb.InferRequest] = []
        self._held: list[tuple[pb.InferRequest, Future[pb.InferResponse]]] = []
        self._holding = False
        self._lock = threading.Lock()

    def start(self) -> None:
        pass

    def send(self, request: pb.InferRequest) -> Reply:
        if not self.available:
            raise UplinkUnavailable("in-memory edge is switched off")
        future = Reply(wire_bytes(request))  # whole frames: no stream to be lean on
        with self._lock:
            self.sent.append(request)
            if self._holding:
                self._held.append((request, future))
                return future
        self._answer(request, future)
        return future

    def hold(self) -> None:
        with self._lock:
            self._holding = True

    def release(self) -> None:
        with self._lock:
            self._holding = False
            held, self._held = self._held, []
        for request, future in held:
            self._answer(request, future)

    def lose_stream(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for _, future in held:
            future.set_exception(UplinkUnavailable("in-memory stream lost"))

    def close(self) -> None:
        self.lose_stream()

    def _answer(self, request: pb.InferRequest, future: Future[pb.InferResponse]) -> None:
        try:
            future.set_result(self.handler(request))
        except BaseException as exc:  # the handler's bug is the frame's failure, not ours
            future.set_exception(exc)
