"""Hostile-client figures (issue 12): what each attack costs the edge (and the device), measured
against real `splitedge serve` processes on loopback.

    python -m benchmarks.hostile [--items 1 2 3 4 5 6 7] [--code-root DIR] [--after-s 10]

`--code-root` runs the server (and the device download) from another checkout of this repository
— e.g. `git worktree add /tmp/before 6c0ebcc` — with this interpreter, so the same script gives
the before and the after figures. Prints one JSON object; each item says what it measured:

  1 tiny_request: server CPU seconds, reply time and peak-RSS growth for the 56-byte request (a
    latent declaring [12, 512, 682] with empty byte strings);
  2 poisoning: split-w100 frames with a 500 ms deadline refused `--after-s` seconds after that
    request (the issue waited 60 s);
  3 long_names: server RSS growth, /metrics size and scrape time after 2,000 requests with
    100 KB model names;
  4 expired: server CPU seconds burned by 100 tiny requests whose deadline had passed, and how
    long a valid frame sent behind them waited;
  5 overload: at 4x the measured capacity (50 streams, 500 ms deadline): OK share, on-time
    goodput, share of OK answers that arrived after their deadline;
  6 greedy: an honest device's refusals (80 frames at 10 fps, 500 ms deadline, its own
    connection) beside a greedy client on another connection: 12 streams of 25 fps, no deadline;
  7 download: the device's peak RSS fetching a 600 MB bundle response, and whether an archive
    with an unlisted 512 MiB file is installed;
  8 throughput A/B (with `--baseline-root`): this checkout's server and the baseline's, side by
    side and interleaved (ABBA rounds), on bench-edge's batching-on settings: frames/s with 16
    streams and per-frame overhead over the reported tail time at p50 — so that a shared box's
    changing speed falls on both alike;
  9 sigterm: seconds from SIGTERM to exit while a device-like stream is open and idle (the
    drain grace is the default 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx

from benchmarks.edge import Server as EdgeServer
from benchmarks.edge import build_request
from shared.wire import pb, pb_grpc

ROOT = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = ROOT / "bundles" / "demo-shapes"
TICKS = os.sysconf("SC_CLK_TCK")


class Server(EdgeServer):
    """`splitedge serve` from `root`, settings as env vars; CPU and memory read from /proc."""

    def __init__(self, root: Path, bundle: Path, **settings: Any) -> None:
        super().__init__(bundle, root, **settings)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def memory_mb(self, key: str) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith(key + ":"))
        return int(line.split()[1]) / 1024


def tiny_request(valid: pb.InferRequest, deadline_unix_ns: int = 0) -> pb.InferRequest:
    """The issue's 56-byte request: the largest shape the old limits allowed, no bytes."""
    request = pb.InferRequest(
        model_name=valid.model_name,
        branch_id="split-w100",
        latent=pb.Latent(codec=pb.CODEC_FACTORIZED_ANS, shape=[12, 512, 682], strings=[b"", b""]),
        deadline_unix_ns=deadline_unix_ns,
    )
    request.original_size.height, request.original_size.width = 4096, 5456
    request.input_size.height, request.input_size.width = 4096, 5456
    return request


def status_of(call: Any) -> str:
    try:
        answer = call()
    except grpc.RpcError as err:
        return str(err.code().name)
    return str(pb.FrameCode.Name(answer.status.code))


def deadline_in(seconds: float) -> int:
    return time.time_ns() + int(seconds * 1e9)


# -- items ---------------------------------------------------------------------------------------
def items_1_2(root: Path, bundle: Path, valid: pb.InferRequest, after_s: float) -> dict[str, Any]:
    server = Server(root, bundle, torch_threads=1)
    try:
        stub = pb_grpc.SplitInferenceStub(grpc.insecure_channel(server.target))
        stub.Infer(valid, timeout=60)
        hwm, cpu = server.memory_mb("VmHWM"), server.cpu_s()
        started = time.perf_counter()
        status = status_of(lambda: stub.Infer(tiny_request(valid), timeout=600))
        reply_s = time.perf_counter() - started
        one = {
            "request_bytes": len(tiny_request(valid).SerializeToString()),
            "status": status,
            "server_cpu_s": round(server.cpu_s() - cpu, 2),
            "reply_s": round(reply_s, 2),
            "peak_rss_growth_mb": round(server.memory_mb("VmHWM") - hwm, 1),
        }
        time.sleep(after_s)
        statuses = []
        for frame_id in range(20):
            request = pb.InferRequest()
            request.CopyFrom(valid)
            request.frame_id, request.deadline_unix_ns = frame_id, deadline_in(0.5)
            statuses.append(status_of(lambda r=request: stub.Infer(r, timeout=60)))
            time.sleep(0.05)
        two = {
            "after_s": after_s,
            "frames": len(statuses),
            "refused_deadline_exceeded": statuses.count("DEADLINE_EXCEEDED"),
            "ok": statuses.count("FRAME_OK"),
        }
        return {"1_tiny_request": one, "2_poisoning": two}
    finally:
        server.stop()


