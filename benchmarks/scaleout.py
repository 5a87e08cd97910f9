"""Scale-out figures: edge replicas behind HAProxy on loopback vs one replica direct, in one run.

    python -m benchmarks.scaleout [--bundle DIR] [--streams 24] [--frames 40] [--devices 4]

Three `splitedge serve` replicas and HAProxy (deploy/lb/loopback.py), the same processes for
every figure; replicas leave the rotation through HAProxy's runtime API (`maint`). Prints JSON:
  throughput_fps: `streams` concurrent gRPC streams of split latents (the bundle's widest split
      branch, real head output), each sending `frames` frames: one replica direct, then 1, 2 and
      3 replicas behind the balancer, with each replica's share from its own /metrics;
  latency_ms: one frame at a time on one stream, p50/p99, direct vs through the balancer to the
      same replica, in alternating blocks; `added` is the balancer's share;
  uplink_failover: the device's uplink alone (in this process) through the balancer when its
      replica is SIGKILLed: stream lost, open again elsewhere, first frame answered (ms);
  rolling_restart: real device daemons (`splitedge device run`, live generated camera) stream
      through the balancer while every replica in turn is SIGTERMed (drain), restarted, and back
      in rotation: frames, outcomes by kind and reason, frames lost (no outcome, two outcomes, or
      dropped on the edge path), frames answered locally while devices moved;
  failover: the same devices when the replica holding the most streams is SIGKILLed: time from
      the kill to the balancer marking it down, and to each moved device's next edge result (it
      includes the device's reconnect backoff, 0.1 s ± 20 %, and up to one frame interval);
      the same books.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import yaml

from benchmarks.edge import DEMO_BUNDLE, build_request, percentile, throughput
from deploy.lb.loopback import Balancer, Replica, ScaleOut, wait_for
from shared.wire import pb, pb_grpc
from splitedge.process import SplitedgeProcess

ROOT = Path(__file__).resolve().parent.parent
EDGE_REASONS = ("edge_unavailable", "deadline_missed", "edge_error")
DEVICE_SIDE_DROPS = ("behind", "shutdown")  # the device's own CPU, or its own stop


def in_rotation(balancer: Balancer, replicas: list[Replica], count: int) -> None:
    """The first `count` replicas take new streams; the rest are in maintenance."""
    for i, replica in enumerate(replicas):
        balancer.set_state(replica.name, "ready" if i < count else "maint")
    wait_for(
        lambda: sum(s == "UP" for s in balancer.status().values()) == count,
        30,
        f"{count} replicas in rotation",
    )


def ok_frames(replicas: list[Replica]) -> dict[str, float]:
    return {
        r.name: r.metric("splitedge_requests_total", status="ok") for r in replicas if r.running
    }


def throughput_row(
    target: str, replicas: list[Replica], request: pb.InferRequest, streams: int, frames: int
) -> dict[str, Any]:
    before = ok_frames(replicas)
    fps = asyncio.run(throughput(target, request, streams, frames))
    after = ok_frames(replicas)
    share = {name: int(after[name] - before[name]) for name in after}
    return {"fps": round(fps, 1), "frames_per_replica": share}


async def one_at_a_time(target: str, request: pb.InferRequest, frames: int) -> list[float]:
    """Client-seen ms per frame on one stream with one frame in flight."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SplitInferenceStub(channel)  # type: ignore[no-untyped-call]
        call = stub.Stream()
        samples = []
        for i in range(frames + 5):
            message = pb.InferRequest()
            message.CopyFrom(request)
            message.stream_id, message.frame_id = "latency", i
            started = time.perf_counter()
            await call.write(message)
            reply = await call.read()
            elapsed = (time.perf_counter() - started) * 1e3
            assert reply.status.code == pb.FRAME_OK, reply.status.message
            if i >= 5:  # warm-up: channel, stream, first batch
                samples.append(elapsed)
        await call.done_writing()
        return samples


