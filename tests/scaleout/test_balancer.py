"""Replicas behind the balancer, as devices and operators meet them: streams spread and stay put,
bundles are the same bytes from any replica, a killed replica's devices move with every frame
accounted, a draining replica answers what it admitted, a rolling restart loses no frame.

Which replica answered is read two ways that must agree: the `x-splitedge-replica` header the
balancer adds, and each replica's own /metrics counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.lb.loopback import Replica, ScaleOut, wait_for
from shared.wire import pb, pb_grpc
from tests.device_client.conftest import DaemonProcess
from tests.edge_server.client import FrameEncoder
from tests.scaleout.conftest import BUNDLE, MODEL, Fleet

REPLICA_HEADER = "x-splitedge-replica"
# Drops that are the device's own doing, not the edge's: the live camera outran a busy device
# (2 shared cores), or frames captured after the device itself was told to stop.
DEVICE_SIDE_DROPS = ("behind", "shutdown")


@pytest.fixture(scope="module")
def encoder() -> FrameEncoder:
    return FrameEncoder(BUNDLE)


@pytest.fixture(scope="module")
def template(encoder: FrameEncoder) -> pb.InferRequest:
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return encoder.request(image)


def frame_request(template: pb.InferRequest, stream_id: str, frame_id: int) -> pb.InferRequest:
    request = pb.InferRequest()
    request.CopyFrom(template)
    request.stream_id, request.frame_id = stream_id, frame_id
    return request


@dataclass
class StreamLog:
    """One client stream through the balancer: where it landed and what came back, in order."""

    call: Any
    stream_id: str
    replica: str = ""
    replies: list[tuple[int, int]] = field(default_factory=list)  # (frame_id, status code)
    ended: grpc.StatusCode | None = None

    async def send(self, template: pb.InferRequest, *frame_ids: int) -> None:
        for frame_id in frame_ids:
            await self.call.write(frame_request(template, self.stream_id, frame_id))

    async def receive(self, count: int) -> None:
        for _ in range(count):
            reply = await self.call.read()
            assert reply is not grpc.aio.EOF, f"{self.stream_id}: stream ended early"
            self.replies.append((reply.frame_id, reply.status.code))
        if not self.replica:
            metadata = dict(await self.call.initial_metadata())
            self.replica = str(metadata.get(REPLICA_HEADER, ""))

    async def receive_rest(self) -> None:
        """Read until the stream ends, however it ends (the edge's close, or the balancer's)."""
        try:
            while (reply := await self.call.read()) is not grpc.aio.EOF:
                self.replies.append((reply.frame_id, reply.status.code))
        except grpc.aio.AioRpcError as exc:
            self.ended = exc.code()
        else:
            self.ended = await self.call.code()


async def open_streams(
    stub: pb_grpc.SplitInferenceStub, template: pb.InferRequest, count: int, prefix: str
) -> list[StreamLog]:
    """`count` streams open at once, each answered one frame (so each knows its replica)."""
    streams = [StreamLog(stub.Stream(), f"{prefix}{i}") for i in range(count)]
    for stream in streams:
        await stream.send(template, 0)
    await asyncio.gather(*(s.receive(1) for s in streams))
    return streams


# -- spread and stickiness ------------------------------------------------------------------------
STREAMS, FRAMES = 9, 6


def test_streams_spread_over_replicas_and_each_stays_on_one_in_order(
    fleet: Fleet, template: pb.InferRequest
) -> None:
    before = fleet.ok_frames()

    async def run() -> list[StreamLog]:
        async with grpc.aio.insecure_channel(fleet.balancer.grpc_target) as channel:
            stub = pb_grpc.SplitInferenceStub(channel)  # type: ignore[no-untyped-call]
            streams = await open_streams(stub, template, STREAMS, "spread")
            for stream in streams:  # all open at once: the balancer places each new one
                await stream.send(template, *range(1, FRAMES))
                await stream.call.done_writing()
            await asyncio.gather(*(s.receive_rest() for s in streams))
            return streams

    streams = asyncio.run(run())
    after = fleet.ok_frames()

    placed = Counter(s.replica for s in streams)
    assert set(placed) == {r.name for r in fleet.replicas}, placed
    # leastconn over streams that are all open together: an even split
    assert min(placed.values()) >= STREAMS // len(fleet.replicas) - 1, placed
    for stream in streams:
        assert stream.ended == grpc.StatusCode.OK, stream
        assert [f for f, _ in stream.replies] == list(range(FRAMES)), stream.replies
        assert {code for _, code in stream.replies} == {pb.FRAME_OK}, stream.replies
    # Each replica counted exactly the frames of the streams the header puts on it: every frame
    # of a stream went to the replica that answered its first.
    for name in placed:
        assert after[name] - before[name] == FRAMES * placed[name], (name, before, after)


# -- bundles --------------------------------------------------------------------------------------
def test_every_replica_serves_the_bundle_with_one_etag(fleet: Fleet) -> None:
    seen: dict[str, set[str]] = {}
    with httpx.Client(base_url=fleet.balancer.http_url, timeout=30) as http:
        for _ in range(6):  # round robin: every replica answers
            response = http.get(f"/v1/models/{MODEL}/bundle")
            assert response.status_code == 200, response.text
            body_sha = hashlib.sha256(response.content).hexdigest()
            assert response.headers["x-bundle-sha256"] == body_sha
            seen.setdefault(response.headers[REPLICA_HEADER], set()).add(response.headers["etag"])
        assert set(seen) == {r.name for r in fleet.replicas}, seen
        etags = set().union(*seen.values())
        assert len(etags) == 1, f"replicas disagree on the bundle's ETag: {seen}"

        # The ETag is a function of the bundle's bytes, not of when a replica built its archive:
        # a replica restarted later (or a new one scaled in) must agree with the old ones.
        from edge_server.models import BundleArchive
        from shared.bundle import load_bundle

        time.sleep(1.1)  # a later second than any replica's build
        assert etags == {f'"{BundleArchive.build(load_bundle(BUNDLE)).sha256}"'}

        # A device that holds the bundle gets 304 from whichever replica answers.
        (etag,) = etags
        for _ in range(2):
            cached = http.get(f"/v1/models/{MODEL}/bundle", headers={"If-None-Match": etag})
            assert cached.status_code == 304, cached.headers.get(REPLICA_HEADER)


# -- devices through the balancer -----------------------------------------------------------------
def device_config(fleet: Fleet, name: str, seed: int) -> dict[str, Any]:
    return {
        "device_id": name,
        # Downloaded through the balancer, verified and cached, as a device at a site would.
        "bundle": {"url": fleet.balancer.http_url, "name": MODEL},
        "source": {"kind": "generated", "live": True, "fps": 10.0, "seed": seed},
        "edge": {
            "target": fleet.balancer.grpc_target,
            "window": 4,
            "sla_ms": 3000,
            "connect_timeout_s": 1.0,
            "backoff": {"initial_s": 0.1, "max_s": 0.5},
        },
        "pipeline": {"prefilter": {"enabled": False}, "on_edge_failure": "fallback"},
    }


class Devices:
    """Real `splitedge device run` processes; every one is killed at the end of the test."""

    def __init__(self, fleet: Fleet, workdir: Path, count: int) -> None:
        self.all: list[DaemonProcess] = []
        for i in range(count):
            folder = workdir / f"cam{i}"
            folder.mkdir()
            self.all.append(DaemonProcess(folder, device_config(fleet, f"cam{i}", i)))

    def start(self) -> Devices:
        # Readiness is judged by results, not by the `ready` line: the daemon prints that line in
        # two writes, and the uplink thread's log line can land between them (reported).
        for device in self.all:
            device.start()
        return self

    @staticmethod
    def edge_results(device: DaemonProcess, after: int = -1) -> int:
        return sum(o["kind"] == "edge" and o["frame_id"] > after for o in device.outcomes())

    def last_frame(self) -> dict[str, int]:
        return {
            d.workdir.name: max((o["frame_id"] for o in d.outcomes()), default=-1) for d in self.all
        }

    def wait_edge_results(self, count: int, after: dict[str, int] | None = None) -> None:
        marks = after or {}

        def enough() -> bool:
            for device in self.all:
                assert device.process is not None
                if device.process.poll() is not None:
                    raise AssertionError(f"{device.workdir.name} exited:\n{device.log[-3000:]}")
            return all(
                self.edge_results(d, marks.get(d.workdir.name, -1)) >= count for d in self.all
            )

        try:
            wait_for(enough, 90, f"{count} edge results on every device")
        except TimeoutError as exc:
            logs = "\n".join(f"{d.workdir.name}: {d.log[-1500:]}" for d in self.all)
            raise AssertionError(f"{exc}\n{logs}") from None

    def stop(self) -> list[dict[str, Any]]:
        """SIGTERM, wait, and check each device's books: one outcome per frame, none lost."""
        for device in self.all:
            device.terminate()
        summaries = []
        for device in self.all:
            assert device.wait_exit() == 0, device.log[-3000:]
            stopped = device.event("stopped")
            assert stopped is not None, device.log[-3000:]
            assert stopped["frames"] == stopped["settled"], stopped
            ids = Counter(o["frame_id"] for o in device.outcomes())
            assert sorted(ids) == list(range(stopped["frames"])), "frames without an outcome"
            assert max(ids.values()) == 1, "a frame with two outcomes"
            lost = [
                o
                for o in device.outcomes()
                if o["kind"] == "dropped" and o["reason"] not in DEVICE_SIDE_DROPS
            ]
            assert not lost, lost[:5]
            summaries.append(stopped)
        return summaries

    def kill(self) -> None:
        for device in self.all:
            device.kill()


