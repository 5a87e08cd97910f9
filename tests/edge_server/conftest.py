"""A real edge server on loopback ports, in a background thread of this process, serving a small
real bundle (tiny Faster R-CNN detection + tiny ResNet classification tails on one latent)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_server.app import serve  # noqa: E402
from edge_server.runtime import EdgeRuntime  # noqa: E402
from edge_server.settings import EdgeSettings  # noqa: E402
from tests.bundles import Bundles, frame  # noqa: E402


@pytest.fixture(scope="session")
def bundle_dir(bundles: Bundles) -> Path:
    return bundles.demo.root


@dataclass
class RunningEdge:
    settings: EdgeSettings
    events: list[dict[str, Any]] = field(default_factory=list)
    runtime: EdgeRuntime | None = None
    loop: asyncio.AbstractEventLoop | None = None
    stop_event: asyncio.Event | None = None
    thread: threading.Thread | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None

    @property
    def grpc_port(self) -> int:
        return int(self.event("listening")["grpc_port"])

    @property
    def http_port(self) -> int:
        return int(self.event("listening")["http_port"])

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.settings.tls_cert else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def runtime_metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples in the server's registry whose labels include `labels`."""
        from prometheus_client import generate_latest
        from prometheus_client.parser import text_string_to_metric_families

        assert self.runtime is not None
        text = generate_latest(self.runtime.metrics.registry).decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def event(self, name: str) -> dict[str, Any]:
        return next(e for e in self.events if e["event"] == name)

    def stop(self) -> None:
        if self.loop and self.stop_event and self.thread and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(timeout=30)


def start_edge(settings: EdgeSettings) -> RunningEdge:
    edge = RunningEdge(settings, runtime=EdgeRuntime(settings))

    def announce(event: str, **fields: Any) -> None:
        edge.events.append({"event": event, **fields})
        if event in ("ready", "failed"):
            edge.ready.set()

    async def main() -> None:
        edge.loop = asyncio.get_running_loop()
        edge.stop_event = asyncio.Event()
        await serve(settings, edge.stop_event, announce, edge.runtime)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by the fixture
            edge.failure = exc
            edge.ready.set()

    edge.thread = threading.Thread(target=run, name="edge", daemon=True)
    edge.thread.start()
    assert edge.ready.wait(120), "edge server did not become ready"
    if edge.failure:
        raise edge.failure
    return edge


def edge_settings(bundle: Path | list[Path], **overrides: Any) -> EdgeSettings:
    bundles = bundle if isinstance(bundle, list) else [bundle]
    options: dict[str, Any] = {"bundle": bundles, "grpc_port": 0, "http_port": 0} | overrides
    return EdgeSettings(**options)


@pytest.fixture(scope="module")
def edge(bundle_dir: Path) -> Iterator[RunningEdge]:
    """Batches of one: results equal in-process calls frame by frame. (An untrained detector's
    near-tied boxes can swap through NMS between batch shapes, so batching gets its own server.)"""
    running = start_edge(edge_settings(bundle_dir, max_batch_size=1))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def batching_edge(bundle_dir: Path) -> Iterator[RunningEdge]:
    running = start_edge(edge_settings(bundle_dir, max_batch_size=8, max_queue_delay_ms=5.0))
    yield running
    running.stop()


def a_frame(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    return frame(height, width, seed)
