"""The gRPC front door: splitedge.v1.SplitInference, grpc.health.v1 and server reflection.

Unary errors are gRPC statuses; on a stream, a bad frame is answered in-band (InferResponse.status)
and the stream goes on. Each stream keeps at most `stream_window` frames in flight and answers in
order, so frames of one stream batch with each other and with other streams.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edge_server.runtime import EdgeRuntime
from shared.errors import FrameError, Overloaded
from shared.wire import pb, pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SplitInference"].full_name
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")  # probes carry no token

_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


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

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = tuple(tokens)

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

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)


class SplitInferenceService(pb_grpc.SplitInferenceServicer):
    def __init__(self, runtime: EdgeRuntime) -> None:
        self.runtime = runtime

    async def Infer(
        self, request: pb.InferRequest, context: grpc.aio.ServicerContext
    ) -> pb.InferResponse:
        try:
            return await self.runtime.infer(request)
        except FrameError as exc:
            if isinstance(exc, Overloaded):
                context.set_trailing_metadata((("retry-after-ms", str(exc.retry_after_ms)),))
            await context.abort(_GRPC_CODES[exc.code], str(exc))
            raise  # unreachable: abort raises

    async def Stream(
        self, requests: AsyncIterator[pb.InferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.InferResponse]:
        window: asyncio.Queue[asyncio.Task[pb.InferResponse] | None] = asyncio.Queue(
            self.runtime.settings.stream_window
        )

        async def read() -> None:
            try:
                async for request in requests:
                    await window.put(asyncio.ensure_future(self._answer(request)))
            finally:
                await window.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await window.get()) is not None:
                yield await task
            await reader  # surface a broken request stream as the call's error
        finally:
            reader.cancel()

    async def _answer(self, request: pb.InferRequest) -> pb.InferResponse:
        try:
            return await self.runtime.infer(request)
        except FrameError as exc:
            return pb.InferResponse(
                stream_id=request.stream_id,
                frame_id=request.frame_id,
                model_name=request.model_name,
                model_version=request.model_version,
                branch_id=request.branch_id,
                status=pb.FrameStatus(
                    code=pb.FrameCode.Name(exc.code),
                    message=str(exc),
                    retry_after_ms=exc.retry_after_ms if isinstance(exc, Overloaded) else 0,
                ),
            )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        response = pb.ListModelsResponse()
        for model in self.runtime.registry:
            if request.model_name and model.name != request.model_name:
                continue
            manifest = model.bundle.manifest
            info = response.models.add(
                name=model.name,
                version=model.version,
                tasks=[pb.Task.Value("TASK_" + t.upper()) for t in manifest.tasks],
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
                    codec=pb.Codec.Value("CODEC_" + branch.codec) if branch.codec else 0,
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
    server = grpc.aio.server(
        interceptors=[BearerAuth(settings.tokens)] if settings.tokens else None,
        options=[
            ("grpc.max_receive_message_length", hard_cap),
            ("grpc.max_send_message_length", hard_cap),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ],
    )
    pb_grpc.add_SplitInferenceServicer_to_server(  # type: ignore[no-untyped-call]
        SplitInferenceService(runtime), server
    )
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


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, status)