def item_3(root: Path, bundle: Path, valid: pb.InferRequest, count: int) -> dict[str, Any]:
    server = Server(root, bundle, torch_threads=1)
    try:
        rss = server.memory_mb("VmRSS")
        statuses: dict[str, int] = {}

        async def flood() -> None:
            async with grpc.aio.insecure_channel(
                server.target, options=[("grpc.max_receive_message_length", 64 << 20)]
            ) as channel:
                stub = pb_grpc.SplitInferenceStub(channel)
                for batch in range(0, count, 50):

                    async def one(i: int) -> None:
                        request = pb.InferRequest()
                        request.CopyFrom(valid)
                        request.model_name = f"{i:06d}" + "n" * 100_000
                        try:
                            await stub.Infer(request, timeout=60)
                            code = "OK"
                        except grpc.aio.AioRpcError as err:
                            code = err.code().name
                        statuses[code] = statuses.get(code, 0) + 1

                    await asyncio.gather(*(one(i) for i in range(batch, batch + 50)))

        started = time.perf_counter()
        asyncio.run(flood())
        sent_s = time.perf_counter() - started
        # Scrape, and meanwhile time one valid frame: the HTTP app and gRPC share an event loop.
        scraped: dict[str, Any] = {}

        def scrape_metrics() -> None:
            started = time.perf_counter()
            scraped["response"] = httpx.get(server.http + "/metrics", timeout=600)
            scraped["s"] = time.perf_counter() - started

        scraper = threading.Thread(target=scrape_metrics)
        scraper.start()
        time.sleep(0.2)
        stub = pb_grpc.SplitInferenceStub(grpc.insecure_channel(server.target))
        started = time.perf_counter()
        stub.Infer(valid, timeout=600)
        infer_s = time.perf_counter() - started
        scraper.join()
        scrape, scrape_s = scraped["response"], scraped["s"]
        return {
            "3_long_names": {
                "requests": count,
                "statuses": statuses,
                "send_s": round(sent_s, 1),
                "rss_growth_mb": round(server.memory_mb("VmRSS") - rss, 1),
                "metrics_bytes": len(scrape.content),
                "scrape_s": round(scrape_s, 3),
                "infer_during_scrape_s": round(infer_s, 3),
            }
        }
    finally:
        server.stop()


def item_4(root: Path, bundle: Path, valid: pb.InferRequest) -> dict[str, Any]:
    server = Server(root, bundle, torch_threads=1)
    try:
        stub = pb_grpc.SplitInferenceStub(grpc.insecure_channel(server.target))
        stub.Infer(valid, timeout=60)
        cpu, rss = server.cpu_s(), server.memory_mb("VmRSS")

        async def run() -> tuple[dict[str, int], float]:
            async with grpc.aio.insecure_channel(server.target) as channel:
                aio = pb_grpc.SplitInferenceStub(channel)
                codes: dict[str, int] = {}

                async def expired() -> None:
                    try:
                        await aio.Infer(tiny_request(valid, time.time_ns() - 1_000_000))
                        code = "OK"
                    except grpc.aio.AioRpcError as err:
                        code = err.code().name
                    codes[code] = codes.get(code, 0) + 1

                flood = [asyncio.ensure_future(expired()) for _ in range(100)]
                await asyncio.sleep(0.05)
                started = time.perf_counter()
                await aio.Infer(valid, timeout=600)
                waited = time.perf_counter() - started
                await asyncio.gather(*flood)
                return codes, waited

        codes, waited = asyncio.run(run())
        time.sleep(0.5)
        tiny = {
            "requests": 100,
            "statuses": codes,
            "server_cpu_s": round(server.cpu_s() - cpu, 2),
            "valid_frame_wait_s": round(waited, 3),
            "rss_growth_mb_kept": round(server.memory_mb("VmRSS") - rss, 1),
        }
        # The same with real latents (a shape the bundle gives): nothing to refuse but the
        # deadline, so this shows whether they are decoded before it is checked.
        cpu = server.cpu_s()
        statuses = []
        for frame_id in range(100):
            request = pb.InferRequest()
            request.CopyFrom(valid)
            request.frame_id, request.deadline_unix_ns = frame_id, time.time_ns() - 1_000_000
            statuses.append(status_of(lambda r=request: stub.Infer(r, timeout=60)))
        real = {
            "requests": 100,
            "deadline_exceeded": statuses.count("DEADLINE_EXCEEDED"),
            "server_cpu_s": round(server.cpu_s() - cpu, 2),
        }
        return {"4_expired": {"tiny_requests": tiny, "real_latents": real}}
    finally:
        server.stop()


