"""The gRPC front door: splitedge.v1.SplitInference, grpc.health.v1 and server reflection.

Unary errors are gRPC statuses; on a stream, a bad frame is answered in-band (InferResponse.status)
and the stream goes on — bytes that are not protobuf included. Each stream keeps at most
`stream_window` frames in flight and answers in order, so frames of one stream batch with each
other and with other streams. On shutdown a stream stops reading, answers what it holds, and ends.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edge_server.redact import echoed
from edge_server.runtime import Caller, EdgeRuntime
from shared.codecs import codec_spec
from shared.errors import FrameError, InvalidRequest, Overloaded
from shared.messages import (
    COMPACT_HEADER,
    LEAN_HEADER,
    LeanDecoder,
    check_whole,
    grpc_code,
    status_of,
    task_ids,
)
from shared.wire import pb, pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SplitInference"].full_name
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # probes carry no token

DRAIN_FLUSH_S = 0.3
ACCEPT_LATE = "splitedge-accept-late"  # metadata: "1" answers frames computed past their deadline

_Message = TypeVar("_Message", bound=ProtoMessage)


def bearer_ok(header: str | None, tokens: Sequence[str]) -> bool:
    """Constant-time check of an `authorization: Bearer <token>` value against the tokens."""
    if not tokens:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    given = header[len("Bearer ") :].encode()
    return any(hmac.compare_digest(given, t.encode()) for t in tokens)


class BearerAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses a call without a valid token before any of its messages is read."""

    def __init__(
        self, tokens: Sequence[str], on_refused: Callable[[], None] = lambda: None
    ) -> None:
        self.tokens = tuple(tokens)
        self.on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_METHODS):
            return handler
        header = dict(details.invocation_metadata or ()).get("authorization")
        if bearer_ok(header, self.tokens):
            return handler
        self.on_refused()

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


@dataclass(frozen=True)
class Unparsable:
    """A request message whose bytes are not protobuf: answered INVALID_ARGUMENT, in-band on a
    stream, instead of gRPC ending the whole call with UNKNOWN."""

    error: str
    frame_id: int = 0  # known when the bytes parsed but the frame is still unusable


def _lenient(message: type[_Message]) -> Callable[[bytes], _Message | Unparsable]:
    def parse(data: bytes) -> _Message | Unparsable:
        try:
            return message.FromString(data)
        except DecodeError:
            return Unparsable(f"{len(data)} bytes that are not a {message.DESCRIPTOR.name}")

    return parse


