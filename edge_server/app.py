"""One edge process: the gRPC server and the HTTP app on their own ports, one shared runtime.

Start-up: both ports answer at once (liveness), readiness follows once every bundle is loaded and
warmed. Shutdown (SIGTERM/SIGINT): readiness and gRPC health flip to not-serving, new frames are
refused, every admitted frame is answered, then both servers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Callable

import grpc
import uvicorn

from edge_server.grpc_api import build_grpc_server, set_serving
from edge_server.http_api import build_http_app
from edge_server.http_protocol import limited_protocol
from edge_server.logs import limit_noisy_loggers
from edge_server.runtime import EdgeRuntime
from edge_server.settings import EdgeSettings
from shared import lifecycle


def _grpc_credentials(settings: EdgeSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())]
    )


def _http_socket(settings: EdgeSettings) -> socket.socket:
    # Bound here, not by uvicorn, so that port 0 works and the real port can be announced.
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.http_port))
    return sock


async def serve(
    settings: EdgeSettings,
    stop: asyncio.Event | None = None,
    announce: Callable[..., None] = lifecycle.announce,
    runtime: EdgeRuntime | None = None,
) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT); `announce(event, **fields)` hears the
    lifecycle: listening (with the bound ports), ready, draining, stopped — or failed."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Only the main thread may install handlers; under a test's thread, `stop` does the job.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    runtime = runtime or EdgeRuntime(settings)
    grpc_server, health, grpc_port = build_grpc_server(runtime, _grpc_credentials(settings))
    await set_serving(health, False)
    await grpc_server.start()
    sock = _http_socket(settings)
    http_port = sock.getsockname()[1]
    limit_noisy_loggers()
    http_server = uvicorn.Server(
        uvicorn.Config(
            build_http_app(runtime),
            log_level="warning",
            lifespan="off",
            ssl_certfile=settings.tls_cert,
            ssl_keyfile=settings.tls_key,
            http=limited_protocol(
                max_connections=settings.http_max_connections,
                header_timeout_s=settings.http_header_timeout_s,
                refused=runtime.metrics.http_connections_refused,
            ),
            timeout_keep_alive=max(1, round(settings.http_keepalive_s)),
            # Shutdown waits this long for open HTTP connections at most.
            timeout_graceful_shutdown=max(1, round(settings.drain_seconds)),
        )
    )
    http_task = asyncio.ensure_future(http_server.serve(sockets=[sock]))
    announce("listening", grpc_port=grpc_port, http_port=http_port, tls=bool(settings.tls_cert))

    try:
        await runtime.start()
    except Exception as exc:
        announce("failed", error=str(exc))
        http_server.should_exit = True
        await asyncio.gather(grpc_server.stop(0), http_task)
        raise
    await set_serving(health, True)
    announce("ready", models=[f"{m.name}:{m.version}" for m in runtime.registry])

    await stop.wait()
    announce("draining", pending=runtime.pending)
    await set_serving(health, False)
    await asyncio.gather(
        runtime.drain(settings.drain_seconds), grpc_server.stop(settings.drain_seconds)
    )
    http_server.should_exit = True
    await http_task
    sock.close()
    announce("stopped")


def main(argv: list[str]) -> int:
    from pydantic_settings import CliApp

    settings = CliApp.run(EdgeSettings, cli_args=argv)
    if not settings.bundle:
        print("splitedge serve: give at least one --bundle DIR", file=sys.stderr)
        return 2
    asyncio.run(serve(settings))
    return 0
