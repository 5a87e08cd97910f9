"""Edge server figures: overhead over the raw tail, throughput with batching off and on, peak RSS.

    python -m benchmarks.edge [--bundle DIR] [--frames 60] [--streams 1 4 16]

Everything in one run on this machine: the raw tail (in this process, no server), then a real
`splitedge serve` process on loopback per configuration, driven by gRPC streams. Prints JSON:
  overhead: per-frame loopback latency minus the tail compute the server reports, p50/p99, and
            as a ratio to the tail compute;
  throughput: frames/s with N concurrent streams, batching off (max batch 1) vs on, each as a
            ratio to the raw batched tail throughput;
  peak_rss_mb: the server process's high-water RSS after the largest load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from device_client.head import HeadRunner
from shared.messages import image_size, latent_message
from shared.wire import pb, pb_grpc

ROOT = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = ROOT / "bundles" / "demo-shapes"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def frame(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def random_bundle(out: Path) -> Path:
    import torch

    from split_models.export import export_bundle
    from split_models.split import SplitConfig, build_student
    from split_models.teachers import build_teacher

    torch.manual_seed(0)
    teachers = {"detection": ("tiny_fasterrcnn", build_teacher("tiny_fasterrcnn"))}
    student = build_student(teachers, SplitConfig())
    return export_bundle(student, teachers, out, name="bench", version="1", repeats=1)


def build_request(bundle: Path) -> tuple[pb.InferRequest, Any]:
    runner = HeadRunner.load(bundle)
    out = runner.run(frame())
    assert out.payload is not None
    geometry = out.head_input.geometry
    manifest = runner.bundle.manifest
    request = pb.InferRequest(
        model_name=manifest.name,
        branch_id=f"split-w{round(runner.width * 100):03d}",
        latent=latent_message(out.payload),
        original_size=image_size(geometry.original),
        input_size=image_size(geometry.input_size),
    )
    return request, (runner, out, geometry)


def raw_tail(bundle: Path, context: Any, repeats: int, threads: int) -> dict[str, Any]:
    """The tail alone, in process: ms per frame at batch 1 and the best batched frames/s."""
    import torch

    torch.set_num_threads(threads)
    from split_models.runtime import TailRuntime

    runner, out, geometry = context
    runtime = TailRuntime.load(bundle)
    latent = runner.codec.decode(out.payload)
    sizes, originals = [geometry.input_size], [geometry.original]
    runtime.run_latents([latent], sizes, originals)
    single = []
    for _ in range(repeats):
        started = time.perf_counter()
        runtime.run_latents([latent], sizes, originals)
        single.append((time.perf_counter() - started) * 1e3)
    batched = {}
    for batch in (1, 4, 8, 16):
        started = time.perf_counter()
        rounds = max(1, repeats // batch)
        for _ in range(rounds):
            runtime.run_latents([latent] * batch, sizes * batch, originals * batch)
        batched[batch] = rounds * batch / (time.perf_counter() - started)
    return {"tail_ms_p50": statistics.median(single), "batched_fps": batched}


class Server:
    """`splitedge serve` in its own process, with settings as env vars."""

    def __init__(self, bundle: Path, **settings: Any) -> None:
        env = os.environ | {f"SPLITEDGE_{k.upper()}": str(v) for k, v in settings.items()}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "splitedge",
                "serve",
                "--bundle",
                str(bundle),
                "--grpc-port",
                "0",
                "--http-port",
                "0",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        events = []
        for line in self.process.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] in ("ready", "failed"):
                break
        if events[-1]["event"] != "ready":
            raise RuntimeError(f"server did not start: {events}")
        self.target = f"127.0.0.1:{events[0]['grpc_port']}"

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        if self.process.stdout:
            self.process.stdout.close()


async def latencies(target: str, request: pb.InferRequest, frames: int) -> dict[str, float]:
    """One frame at a time: client-seen latency and its excess over the reported tail time."""
    async with grpc.aio.insecure_channel(target) as channel:
        client = pb_grpc.SplitInferenceStub(channel)
        await client.Infer(request)
        total, overhead, tail = [], [], []
        for _ in range(frames):
            started = time.perf_counter()
            response = await client.Infer(request)
            elapsed = (time.perf_counter() - started) * 1e3
            total.append(elapsed)
            tail.append(response.timings.tail_ms)
            overhead.append(elapsed - response.timings.tail_ms)
    return {
        "latency_ms_p50": percentile(total, 50),
        "latency_ms_p99": percentile(total, 99),
        "server_tail_ms_p50": percentile(tail, 50),
        "overhead_ms_p50": percentile(overhead, 50),
        "overhead_ms_p99": percentile(overhead, 99),
    }


async def throughput(target: str, request: pb.InferRequest, streams: int, frames: int) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        client = pb_grpc.SplitInferenceStub(channel)

        async def one(stream: int) -> int:
            def requests():
                for i in range(frames):
                    r = pb.InferRequest()
                    r.CopyFrom(request)
                    r.stream_id, r.frame_id = f"s{stream}", i
                    yield r

            answered = 0
            async for response in client.Stream(requests()):
                assert response.status.code == pb.FRAME_OK, response.status.message
                answered += 1
            return answered

        started = time.perf_counter()
        counts = await asyncio.gather(*(one(s) for s in range(streams)))
        elapsed = time.perf_counter() - started
    assert sum(counts) == streams * frames
    return sum(counts) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle", type=Path, default=DEMO_BUNDLE if DEMO_BUNDLE.exists() else None
    )
    parser.add_argument("--frames", type=int, default=60, help="frames per stream")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batch", type=int, default=16, help="max batch size when batching")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="max queue delay, batching")
    # One intra-op thread for the raw tail and the server alike: on 2 shared cores, torch's
    # OpenMP pool at 2 threads ran the same tail 60x slower whenever another process was busy.
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or random_bundle(Path(tmp) / "bench")
        request, context = build_request(bundle)
        raw = raw_tail(bundle, context, repeats=max(32, args.frames), threads=args.torch_threads)
        best_raw = max(raw["batched_fps"].values())
        report: dict[str, Any] = {
            "bundle": str(bundle),
            "frame": "240x320",
            "latent_bytes": len(request.latent.strings[0]) + len(request.latent.strings[1]),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.torch_threads,
            "raw_tail": raw,
        }
        configs = {
            "batching_off": {"max_batch_size": 1, "max_queue_delay_ms": 0},
            "batching_on": {"max_batch_size": args.batch, "max_queue_delay_ms": args.delay_ms},
        }
        report["throughput_fps"] = {}
        for name, settings in configs.items():
            server = Server(
                bundle,
                max_pending=256,
                stream_window=8,
                torch_threads=args.torch_threads,
                **settings,
            )
            try:
                if name == "batching_off":
                    lat = asyncio.run(latencies(server.target, request, args.frames))
                    tail = raw["tail_ms_p50"]
                    report["overhead"] = lat | {
                        "overhead_to_tail_ratio_p50": lat["overhead_ms_p50"] / tail,
                        "overhead_to_tail_ratio_p99": lat["overhead_ms_p99"] / tail,
                        "raw_tail_ms_p50": tail,
                    }
                rows = {}
                for streams in args.streams:
                    fps = asyncio.run(throughput(server.target, request, streams, args.frames))
                    rows[streams] = {"fps": fps, "ratio_to_raw_batched": fps / best_raw}
                report["throughput_fps"][name] = rows
                report.setdefault("peak_rss_mb", {})[name] = server.peak_rss_mb()
            finally:
                server.stop()
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