class SplitInferenceService(pb_grpc.SplitInferenceServicer):
    def __init__(self, runtime: EdgeRuntime) -> None:
        self.runtime = runtime
        self.tokens = tuple(runtime.settings.tokens)

    def caller(self, context: grpc.aio.ServicerContext) -> Caller:
        """The fair-share key (the token when tokens are set, else the connection) and whether
        the client wants late answers."""
        metadata = dict(context.invocation_metadata() or ())
        client = str(context.peer())
        header = metadata.get("authorization")
        if self.tokens and isinstance(header, str):
            given = header.removeprefix("Bearer ").encode()
            for index, token in enumerate(self.tokens):
                if hmac.compare_digest(given, token.encode()):
                    client = f"token-{index}"
        late = str(metadata.get(ACCEPT_LATE, "")).lower() in ("1", "true", "yes")
        return Caller(client, late)

    async def Infer(
        self, request: pb.InferRequest | Unparsable, context: grpc.aio.ServicerContext
    ) -> pb.InferResponse:
        if isinstance(request, Unparsable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error)
            raise AssertionError("unreachable: abort raises")
        try:
            check_whole(request)
            return await self.runtime.infer(request, self.caller(context))
        except FrameError as exc:
            if isinstance(exc, Overloaded):
                context.set_trailing_metadata((("retry-after-ms", str(exc.retry_after_ms)),))
            await context.abort(grpc_code(exc), str(exc))
            raise  # unreachable: abort raises

    async def Stream(
        self,
        requests: AsyncIterator[pb.InferRequest | Unparsable],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.InferResponse]:
        window: asyncio.Queue[asyncio.Task[pb.InferResponse] | None] = asyncio.Queue(
            self.runtime.settings.stream_window
        )
        caller = self.caller(context)
        closing = asyncio.ensure_future(self.runtime.closing.wait())
        # Announced before any frame, so a device knows at once it may send lean frames.
        await context.send_initial_metadata((LEAN_HEADER, COMPACT_HEADER))
        frames = LeanDecoder()  # read in stream order, so lean frames expand against the last

        async def read() -> None:
            incoming = aiter(requests)
            try:
                while True:
                    # On shutdown stop reading: the frames in the window are answered, then the
                    # call ends, instead of refusing new frames until the drain grace is over.
                    following = asyncio.ensure_future(anext(incoming))
                    await asyncio.wait((following, closing), return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():
                        following.cancel()
                        return
                    try:
                        request = following.result()
                    except StopAsyncIteration:
                        return
                    answer = self._answer(request, caller, frames)
                    await window.put(asyncio.ensure_future(answer))
            finally:
                await window.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await window.get()) is not None:
                yield await task
            await reader  # surface a broken request stream as the call's error
            if closing.done():
                # Shutting down: give the last answers a moment on the wire before the call
                # ends and the server closes the connection. A socket closed with the peer's
                # frames unread is reset, and a proxy in between (HAProxy) then drops answers
                # it had not read yet: the drain test lost the last frames that way.
                await asyncio.sleep(DRAIN_FLUSH_S)
        finally:
            reader.cancel()
            closing.cancel()

    def _answer(
        self, request: pb.InferRequest | Unparsable, caller: Caller, frames: LeanDecoder
    ) -> Awaitable[pb.InferResponse]:
        """The frame's answer to come. Lean frames are expanded here, at once and in stream
        order (the answers run concurrently): the next lean frame builds on this one."""
        if not isinstance(request, Unparsable):
            try:
                request = frames.expand(request)
            except InvalidRequest as exc:
                request = Unparsable(str(exc), request.frame_id)
        return self._infer(request, caller)

    async def _infer(
        self, request: pb.InferRequest | Unparsable, caller: Caller
    ) -> pb.InferResponse:
        if isinstance(request, Unparsable):
            return pb.InferResponse(
                frame_id=request.frame_id, status=status_of(InvalidRequest(request.error))
            )
        try:
            return await self.runtime.infer(request, caller)
        except FrameError as exc:
            return pb.InferResponse(
                stream_id=echoed(request.stream_id),
                frame_id=request.frame_id,
                model_name=echoed(request.model_name),
                model_version=echoed(request.model_version),
                branch_id=echoed(request.branch_id),
                status=status_of(exc),
            )

    async def ListModels(
        self, request: pb.ListModelsRequest | Unparsable, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        if isinstance(request, Unparsable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error)
            raise AssertionError("unreachable: abort raises")
        response = pb.ListModelsResponse()
        for model in self.runtime.registry:
            if request.model_name and model.name != request.model_name:
                continue
            manifest = model.bundle.manifest
            info = response.models.add(
                name=model.name,
                version=model.version,
                tasks=task_ids(manifest.tasks),
                classes=list(manifest.classes.get(manifest.tasks[0], ())),
            )
            for branch in manifest.branches:
                item = info.branches.add(
                    id=branch.id,
                    kind=branch.kind,
                    width=branch.width or 0.0,
                    rate_lambda=branch.rate_lambda or 0.0,
                    expected_bytes=branch.expected_bytes or 0.0,
                    device_ms=branch.device_ms or 0.0,
                    edge_ms=branch.edge_ms or 0.0,
                    accuracy=branch.accuracy or 0.0,
                    codec=codec_spec(branch.codec).id if branch.codec else 0,
                )
                if branch.input_size:
                    item.input_size.height, item.input_size.width = branch.input_size
        return response


def build_grpc_server(
    runtime: EdgeRuntime, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    """A grpc.aio server with every service registered, bound to the configured port."""
    settings = runtime.settings
    # gRPC's own cap sits above ours, so a merely too-large payload gets our INVALID_ARGUMENT
    # naming its size; only absurd messages hit gRPC's RESOURCE_EXHAUSTED.
    hard_cap = 2 * settings.max_message_bytes + (1 << 20)
    refused = runtime.metrics.auth_refused.labels("grpc")
    server = grpc.aio.server(
        interceptors=[BearerAuth(settings.tokens, refused.inc)] if settings.tokens else None,
        options=[
            ("grpc.max_receive_message_length", hard_cap),
            ("grpc.max_send_message_length", hard_cap),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ],
    )
    _add_service(SplitInferenceService(runtime), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{settings.host}:{settings.grpc_port}"
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    return server, health_servicer, port


def _add_service(service: SplitInferenceService, server: grpc.aio.Server) -> None:
    """As the generated `add_SplitInferenceServicer_to_server`, but request bytes that are not
    protobuf reach the service as `Unparsable` instead of failing the call."""
    handlers = {
        "Infer": grpc.unary_unary_rpc_method_handler(
            service.Infer,
            request_deserializer=_lenient(pb.InferRequest),
            response_serializer=pb.InferResponse.SerializeToString,
        ),
        "Stream": grpc.stream_stream_rpc_method_handler(
            service.Stream,
            request_deserializer=_lenient(pb.InferRequest),
            response_serializer=pb.InferResponse.SerializeToString,
        ),
        "ListModels": grpc.unary_unary_rpc_method_handler(
            service.ListModels,
            request_deserializer=_lenient(pb.ListModelsRequest),
            response_serializer=pb.ListModelsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, status)
