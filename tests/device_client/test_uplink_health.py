"""The uplink against an edge that listens but is still loading: it watches the edge's health and
opens its stream as soon as the edge serves, instead of sleeping out a grown backoff (issue 12:
5.5 s of needless local fallback after the edge was ready)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from device_client.config import EdgeConfig
from device_client.grpc_uplink import SERVICE_NAME, GrpcUplink
from shared.wire import pb, pb_grpc
from tests.device_client.conftest import free_port


class QuietEdge(pb_grpc.SplitInferenceServicer):
    """Answers every frame OK; enough of an edge for the uplink's connection logic."""

    def Stream(
        self, requests: Iterator[pb.InferRequest], context: object
    ) -> Iterator[pb.InferResponse]:
        for request in requests:
            yield pb.InferResponse(
                frame_id=request.frame_id, status=pb.FrameStatus(code=pb.FRAME_OK)
            )


@pytest.fixture
def loading_edge() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(ThreadPoolExecutor(4))
    pb_grpc.add_SplitInferenceServicer_to_server(QuietEdge(), server)  # type: ignore[no-untyped-call]
    probes = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(probes, server)
    probes.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    yield f"127.0.0.1:{port}", probes
    server.stop(0)


def test_the_stream_opens_when_the_loading_edge_starts_serving(
    loading_edge: tuple[str, health.HealthServicer],
) -> None:
    target, probes = loading_edge
    # A steep backoff: after two refusals the old uplink slept 10 s before asking again.
    config = EdgeConfig(
        target=target,
        connect_timeout_s=2,
        backoff={"initial_s": 0.1, "multiplier": 10, "max_s": 30, "jitter": 0},
    )
    uplink = GrpcUplink(config)
    uplink.start()
    try:
        time.sleep(1.5)  # the edge loads; the uplink finds it not serving
        assert not uplink.available
        probes.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        assert uplink.wait_available(5.0)
        reply = uplink.send(pb.InferRequest(frame_id=7)).result(timeout=10)
        assert reply.status.code == pb.FRAME_OK
    finally:
        uplink.close()