def latency(
    direct: str, balanced: str, request: pb.InferRequest, frames: int, blocks: int = 4
) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"direct": [], "balancer": []}
    for _ in range(blocks):  # alternate, so load from elsewhere on the box hits both alike
        samples["direct"] += asyncio.run(one_at_a_time(direct, request, frames // blocks))
        samples["balancer"] += asyncio.run(one_at_a_time(balanced, request, frames // blocks))
    row: dict[str, Any] = {}
    for name, values in samples.items():
        row[name] = {"p50": percentile(values, 50), "p99": percentile(values, 99)}
    row["added"] = {q: row["balancer"][q] - row["direct"][q] for q in ("p50", "p99")}
    row["frames_each"] = len(samples["direct"])
    return row


class Device:
    """One `splitedge device run` with a live generated camera and a JSON-lines outcome file."""

    def __init__(self, workdir: Path, name: str, balancer: Balancer, fps: float) -> None:
        workdir.mkdir(parents=True)
        self.name = name
        self.outcomes_path = workdir / "outcomes.jsonl"
        config = {
            "device_id": name,
            "state_dir": str(workdir / "state"),
            "bundle": {"url": balancer.http_url, "name": "demo-shapes"},
            "source": {"kind": "generated", "live": True, "fps": fps, "seed": len(name)},
            "edge": {
                "target": balancer.grpc_target,
                "window": 4,
                "sla_ms": 3000,  # generous: the figures are about replicas going, not CPU
                "connect_timeout_s": 1.0,
                "backoff": {"initial_s": 0.1, "max_s": 1.0},
            },
            "pipeline": {"prefilter": {"enabled": False}, "on_edge_failure": "fallback"},
            "sinks": [{"kind": "file", "path": str(self.outcomes_path)}],
            "metrics": {"enabled": False},
            "log_level": "warning",
        }
        self.config = workdir / "device.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = workdir / "device.log"
        self.process = SplitedgeProcess(["device", "run", "--config", self.config], self.log)

    def start(self) -> Device:
        self.process.start()
        return self

    def outcomes(self) -> list[dict[str, Any]]:
        if not self.outcomes_path.exists():
            return []
        lines = self.outcomes_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def stop(self) -> dict[str, Any]:
        """SIGTERM, wait; the daemon's `stopped` summary (a lifecycle event)."""
        self.process.stop(60)
        stopped = self.process.event("stopped")
        if stopped is None:
            raise RuntimeError(f"{self.name} did not report `stopped`:\n{self.process.log[-2000:]}")
        return stopped


def finished_at(outcome: dict[str, Any]) -> float:
    return float(outcome["capture_time_unix_ns"]) / 1e9 + outcome["timings_ms"]["total"] / 1e3


def books(devices: list[Device], summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Every frame's outcome across the devices: what a user counts after an incident."""
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    missing = duplicated = 0
    for device, summary in zip(devices, summaries, strict=True):
        outcomes = device.outcomes()
        ids = Counter(o["frame_id"] for o in outcomes)
        missing += len(set(range(summary["frames"])) - set(ids))
        duplicated += sum(n - 1 for n in ids.values() if n > 1)
        for outcome in outcomes:
            kinds[outcome["kind"]] += 1
            if outcome["reason"]:
                reasons[f"{outcome['kind']}:{outcome['reason']}"] += 1
    dropped_by_edge = sum(
        n
        for key, n in reasons.items()
        if key.startswith("dropped:") and key.split(":", 1)[1] not in DEVICE_SIDE_DROPS
    )
    local_for_edge = sum(
        n
        for key, n in reasons.items()
        if key.startswith("local:") and key.split(":", 1)[1].startswith(EDGE_REASONS)
    )
    return {
        "frames": sum(s["frames"] for s in summaries),
        "outcomes": dict(kinds),
        "reasons": dict(reasons),
        "frames_without_an_outcome": missing,
        "frames_with_two_outcomes": duplicated,
        "frames_lost": missing + duplicated + dropped_by_edge,
        "answered_locally_instead_of_by_the_edge": local_for_edge,
        "reconnects": sum(s["reconnects"] for s in summaries),
    }


def wait_edge_results(devices: list[Device], after: float, count: int = 3) -> None:
    wait_for(
        lambda: all(
            sum(o["kind"] == "edge" and finished_at(o) > after for o in d.outcomes()) >= count
            for d in devices
        ),
        120,
        "edge results on every device",
    )


def uplink_failover(fleet: ScaleOut, request: pb.InferRequest) -> dict[str, Any]:
    """The device's own uplink (GrpcUplink, in this process) sending a frame every 20 ms through
    the balancer when its replica is SIGKILLed: when the stream is seen lost, when it is open
    again (on another replica), and the first frame answered after the kill. No device pipeline,
    so no local fallback or camera pacing in the figure. The victim is restarted afterwards."""
    from device_client.config import BackoffConfig, EdgeConfig
    from device_client.grpc_uplink import GrpcUplink

    states: list[tuple[float, bool]] = []
    config = EdgeConfig(
        target=fleet.balancer.grpc_target,
        connect_timeout_s=1.0,
        backoff=BackoffConfig(initial_s=0.1, max_s=1.0),
    )
    before = fleet.balancer.sessions()
    uplink = GrpcUplink(config, on_state=lambda up: states.append((time.monotonic(), up)))
    uplink.start()
    answered: list[float] = []
    sending = threading.Event()
    sending.set()

    def send() -> None:
        frame_id = 0
        while sending.is_set():
            frame_id += 1
            message = pb.InferRequest()
            message.CopyFrom(request)
            message.stream_id, message.frame_id = "uplink-failover", frame_id
            try:
                if uplink.send(message).result(timeout=5).status.code == pb.FRAME_OK:
                    answered.append(time.monotonic())
            except Exception:  # lost with its stream, or no stream yet: the next one goes
                pass
            time.sleep(0.02)

    try:
        assert uplink.wait_available(30), "the uplink did not connect through the balancer"
        after = fleet.balancer.sessions()
        victim = fleet.replica(max(after, key=lambda name: after[name] - before.get(name, 0)))
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        wait_for(lambda: len(answered) >= 10, 30, "frames answered before the kill")
        killed = time.monotonic()
        victim.kill()
        wait_for(lambda: any(t > killed for t in answered), 30, "a frame answered after the kill")
        sending.clear()
        sender.join(timeout=10)
    finally:
        uplink.close()
    fleet.restart(victim)

    def since(moment: float) -> float:
        return round((moment - killed) * 1e3, 1)

    return {
        "replica_killed": victim.name,
        "stream_lost_ms": since(next(t for t, up in states if not up and t > killed)),
        "stream_open_again_ms": since(next(t for t, up in states if up and t > killed)),
        "first_frame_answered_ms": since(min(t for t in answered if t > killed)),
    }


def rolling_restart(fleet: ScaleOut, workdir: Path, count: int, fps: float) -> dict[str, Any]:
    devices = [
        Device(workdir / f"roll{i}", f"roll{i}", fleet.balancer, fps).start() for i in range(count)
    ]
    try:
        wait_edge_results(devices, 0)
        started = time.monotonic()
        for replica in fleet.replicas:  # one at a time, as a Deployment with maxUnavailable 1
            replica.stop()
            fleet.restart(replica)
        took = time.monotonic() - started
        wait_edge_results(devices, time.time())
    finally:
        summaries = [d.stop() for d in devices]
    return {"replicas_restarted": len(fleet.replicas), "seconds": round(took, 1)} | books(
        devices, summaries
    )


def failover(fleet: ScaleOut, workdir: Path, count: int, fps: float) -> dict[str, Any]:
    devices = [
        Device(workdir / f"fail{i}", f"fail{i}", fleet.balancer, fps).start() for i in range(count)
    ]
    try:
        wait_edge_results(devices, 0)
        sessions = fleet.balancer.sessions()
        victim = fleet.replica(max(sessions, key=lambda name: sessions[name]))
        killed = time.time()
        victim.kill()
        wait_for(
            lambda: all(v == "DOWN" for v in (fleet.balancer.status().get(victim.name),)),
            30,
            "the balancer to mark the victim down",
        )
        marked_down = time.time() - killed
        wait_edge_results(devices, time.time())
    finally:
        summaries = [d.stop() for d in devices]
    moved = []
    for device, summary in zip(devices, summaries, strict=True):
        if summary["reconnects"] == 0:
            continue  # its stream was on another replica
        back = min(
            finished_at(o)
            for o in device.outcomes()
            if o["kind"] == "edge" and finished_at(o) > killed
        )
        moved.append(round((back - killed) * 1e3, 1))
    return {
        "replica_killed": victim.name,
        "streams_on_it": sessions[victim.name],  # devices' streams (+ a health check, rarely)
        "balancer_marked_it_down_s": round(marked_down, 2),
        "moved_devices_first_edge_result_ms": sorted(moved),
    } | books(devices, summaries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    parser.add_argument("--streams", type=int, default=24, help="concurrent streams (throughput)")
    parser.add_argument("--frames", type=int, default=40, help="frames per stream (throughput)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (median)")
    parser.add_argument("--latency-frames", type=int, default=200)
    parser.add_argument("--devices", type=int, default=4, help="device daemons (restart/failover)")
    parser.add_argument("--fps", type=float, default=10.0, help="each device's camera rate")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    request, _ = build_request(args.bundle)
    serve_args = [
        "--torch-threads",
        str(args.torch_threads),
        "--max-batch-size",
        "16",
        "--max-pending",
        "512",
        "--stream-window",
        "8",
        "--drain-seconds",
        "5",
    ]
    report: dict[str, Any] = {
        "bundle": str(args.bundle),
        "branch": request.branch_id,
        "request_bytes": request.ByteSize(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "torch_threads_per_replica": args.torch_threads,
        "streams": args.streams,
        "frames_per_stream": args.frames,
        "rounds": args.rounds,
    }
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as scratch:
        workdir = Path(scratch)
        with ScaleOut([args.bundle], 3, workdir, serve_args, check_interval="1s") as fleet:
            lb, replicas = fleet.balancer, fleet.replicas
            # Warm every replica's tails and batch shapes before anything is timed.
            for replica in replicas:
                asyncio.run(throughput(replica.grpc_target, request, 4, 10))
            # Rounds in rotated order, so a burst of load from elsewhere on the box does not land
            # on one configuration only; the median of the rounds is the figure.
            targets = {"direct_1": (replicas[0].grpc_target, 1)} | {
                f"balancer_{n}": (lb.grpc_target, n) for n in (1, 2, 3)
            }
            samples: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            names = list(targets)
            for round_ in range(args.rounds):
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    target, count = targets[name]
                    in_rotation(lb, replicas, count)
                    samples[name].append(
                        throughput_row(target, replicas, request, args.streams, args.frames)
                    )
            rows: dict[str, Any] = {
                name: {
                    "fps_median": statistics.median(r["fps"] for r in runs),
                    "fps_runs": [r["fps"] for r in runs],
                    "frames_per_replica_last_run": runs[-1]["frames_per_replica"],
                }
                for name, runs in samples.items()
            }
            report["throughput_fps"] = rows

            in_rotation(lb, replicas, 1)
            report["latency_ms"] = latency(
                replicas[0].grpc_target, lb.grpc_target, request, args.latency_frames
            )
            in_rotation(lb, replicas, 3)
            report["uplink_failover"] = uplink_failover(fleet, request)
            report["rolling_restart"] = rolling_restart(fleet, workdir, args.devices, args.fps)
            report["failover"] = failover(fleet, workdir, args.devices, args.fps)
        report["load_average_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