async def _paced_streams(
    target: str, valid: pb.InferRequest, streams: int, fps_each: float, duration_s: float,
    deadline_s: float | None, metadata: tuple[tuple[str, str], ...] = (), name: str = "s",
) -> list[tuple[str, float, float]]:  # fmt: skip
    """(status, receipt - deadline in s, server total ms) per frame, streams paced at fps_each."""
    sent: dict[tuple[str, int], float] = {}
    out: list[tuple[str, float, float]] = []
    # Its own TCP connection (gRPC shares one between a process's channels by default): each
    # call of this function plays a separate client.
    own = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(target, options=own) as channel:
        stub = pb_grpc.SplitInferenceStub(channel)

        async def one(index: int) -> None:
            stream_id = f"{name}{index}"

            async def requests():  # type: ignore[no-untyped-def]
                start = time.monotonic() + index / (streams * fps_each)
                frames = int(duration_s * fps_each)
                for frame_id in range(frames):
                    if time.monotonic() > start + duration_s:
                        return
                    delay = start + frame_id / fps_each - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    request = pb.InferRequest()
                    request.CopyFrom(valid)
                    request.stream_id, request.frame_id = stream_id, frame_id
                    now = time.time()
                    if deadline_s is not None:
                        request.deadline_unix_ns = int((now + deadline_s) * 1e9)
                    sent[(stream_id, frame_id)] = now
                    yield request

            async for reply in stub.Stream(requests(), metadata=metadata):
                t0 = sent[(stream_id, reply.frame_id)]
                late = time.time() - (t0 + (deadline_s or 1e9))
                out.append((pb.FrameCode.Name(reply.status.code), late, reply.timings.total_ms))

        await asyncio.gather(*(one(i) for i in range(streams)))
    return out


