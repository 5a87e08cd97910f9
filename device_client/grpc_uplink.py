"""The real uplink: one gRPC bidirectional `Stream` to the edge, reopened when it breaks.

A connection thread owns the stream: it waits for a channel (bounded by `connect_timeout_s`),
opens the call, and reads replies in order, resolving each frame's future. When the call ends for
any reason (server killed, network gone, keepalive timeout, server draining), every frame still
in flight fails with `UplinkUnavailable` at once, so the pipeline can fall back without waiting
for deadlines, and the thread reconnects after an exponential backoff with jitter.

A fresh channel per attempt keeps our backoff the only one (a channel's own reconnect backoff
grows to minutes). Keepalive pings find a dead peer on a silent link.

Lean frames: an edge that takes them says so in the stream's initial metadata; from then on each
frame leaves out what did not change since the one before (`shared.messages.LeanEncoder`, one
per stream: a reconnect starts whole). Until the edge said so, and to an older edge that never
does, frames go whole. An edge that also announces compact frames gets the latent's codec and
shape left out too and the times as offsets (~20 bytes less per frame). Never imports torch.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from device_client.config import EdgeConfig
from device_client.uplink import Reply
from shared.errors import UplinkUnavailable
from shared.messages import COMPACT_HEADER, LEAN_HEADER, LeanEncoder, wire_bytes
from shared.wire import pb, pb_grpc

log = logging.getLogger("splitedge.device.uplink")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SplitInference"].full_name
StateHandler = Callable[[bool], None]
_END = None  # the request iterator's end marker


class GrpcUplink:
    def __init__(
        self,
        config: EdgeConfig,
        token: str | None = None,
        max_message_bytes: int = 16 << 20,
        on_state: StateHandler | None = None,
    ) -> None:
        self.config = config
        self.on_state = on_state
        self.reconnects = 0
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._credentials = _credentials(config)
        self._options: list[tuple[str, int | str]] = [
            ("grpc.keepalive_time_ms", int(config.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(max(1.0, config.keepalive_s / 2) * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", int(config.backoff.initial_s * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(config.backoff.max_s * 1000)),
        ]
        if config.tls is not None and config.tls.server_name:
            self._options.append(("grpc.ssl_target_name_override", config.tls.server_name))
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, Future[pb.InferResponse]] = OrderedDict()
        self._requests: queue.SimpleQueue[pb.InferRequest | None] | None = None
        self._closed = threading.Event()
        self._up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._call: grpc.Call | None = None
        self._encoder = LeanEncoder()
        self._lean = False  # the current stream's edge takes lean frames

    @property
    def available(self) -> bool:
        return self._requests is not None

    def start(self) -> None:
        self._thread.start()

    def send(self, request: pb.InferRequest) -> Reply:
        with self._lock:
            if self._requests is None:
                raise UplinkUnavailable(f"no stream to {self.config.target} (reconnecting)")
            # Always through the encoder, so it knows the last frame when lean frames start.
            lean = self._encoder.encode(request)
            message = lean if self._lean else request
            future = Reply(wire_bytes(message))
            self._pending[request.frame_id] = future
            self._requests.put(message)
        return future

    @property
    def lean(self) -> bool:
        """Whether frames now go lean (the stream's edge announced it takes them)."""
        return self._lean

    def wait_available(self, timeout: float) -> bool:
        """Block until a stream is up (for start-up and tests); False on timeout."""
        return self._up.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._teardown("uplink closed")
        self._thread.join(timeout=5)

    # -- the connection thread ---------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._closed.is_set():
            healthy = self._stream_once()
            if self._closed.is_set():
                break
            attempt = 0 if healthy else attempt + 1
            delay = backoff_delay(attempt, self.config)
            log.info("edge %s: reconnecting in %.2f s", self.config.target, delay)
            self._closed.wait(delay)
            self.reconnects += 1

    def _stream_once(self) -> bool:
        """One connection: returns whether the edge was healthy on it (its health said SERVING and
        it did not refuse our token), so the backoff starts over from its initial delay."""
        channel = self._channel()
        healthy = False
        try:
            try:
                grpc.channel_ready_future(channel).result(timeout=self.config.connect_timeout_s)
            except grpc.FutureTimeoutError:
                log.warning(
                    "edge %s unreachable (no channel within %.1f s)",
                    self.config.target,
                    self.config.connect_timeout_s,
                )
                return False
            if not self._serving(channel):
                return False
            healthy = True
            requests: queue.SimpleQueue[pb.InferRequest | None] = queue.SimpleQueue()
            stub = pb_grpc.SplitInferenceStub(channel)  # type: ignore[no-untyped-call]
            call = stub.Stream(_drain(requests), metadata=self._metadata)
            self._call = call
            with self._lock:
                self._encoder = LeanEncoder()
                self._lean = False
                self._requests = requests
                self._up.set()
            if self.config.lean_stream:
                threading.Thread(
                    target=self._learn_lean, args=(call,), name="uplink-lean", daemon=True
                ).start()
            log.info("edge %s: stream open", self.config.target)
            self._notify(True)
            try:
                for reply in call:
                    self._resolve(reply)
                reason = "the edge ended the stream"
            except grpc.RpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    healthy = False  # retrying at once would only be refused again
                    log.error("edge %s refused the token: %s", self.config.target, reason)
            if not self._closed.is_set():
                log.warning("edge %s: stream lost (%s)", self.config.target, reason)
            self._teardown(f"stream to {self.config.target} lost ({reason})")
            return healthy
        finally:
            self._call = None
            channel.close()

    def _learn_lean(self, call: grpc.Call) -> None:
        """Wait for the stream's initial metadata (on its own thread: an older edge sends it only
        with its first reply, so the frames before it must not wait for it)."""
        try:
            metadata = call.initial_metadata()
        except grpc.RpcError:
            return
        pairs = {(m[0], m[1]) for m in metadata or ()}
        announced, compact = LEAN_HEADER in pairs, COMPACT_HEADER in pairs
        with self._lock:
            if announced and self._call is call:
                self._lean = True
                self._encoder.compact = compact
        if announced:
            log.info("edge %s takes lean%s frames", self.config.target,
                     " (compact)" if compact else "")

    def _serving(self, channel: grpc.Channel) -> bool:
        """Ask grpc.health.v1 first: an edge still loading its bundles (or draining) listens but
        cannot answer frames; a stream opened then would only collect errors."""
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            status = stub.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                timeout=self.config.connect_timeout_s,
            ).status
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return True  # an edge without the health service: trust the stream
            log.warning("edge %s health check failed: %s", self.config.target, exc.code().name)
            return False
        if status == health_pb2.HealthCheckResponse.SERVING:
            return True
        # Up but loading (or draining): watch its health rather than back off blindly, so the
        # stream opens the moment it serves instead of up to backoff.max_s later.
        log.info("edge %s is not serving yet (%s); watching its health", self.config.target, status)
        watch = stub.Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=self.config.backoff.max_s
        )
        self._call = watch
        try:
            for reply in watch:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
        except grpc.RpcError:
            pass  # the watch timed out, or the edge went away
        finally:
            watch.cancel()
            self._call = None
        return False

    def _resolve(self, reply: pb.InferResponse) -> None:
        with self._lock:
            future = self._pending.pop(reply.frame_id, None)
        if future is not None:
            future.set_result(reply)

    def _teardown(self, reason: str) -> None:
        with self._lock:
            was_up = self._requests is not None
            if self._requests is not None:
                self._requests.put(_END)
            self._requests = None
            self._up.clear()
            pending, self._pending = self._pending, OrderedDict()
        for future in pending.values():
            future.set_exception(UplinkUnavailable(reason))
        if was_up:
            self._notify(False)

    def _notify(self, up: bool) -> None:
        if self.on_state is not None:
            self.on_state(up)

    def _channel(self) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(self.config.target, options=self._options)
        return grpc.secure_channel(self.config.target, self._credentials, options=self._options)


def backoff_delay(attempt: int, config: EdgeConfig, rng: random.Random | None = None) -> float:
    """Delay before reconnect attempt `attempt` (0 after a stream that worked): exponential,
    capped, ± jitter so that many devices behind one edge do not reconnect in lockstep."""
    backoff = config.backoff
    base = min(backoff.max_s, backoff.initial_s * backoff.multiplier ** min(attempt, 32))
    spread = base * backoff.jitter
    return max(0.0, base + (rng or random).uniform(-spread, spread))


def _drain(requests: queue.SimpleQueue[pb.InferRequest | None]) -> Iterator[pb.InferRequest]:
    while (request := requests.get()) is not None:
        yield request


def _credentials(config: EdgeConfig) -> grpc.ChannelCredentials | None:
    if config.tls is None:
        return None
    roots = config.tls.ca_file.read_bytes() if config.tls.ca_file is not None else None
    return grpc.ssl_channel_credentials(root_certificates=roots)