# -- draining under load, failure -----------------------------------------------------------------
# These three use the replicas as the previous test left them (3 up → 2 → 1 → 0): no restarts,
# which cost 10-20 s each on two busy cores. Run alone, each finds all three up.
def test_a_replica_drained_under_load_loses_no_device_frame(
    scale_out: ScaleOut, tmp_path: Path
) -> None:
    """The risky half of a rolling restart's step (benchmarks/scaleout.py times whole rollouts):
    SIGTERM the replica holding the most device streams; its devices move, none loses a frame."""
    fleet = Fleet(scale_out).require(2)
    devices = Devices(fleet, tmp_path, 2)
    try:
        devices.start().wait_edge_results(3)
        sessions = fleet.balancer.sessions()
        replica = fleet.scale.replica(max(sessions, key=lambda name: sessions[name]))
        assert sessions[replica.name] >= 1, sessions
        replica.stop()  # drains: readiness off, admitted frames answered, streams cut, exit
        assert replica.process is not None and replica.process.returncode == 0
        devices.wait_edge_results(3, after=devices.last_frame())
        summaries = devices.stop()  # checks: one outcome per frame, none dropped by the edge
    finally:
        devices.kill()
    assert any(s["reconnects"] >= 1 for s in summaries), summaries


def test_killing_a_replica_moves_its_devices_with_every_frame_accounted(
    scale_out: ScaleOut, tmp_path: Path
) -> None:
    fleet = Fleet(scale_out).require(2)
    devices = Devices(fleet, tmp_path, 3)
    try:
        devices.start().wait_edge_results(3)
        sessions = fleet.balancer.sessions()
        victim = fleet.scale.replica(max(sessions, key=lambda name: sessions[name]))
        assert sessions[victim.name] >= 1, sessions
        before = fleet.ok_frames()
        victim.kill()
        fleet.balancer.wait_status(victim.name, "DOWN")
        # Marked once the victim is gone, not before: the frames it had in flight when marked
        # were answered by it, then counted by no survivor (a 1-thread run caught one).
        marks = devices.last_frame()
        devices.wait_edge_results(3, after=marks)
        served_after = sum(devices.edge_results(d, marks[d.workdir.name]) for d in devices.all)
        after = fleet.ok_frames()
        assert sum(after[name] - before[name] for name in after) >= served_after, (before, after)
        summaries = devices.stop()
    finally:
        devices.kill()
    moved = [s for s in summaries if s["reconnects"] >= 1]
    assert moved, f"no device reconnected after {victim.name} was killed: {summaries}"