async def _capacity(target: str, valid: pb.InferRequest, workers: int, duration_s: float) -> float:
    """OK frames per second from `workers` closed-loop unary callers (no deadline)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SplitInferenceStub(channel)
        ok = 0
        end = time.monotonic() + duration_s

        async def worker() -> None:
            nonlocal ok
            while time.monotonic() < end:
                answer = await stub.Infer(valid)
                ok += answer.status.code == pb.FRAME_OK

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return ok / (time.monotonic() - started)


def item_5(root: Path, bundle: Path, valid: pb.InferRequest, duration_s: float) -> dict[str, Any]:
    server = Server(root, bundle, torch_threads=1, max_batch_size=8)
    try:
        cap_fps = asyncio.run(_capacity(server.target, valid, workers=16, duration_s=4.0))
        offered = 4 * cap_fps
        answers = asyncio.run(
            _paced_streams(server.target, valid, 50, offered / 50, duration_s, 0.5)
        )
        ok = [a for a in answers if a[0] == "FRAME_OK"]
        on_time = [a for a in ok if a[1] <= 0]
        counts: dict[str, int] = {}
        for status, _, _ in answers:
            counts[status] = counts.get(status, 0) + 1
        return {
            "5_overload": {
                "capacity_fps_measured": round(cap_fps, 1),
                "offered_fps": round(offered, 1),
                "duration_s": duration_s,
                "answers": len(answers),
                "share": {k: round(v / len(answers), 3) for k, v in sorted(counts.items())},
                "on_time_goodput_fps": round(len(on_time) / duration_s, 1),
                "ok_after_deadline_share": round(1 - len(on_time) / len(ok), 3) if ok else None,
            }
        }
    finally:
        server.stop()


def item_6(root: Path, bundle: Path, valid: pb.InferRequest) -> dict[str, Any]:
    server = Server(root, bundle, torch_threads=1, max_batch_size=8)
    try:

        async def both() -> tuple[list[Any], list[Any]]:
            # Greedy: as fast as the server reads, no deadline (it does not care when).
            greedy = _paced_streams(server.target, valid, 12, 25.0, 8.0, None, name="greedy")
            honest = _paced_streams(server.target, valid, 1, 10.0, 8.0, 0.5, name="device")
            return tuple(await asyncio.gather(greedy, honest))  # type: ignore[return-value]

        greedy, honest = asyncio.run(both())

        def counts(rows: list[Any]) -> dict[str, int]:
            out: dict[str, int] = {}
            for status, _, _ in rows:
                out[status] = out.get(status, 0) + 1
            return out

        return {
            "6_greedy": {
                "honest_frames": len(honest),
                "honest": counts(honest),
                "honest_refused": sum(1 for r in honest if r[0] != "FRAME_OK"),
                "greedy": counts(greedy),
            }
        }
    finally:
        server.stop()


# -- item 7: the device's download ---------------------------------------------------------------
class BundleOrigin:
    """Plays the edge's bundle endpoint: `body` bytes (or `size` zero bytes, streamed)."""

    def __init__(self, body: bytes | None = None, size: int = 0) -> None:
        origin = self
        self.body, self.size = body, size if body is None else len(body)
        digest = hashlib.sha256(body).hexdigest() if body is not None else "0" * 64

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(origin.size))
                self.send_header("X-Bundle-SHA256", digest)
                self.end_headers()
                try:
                    if origin.body is not None:
                        self.wfile.write(origin.body)
                        return
                    chunk = bytes(1 << 20)
                    for _ in range(origin.size >> 20):
                        self.wfile.write(chunk)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_FETCH = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    from device_client.bundles import BundleStore
    from device_client.config import BundleConfig
    state, url, name = sys.argv[1:4]
    try:
        BundleStore(Path(state), BundleConfig(url=url, name=name, timeout_s=600)).fetch()
        outcome = "installed"
    except Exception as exc:
        outcome = f"refused: {type(exc).__name__}: {str(exc)[:160]}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"outcome": outcome, "peak_rss_mb": round(peak, 1)}))
    """
)


def _fetch(root: Path, url: str, name: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state:
        env = os.environ | {"PYTHONPATH": str(root)}
        done = subprocess.run(
            [sys.executable, "-c", _FETCH, state, url, name],
            cwd=root, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _unlisted_archive(bundle: Path) -> bytes:
    """The bundle's own files plus an unlisted 512 MiB file of zeros (a few MB compressed)."""
    buffer = io.BytesIO()
    name = json.loads((bundle / "manifest.json").read_text())["name"]
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(bundle.iterdir()):
            tar.add(path, arcname=f"{name}/{path.name}")
        info = tarfile.TarInfo(f"{name}/zz-unlisted.bin")
        info.size = 512 << 20
        tar.addfile(info, _Zeros(info.size))
    return buffer.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def item_7(root: Path, bundle: Path) -> dict[str, Any]:
    big = BundleOrigin(size=600 << 20)
    try:
        download = _fetch(root, big.url, "demo-shapes")
    finally:
        big.close()
    archive = _unlisted_archive(bundle)
    unlisted = BundleOrigin(body=archive)
    try:
        tampered = _fetch(root, unlisted.url, "demo-shapes")
    finally:
        unlisted.close()
    return {
        "7_download": {
            "600mb_response": download,
            "unlisted_512mib_file": {"archive_mb": round(len(archive) / 2**20, 1)} | tampered,
        }
    }


def _request_from(root: Path, bundle: Path) -> pb.InferRequest:
    """A request encoded by `root`'s own device code (the bitstream may differ between
    checkouts)."""
    code = (
        "import pathlib, sys; from benchmarks.edge import build_request; "
        "r, _ = build_request(pathlib.Path(sys.argv[1])); "
        "sys.stdout.buffer.write(r.SerializeToString())"
    )
    env = os.environ | {"PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(bundle)], cwd=root, env=env, capture_output=True,
        check=True, timeout=600,
    )  # fmt: skip
    return pb.InferRequest.FromString(done.stdout)


