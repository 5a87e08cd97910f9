"""The HTTP front door (FastAPI): health, readiness, metrics, models, bundle download, and
full-image inference for clients with no head. Errors are JSON `{"error": ...}`.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_server.grpc_api import bearer_ok
from edge_server.redact import shown
from edge_server.runtime import Caller, EdgeRuntime
from shared.bundle import Task
from shared.codecs import MEDIA_TYPES, Payload
from shared.errors import FrameError, InvalidRequest, Overloaded, Unauthenticated
from shared.messages import TASK_IDS, FrameRequest, infer_request


def build_http_app(runtime: EdgeRuntime) -> FastAPI:
    settings = runtime.settings
    tokens = settings.tokens
    # With tokens set, the API's description is not public either (unless --open-docs): it is
    # served below behind the same check as everything else.
    public_docs = not tokens or settings.open_docs
    app = FastAPI(
        title="splitedge edge server",
        version="1",
        description="Split-computing tails over gRPC; this HTTP API serves operators, devices "
        "fetching bundles, and clients that send whole frames.",
        docs_url="/docs" if public_docs else None,
        redoc_url="/redoc" if public_docs else None,
        openapi_url="/openapi.json" if public_docs else None,
    )
    refused = runtime.metrics.auth_refused.labels("http")

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        if not bearer_ok(authorization, tokens):
            refused.inc()
            raise Unauthenticated("missing or wrong bearer token (Authorization: Bearer <token>)")

    guarded = [Depends(authorized)]

    if not public_docs:

        @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
        async def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", dependencies=guarded, include_in_schema=False)
        async def docs() -> Response:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    @app.exception_handler(FrameError)
    async def frame_error(request: Request, exc: FrameError) -> JSONResponse:
        headers = {}
        if isinstance(exc, Overloaded):
            headers["Retry-After"] = str(max(1, -(-exc.retry_after_ms // 1000)))
        if isinstance(exc, Unauthenticated):
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status, headers=headers)

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: bundles loaded and warmed, not draining")
    async def readyz() -> JSONResponse:
        if runtime.ready:
            return JSONResponse({"status": "ready", "models": [m.name for m in runtime.registry]})
        state = "draining" if runtime.draining else "starting"
        return JSONResponse({"error": f"not ready: {state}"}, status_code=503)

    @app.get("/metrics", dependencies=guarded, summary="Prometheus metrics")
    async def metrics() -> Response:
        # Rendered on a worker thread: this event loop also runs gRPC.
        text = await asyncio.to_thread(generate_latest, runtime.metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=guarded, summary="Models and their branches")
    async def models() -> dict[str, Any]:
        return {"models": [_summary(m) for m in runtime.registry]}

    @app.get("/v1/models/{name}", dependencies=guarded, summary="One model's manifest")
    async def model(name: str, version: str = "") -> dict[str, Any]:
        loaded = runtime.registry.resolve(name, version)
        return loaded.bundle.manifest.model_dump(mode="json")

    @app.get(
        "/v1/models/{name}/bundle",
        dependencies=guarded,
        summary="The bundle as tar.gz (ETag and X-Bundle-SHA256 are the archive's sha256)",
    )
    async def bundle(
        name: str,
        version: str = "",
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        loaded = runtime.registry.resolve(name, version)
        archive = loaded.archive()
        etag = f'"{archive.sha256}"'
        headers = {"ETag": etag, "X-Bundle-SHA256": archive.sha256}
        if if_none_match == etag:
            return Response(status_code=304, headers=headers)
        headers["Content-Disposition"] = f'attachment; filename="{name}-{loaded.version}.tar.gz"'
        return Response(archive.data, media_type="application/gzip", headers=headers)

    @app.post(
        "/v1/infer",
        dependencies=guarded,
        summary="Whole-frame inference: POST a JPEG, PNG or WebP body; the teacher runs on it",
    )
    async def infer(
        request: Request,
        model: Annotated[str, Query(description="model name")],
        version: str = "",
        task: Annotated[list[str] | None, Query(description="detection / classification")] = None,
        content_length: Annotated[int | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        limit = runtime.limits.max_payload_bytes
        if content_length is not None and content_length > limit:
            raise _TooLarge(f"body of {content_length} bytes, at most {limit}")
        codec = MEDIA_TYPES.get((request.headers.get("content-type") or "").split(";")[0])
        if codec is None:
            raise InvalidRequest(f"Content-Type must be one of {sorted(MEDIA_TYPES)}")
        body = bytearray()
        try:
            async with asyncio.timeout(settings.http_body_timeout_s):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise _TooLarge(f"body larger than {limit} bytes")
        except TimeoutError:
            raise _TooSlow(
                f"the body did not arrive within {settings.http_body_timeout_s:g} s"
            ) from None
        tasks = tuple(_known_task(t) for t in task or ())
        answer = await runtime.infer(
            infer_request(
                FrameRequest(model_name=model, model_version=version, tasks=tasks),
                image=Payload(codec, (), (bytes(body),)),
            ),
            Caller(_client(request, authorization, tokens)),
        )
        # Every field, zeros included: JSON clients should not have to know proto3's defaults.
        return json_format.MessageToDict(
            answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    return app


class _TooLarge(InvalidRequest):
    http_status = 413


class _TooSlow(InvalidRequest):
    http_status = 408


def _client(request: Request, authorization: str | None, tokens: list[str]) -> str:
    """The fair-share key: the token (checked already) when tokens are set, else the
    connection."""
    if tokens and authorization:
        given = authorization.removeprefix("Bearer ")
        for index, token in enumerate(tokens):
            if hmac.compare_digest(given.encode(), token.encode()):
                return f"token-{index}"
    peer = request.client
    return f"http:{peer.host}:{peer.port}" if peer else "http"


def _known_task(task: str) -> Task:
    for known in TASK_IDS:
        if task == known:
            return known
    raise InvalidRequest(f"unknown task {shown(task)}: {' or '.join(TASK_IDS)}")


def _summary(model: Any) -> dict[str, Any]:
    manifest = model.bundle.manifest
    return {
        "name": manifest.name,
        "version": manifest.version,
        "tasks": list(manifest.tasks),
        "branches": [b.model_dump(mode="json") for b in manifest.branches],
    }
