"""Start-up and shutdown: liveness at once, readiness and gRPC health only once bundles are loaded
and warmed; on shutdown both flip first, admitted frames finish, then the process exits."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge_server.runtime import EdgeRuntime
from shared.wire import pb, pb_grpc
from splitedge.process import LifecycleError, SplitedgeProcess
from tests.edge_server.client import FrameEncoder
from tests.edge_server.conftest import RunningEdge, a_frame, edge_settings

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HeldLoadRuntime(EdgeRuntime):
    """Loads only when the test says so: start-up is observable without racing a clock."""

    release = threading.Event()

    def load(self) -> None:
        assert self.release.wait(60)
        super().load()


def test_readiness_and_health_flip_at_start_up_and_shutdown(bundle_dir) -> None:
    import asyncio

    from edge_server.app import serve

    settings = edge_settings(bundle_dir)
    runtime = HeldLoadRuntime(settings)
    edge = RunningEdge(settings, runtime=runtime)
    listening = threading.Event()

    def announce(event: str, **fields: object) -> None:
        edge.events.append({"event": event, **fields})
        if event == "listening":
            listening.set()

    async def main() -> None:
        edge.loop = asyncio.get_running_loop()
        edge.stop_event = asyncio.Event()
        await serve(settings, edge.stop_event, announce, runtime)

    edge.thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    edge.thread.start()
    assert listening.wait(60)

    http = httpx.Client(base_url=edge.http_url, timeout=30)
    channel = grpc.insecure_channel(edge.grpc_target)
    health = health_pb2_grpc.HealthStub(channel)
    # Starting: alive, not ready, not serving.
    assert http.get("/healthz").status_code == 200
    starting = http.get("/readyz")
    assert starting.status_code == 503 and "starting" in starting.json()["error"]
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == NOT_SERVING
    encoder = FrameEncoder(bundle_dir)
    client = pb_grpc.SplitInferenceStub(channel)
    with pytest.raises(grpc.RpcError) as early:  # a frame before ready: retry, not "not found"
        client.Infer(encoder.request(a_frame()), timeout=10)
    assert early.value.code() == grpc.StatusCode.UNAVAILABLE
    watch = health.Watch(health_pb2.HealthCheckRequest(service="splitedge.v1.SplitInference"))
    seen = [next(watch).status]

    HeldLoadRuntime.release.set()
    seen.append(next(watch).status)
    assert seen == [NOT_SERVING, SERVING]
    assert http.get("/readyz").status_code == 200

    # A frame in flight when shutdown begins is still answered.
    future = client.Infer.future(encoder.request(a_frame(480, 640)), timeout=60)
    deadline = time.monotonic() + 30
    while runtime.active == 0 and not future.done() and time.monotonic() < deadline:
        time.sleep(0.001)  # wait until the server has admitted the frame
    edge.stop()
    assert next(watch).status == NOT_SERVING  # flipped before the server went away
    assert future.result().status.code == pb.FRAME_OK
    events = [e["event"] for e in edge.events]
    assert events == ["listening", "ready", "draining", "stopped"]
    http.close()


def test_cli_process_serves_with_env_flags_and_exits_cleanly_on_sigterm(
    bundle_dir, tmp_path
) -> None:
    env = {"SPLITEDGE_MAX_BATCH_SIZE": "3", "SPLITEDGE_WARMUP": "false"}
    process = SplitedgeProcess(
        ["serve", "--bundle", bundle_dir, "--grpc-port", "0", "--http-port", "0"],
        tmp_path / "edge.log",
        env=env,
    ).start()
    try:
        ports = process.wait_for("ready")["listening"]
        assert [e["event"] for e in process.events] == ["listening", "ready"]
        with httpx.Client(base_url=f"http://127.0.0.1:{ports['http_port']}") as http:
            assert http.get("/readyz").status_code == 200
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc_port']}") as channel:
            answer = pb_grpc.SplitInferenceStub(channel).Infer(
                FrameEncoder(bundle_dir).request(a_frame()), timeout=60
            )
        assert answer.status.code == pb.FRAME_OK
        assert answer.timings.batch_size == 1
        assert process.stop() == 0
        events = [e["event"] for e in process.events]
        assert events == ["listening", "ready", "draining", "stopped"]
    finally:
        process.kill()


def test_both_processes_announce_the_same_way_on_stderr(tmp_path) -> None:
    """The edge and the device write their lifecycle events as `shared.lifecycle` lines on
    stderr, never on stdout (the device's stdout is its outcome sink)."""
    for args in (["serve", "--grpc-port", "not-a-port", "--bundle", "x"], ["device", "run",
                 "--config", str(tmp_path / "missing.yaml")]):
        result = subprocess.run(
            [sys.executable, "-m", "splitedge", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert '"event"' not in result.stdout, (args, result.stdout)
    device = SplitedgeProcess(
        ["device", "run", "--config", tmp_path / "missing.yaml"], tmp_path / "device.log"
    ).start()
    with pytest.raises(LifecycleError, match="failed before 'ready'"):
        device.wait_for("ready", 120)
    assert device.wait(60) == 2 and device.event("failed")["kind"] == "config"


def test_cli_rejects_bad_flags_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "splitedge", "serve", "--grpc-port", "not-a-port"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "grpc" in (result.stderr + result.stdout).lower()
    missing = subprocess.run(
        [sys.executable, "-m", "splitedge", "serve"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "--bundle" in missing.stderr