def item_8(root: Path, baseline: Path, bundle: Path, rounds: int) -> dict[str, Any]:
    from benchmarks.edge import latencies, throughput

    settings = {"max_batch_size": 16, "max_queue_delay_ms": 2.0, "max_pending": 256,
                "stream_window": 8, "torch_threads": 1}  # fmt: skip
    sides = {"baseline": baseline, "this": root}
    requests = {name: _request_from(path, bundle) for name, path in sides.items()}
    servers = {name: Server(path, bundle, **settings) for name, path in sides.items()}
    fps: dict[str, list[float]] = {name: [] for name in sides}
    overhead: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for name in sides:  # warm both at the batch shapes they will see
            asyncio.run(throughput(servers[name].target, requests[name], 16, 8))
        for index in range(rounds):
            order = list(sides) if index % 2 == 0 else list(reversed(sides))
            for name in order:
                target = servers[name].target
                fps[name].append(asyncio.run(throughput(target, requests[name], 16, 30)))
                lat = asyncio.run(latencies(target, requests[name], 30))
                overhead[name].append(lat["overhead_ms_p50"] / lat["server_tail_ms_p50"])
    finally:
        for server in servers.values():
            server.stop()
    median = statistics.median
    return {
        "8_throughput_ab": {
            "rounds": rounds,
            "fps_16_streams": {k: [round(x, 1) for x in v] for k, v in fps.items()},
            "fps_16_streams_median": {k: round(median(v), 1) for k, v in fps.items()},
            "this_over_baseline": round(median(fps["this"]) / median(fps["baseline"]), 3),
            "overhead_to_tail_p50_median": {k: round(median(v), 3) for k, v in overhead.items()},
        }
    }


def item_9(root: Path, bundle: Path, valid: pb.InferRequest) -> dict[str, Any]:
    server = Server(root, bundle, torch_threads=1)
    hold = threading.Event()

    def requests() -> Any:
        yield valid
        hold.wait(300)  # a device keeps its stream open between frames

    channel = grpc.insecure_channel(server.target)
    try:
        answers = pb_grpc.SplitInferenceStub(channel).Stream(requests())
        next(answers)
        started = time.monotonic()
        server.process.terminate()
        server.process.wait(timeout=300)
        exit_s = time.monotonic() - started
    finally:
        hold.set()
        channel.close()
        server.stop()
    return {"9_sigterm": {"exit_s_after_sigterm": round(exit_s, 2), "drain_seconds": 10}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code-root", type=Path, default=ROOT, help="checkout to run from")
    parser.add_argument("--bundle", type=Path, default=DEMO_BUNDLE)
    parser.add_argument("--items", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7])
    parser.add_argument("--after-s", type=float, default=10.0, help="item 2's wait (issue: 60)")
    parser.add_argument("--names", type=int, default=2000, help="item 3's request count")
    parser.add_argument("--overload-s", type=float, default=10.0, help="item 5's duration")
    parser.add_argument("--baseline-root", type=Path, help="item 8: the checkout to compare with")
    parser.add_argument("--rounds", type=int, default=4, help="item 8's ABBA rounds")
    args = parser.parse_args()
    root, bundle = args.code_root.resolve(), args.bundle.resolve()
    valid, _ = build_request(bundle)
    report: dict[str, Any] = {"code_root": str(root), "cpu_count": os.cpu_count()}
    items = set(args.items)
    if items & {1, 2}:
        report |= items_1_2(root, bundle, valid, args.after_s)
    if 3 in items:
        report |= item_3(root, bundle, valid, args.names)
    if 4 in items:
        report |= item_4(root, bundle, valid)
    if 5 in items:
        report |= item_5(root, bundle, valid, args.overload_s)
    if 6 in items:
        report |= item_6(root, bundle, valid)
    if 7 in items:
        report |= item_7(root, bundle)
    if 9 in items:
        report |= item_9(root, bundle, valid)
    if 8 in items and args.baseline_root is not None:
        report |= item_8(root, args.baseline_root.resolve(), bundle, args.rounds)
    print(json.dumps(report, indent=2), flush=True)


if __name__ == "__main__":
    main()
