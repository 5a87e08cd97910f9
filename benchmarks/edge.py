"""Edge server figures: overhead over the raw tail, throughput with batching off and on, peak RSS.

    python -m benchmarks.edge [--bundle DIR] [--frames 60] [--streams 1 4 16]

Everything in one run on this machine: the raw tail (in this process, no server), then a real
`splitedge serve` process on loopback per configuration, driven by gRPC streams. Prints JSON:
  overhead: per-frame loopback latency minus the tail compute the server reports, p50/p99, and
            as a ratio to the tail compute;
  throughput: frames/s with N concurrent streams, batching off (max batch 1) vs on, each as a
            ratio to the raw batched tail throughput (measured before the servers and again
            after; `raw_drift` says how much the box's speed moved in between), and the
            server's mean batch size;
  peak_rss_mb: the server process's high-water RSS after the largest load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from device_client.head import HeadRunner
from shared.bundle import split_branch_id
from shared.messages import FrameRequest, infer_request
from shared.wire import pb, pb_grpc
from splitedge.process import SplitedgeProcess

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
    request = infer_request(
        FrameRequest(
            manifest.name,
            branch_id=split_branch_id(runner.width),
            original_size=geometry.original,
        ),
        latent=out.payload,
        input_size=geometry.input_size,
    )
    return request, (runner, out, geometry)


def raw_tail(bundle: Path, context: Any, repeats: int, threads: int) -> dict[str, Any]:
    """The tail alone, in process: ms per frame at batch 1 and the batched frames/s."""
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
    return {"tail_ms_p50": statistics.median(single), "batched_fps": raw_batched(runtime, context)}


def raw_batched(runtime: Any, context: Any, window_s: float = 1.0) -> dict[int, float]:
    """Frames/s per batch size: each size warmed once (a new shape allocates), then the median
    of three windows of ~`window_s`. (It was one pass of `repeats // batch` calls, 3 calls at
    batch 16: a ~0.3 s sample, the first of its shape, on a shared box — and the best size of
    four such samples was the denominator: that alone moved the ratio by ±30 %.)"""
    runner, out, geometry = context
    latent = runner.codec.decode(out.payload)
    sizes, originals = [geometry.input_size], [geometry.original]
    batched = {}
    for batch in (1, 4, 8, 16):
        args = ([latent] * batch, sizes * batch, originals * batch)
        runtime.run_latents(*args)
        windows = []
        for _ in range(3):
            started, frames = time.perf_counter(), 0
            while time.perf_counter() - started < window_s:
                runtime.run_latents(*args)
                frames += batch
            windows.append(frames / (time.perf_counter() - started))
        batched[batch] = statistics.median(windows)
    return batched


class Server:
    """`splitedge serve` in its own process, with settings as env vars; from another checkout
    with `root` (benchmarks/hostile.py's A/B)."""

    def __init__(self, bundle: Path, root: Path = ROOT, **settings: Any) -> None:
        env = {f"SPLITEDGE_{k.upper()}": str(v) for k, v in settings.items()}
        env["PYTHONPATH"] = str(root)
        log = Path(tempfile.mkdtemp(prefix="bench-edge-")) / "edge.log"
        # stdout=PIPE: a checkout from before shared.lifecycle announces on stdout.
        self.process = SplitedgeProcess(
            ["serve", "--bundle", bundle, "--grpc-port", "0", "--http-port", "0"],
            log, env=env, cwd=root, stdout=subprocess.PIPE,
        ).start()
        ports = self.process.wait_for("ready")["listening"]
        self.target = f"127.0.0.1:{ports['grpc_port']}"
        self.http = f"http://127.0.0.1:{ports['http_port']}"
        assert self.process.popen is not None
        self.pid = self.process.popen.pid

    def mean_batch_size(self) -> float:
        import httpx

        text = httpx.get(self.http + "/metrics", timeout=60).text
        total = count = 0.0
        for line in text.splitlines():
            if line.startswith("splitedge_batch_size_sum"):
                total += float(line.split()[-1])
            elif line.startswith("splitedge_batch_size_count"):
                count += float(line.split()[-1])
        return total / count if count else 0.0

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def stop(self) -> None:
        self.process.stop()


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
                # One untimed pass at the largest load: the server's tail meets its batch
                # shapes (the raw tail was warmed per shape too).
                asyncio.run(throughput(server.target, request, max(args.streams), 8))
                for streams in args.streams:
                    fps = asyncio.run(throughput(server.target, request, streams, args.frames))
                    rows[streams] = {"fps": fps, "ratio_to_raw_batched": fps / best_raw}
                rows["mean_batch_size"] = server.mean_batch_size()
                report["throughput_fps"][name] = rows
                if name == "batching_on":
                    report["paired_16_streams"] = paired(
                        server, request, bundle, context, args.torch_threads, args.frames
                    )
                report.setdefault("peak_rss_mb", {})[name] = server.peak_rss_mb()
            finally:
                server.stop()
        # The box may have got busier (or quieter) while the servers ran: measure the raw tail
        # again and compare against the mean of both, and say how far apart they were.
        again = raw_again(bundle, context, args.torch_threads)
        before = max(raw["batched_fps"].values())
        after = max(again.values())
        report["raw_tail"]["batched_fps_after_servers"] = again
        report["raw_drift"] = after / before
        mean_raw = (before + after) / 2
        for rows in report["throughput_fps"].values():
            for row in rows.values():
                if isinstance(row, dict):
                    row["ratio_to_raw_batched_mean"] = row["fps"] / mean_raw
    print(json.dumps(report, indent=2, default=float))


def paired(
    server: Server, request: pb.InferRequest, bundle: Path, context: Any, threads: int, frames: int
) -> dict[str, Any]:
    """The ratio that decides "16 streams >= 0.9x the raw batched tail", taken so that a shared
    box cannot fake it: three rounds of (raw tail at batch 16 for ~2 s, then the server with 16
    streams), one ratio per adjacent pair, the median of the three. Separate measurements
    minutes apart were the variance: on a 2-core box shared with other work the raw tail's
    speed moved 2x within minutes (see `raw_drift`)."""
    import torch

    torch.set_num_threads(threads)
    from split_models.runtime import TailRuntime

    runtime = TailRuntime.load(bundle)
    runner, out, geometry = context
    latent = runner.codec.decode(out.payload)
    args = ([latent] * 16, [geometry.input_size] * 16, [geometry.original] * 16)
    runtime.run_latents(*args)
    rounds = []
    for _ in range(3):
        started, done = time.perf_counter(), 0
        while time.perf_counter() - started < 2.0:
            runtime.run_latents(*args)
            done += 16
        raw_fps = done / (time.perf_counter() - started)
        fps = asyncio.run(throughput(server.target, request, 16, frames))
        rounds.append({"raw_batch16_fps": raw_fps, "server_fps": fps, "ratio": fps / raw_fps})
    return {
        "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
    }


def raw_again(bundle: Path, context: Any, threads: int) -> dict[int, float]:
    import torch

    torch.set_num_threads(threads)
    from split_models.runtime import TailRuntime

    return raw_batched(TailRuntime.load(bundle), context)


if __name__ == "__main__":
    main()