# -- draining -------------------------------------------------------------------------------------
def test_a_draining_replica_answers_the_frames_it_admitted(
    scale_out: ScaleOut, template: pb.InferRequest
) -> None:
    fleet = Fleet(scale_out).require(1)
    held = 6

    async def run() -> tuple[Replica, StreamLog, StreamLog | grpc.StatusCode]:
        async with grpc.aio.insecure_channel(fleet.balancer.grpc_target) as channel:
            stub = pb_grpc.SplitInferenceStub(channel)  # type: ignore[no-untyped-call]
            (probe,) = await open_streams(stub, template, 1, "drain")
            replica = fleet.scale.replica(probe.replica)
            await probe.send(template, *range(1, held + 1))
            # Batches wait 300 ms to fill (conftest): the frames are admitted, unanswered.
            await asyncio.to_thread(
                wait_for,
                lambda: replica.metric("splitedge_pending_frames") >= held,
                5,
                f"{replica.name} to admit the frames",
            )
            replica.terminate()
            await probe.receive_rest()
            await asyncio.to_thread(replica.wait, 30)
            await asyncio.to_thread(fleet.balancer.wait_status, replica.name, "DOWN")
            if not any(r.running for r in fleet.replicas):
                # None left: a device's first question, the health check, gets a clear answer.
                health = health_pb2_grpc.HealthStub(channel)
                try:
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                except grpc.aio.AioRpcError as exc:
                    return replica, probe, exc.code()
                raise AssertionError("the balancer answered a health check with no replica up")
            (fresh,) = await open_streams(stub, template, 1, "after")
            await fresh.call.done_writing()
            await fresh.receive_rest()
            return replica, probe, fresh

    replica, probe, after = asyncio.run(run())
    assert replica.process is not None and replica.process.returncode == 0
    draining = replica.event("draining")
    assert draining is not None and draining["pending"] >= 1, replica.events
    # Every frame admitted before the SIGTERM was computed and answered, in order, once.
    assert probe.replies == [(f, pb.FRAME_OK) for f in range(held + 1)], (probe, replica.events)
    # New streams go elsewhere; with no replica left, the balancer says so.
    if any(r.running for r in fleet.replicas):
        assert isinstance(after, StreamLog), after
        assert after.replica != replica.name and after.replies == [(0, pb.FRAME_OK)], after
    else:
        assert after == grpc.StatusCode.UNAVAILABLE, after
