"""Locust users that drive an edge the way devices and API clients do.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080            # web UI on :8089
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --headless -u 8 -r 4 -t 60s \
        --payload split --fps 15 --sla-ms 300 CameraStream

Users (pick some by class name on the command line; all run by default, by their weights):

- `CameraStream`: a camera on the bidirectional `Stream`, frames at `--fps` with `--window`
  frames in flight at most, each with a deadline of `--sla-ms`. A frame whose slot is not free
  when it is captured is dropped (the link or the edge is behind) and counted as `WINDOW_FULL`
  under `Stream <branch> (not sent)`: it has no latency to mix into the branch's percentiles.
  Frames go as the device daemon sends them: lean (compact) once the edge's initial metadata
  announces it takes them (`shared.messages.LeanEncoder`), whole before that and with
  `--whole-frames`.
- `UnaryInfer`: one `Infer` call after another (paced to `--fps` when it is > 0).
- `HttpInfer`: `POST /v1/infer` with a JPEG frame, the whole-frame path of API clients.
- `BundleDownload`: `GET /v1/models/{name}/bundle`, then again with `If-None-Match` (304).

Payloads are real (loadtest/payloads.py): latents from the bundle's head and codec at every width
and JPEG frames, `--payload split|jpeg|all` (split: `--widths`). The bundle comes from the edge's
HTTP API as a device gets it (or `--bundle DIR`). Each reply is reported to locust per method and
branch (`Stream split-w050`, `Infer jpeg-q90`); a failure's error is its status alone
(`RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`, `UNAVAILABLE`, `HTTP 429`, …), so locust's failure
table splits them by status and shed frames are counted, never hidden.

Every option is also an env var (`--fps` = `SPLITEDGE_LOAD_FPS`, …): see `--help`.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
from gevent.queue import Queue
from locust import HttpUser, User, between, constant, constant_pacing, events, task
from locust.env import Environment

# locust puts this file's folder on sys.path; the project's packages live one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.payloads import PayloadSet, build_payloads, fetch_bundle
from shared.messages import COMPACT_HEADER, LEAN_HEADER, LeanEncoder, error_of, wire_bytes
from shared.wire import pb, pb_grpc

grpc_gevent.init_gevent()  # grpc's sync API must yield to locust's greenlets

PAYLOADS: PayloadSet | None = None
_STREAM_IDS = itertools.count(1)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("splitedge")
    group.add_argument("--grpc-target", env_var="SPLITEDGE_LOAD_GRPC_TARGET", default="",
                       help="edge gRPC host:port (default: --host's name, port 50051)")
    group.add_argument("--model", env_var="SPLITEDGE_LOAD_MODEL", default="demo-shapes")
    group.add_argument("--bundle", env_var="SPLITEDGE_LOAD_BUNDLE", default="",
                       help="a local bundle dir (default: download it from --host)")
    group.add_argument("--payload", env_var="SPLITEDGE_LOAD_PAYLOAD", default="all",
                       choices=["split", "jpeg", "all"], help="which branches to send")
    group.add_argument("--widths", env_var="SPLITEDGE_LOAD_WIDTHS", default="",
                       help="split widths, comma-separated (default: every head)")
    group.add_argument("--branches", env_var="SPLITEDGE_LOAD_BRANCHES", default="",
                       help="exactly these branch ids, comma-separated (e.g. jpeg-q90; default: "
                            "every branch of --payload)")
    group.add_argument("--frames", env_var="SPLITEDGE_LOAD_FRAMES", type=int, default=8,
                       help="distinct generated frames per branch")
    group.add_argument("--fps", env_var="SPLITEDGE_LOAD_FPS", type=float, default=15.0,
                       help="frames per second per camera / unary user (0: as fast as it can)")
    group.add_argument("--sla-ms", env_var="SPLITEDGE_LOAD_SLA_MS", type=float, default=300.0,
                       help="per-frame deadline after capture (0: none)")
    group.add_argument("--window", env_var="SPLITEDGE_LOAD_WINDOW", type=int, default=4,
                       help="frames in flight per camera stream")
    group.add_argument("--cache-dir", env_var="SPLITEDGE_LOAD_CACHE_DIR", default="",
                       help="where the downloaded bundle is cached (default: a temp dir)")
    group.add_argument("--token", env_var="SPLITEDGE_LOAD_TOKEN", default="",
                       help="bearer token, if the edge wants one")
    group.add_argument("--whole-frames", env_var="SPLITEDGE_LOAD_WHOLE_FRAMES",
                       action="store_true", default=False,
                       help="CameraStream sends whole requests even to an edge that takes "
                            "lean frames (as a daemon with edge.lean_stream off)")  # fmt: skip


@events.test_start.add_listener
def _prepare(environment: Environment, **_kwargs: Any) -> None:
    """Build the payloads once per process (a worker in distributed mode does its own), when the
    test starts: with the web UI, the host is only known then."""
    global PAYLOADS
    options = environment.parsed_options
    if options is None or PAYLOADS is not None:
        return
    if options.bundle:
        bundle: Any = Path(options.bundle)
    else:
        host = environment.host or options.host
        if not host:
            raise RuntimeError("give --host (the edge's HTTP URL) or --bundle DIR")
        cache = Path(options.cache_dir or tempfile.gettempdir()) / f"splitedge-load-{os.getuid()}"
        bundle = fetch_bundle(host, options.model, cache, options.token or None)
    widths = [float(w) for w in options.widths.split(",") if w.strip()] or None
    PAYLOADS = build_payloads(bundle, frames=options.frames, widths=widths)


def _branches(options: Any) -> list[str]:
    assert PAYLOADS is not None
    named = [b.strip() for b in options.branches.split(",") if b.strip()]
    if named:
        unknown = sorted(set(named) - set(PAYLOADS.branches))
        if unknown:
            raise RuntimeError(f"--branches {unknown}: the bundle has {PAYLOADS.branches}")
        return named
    kinds = {"split": ("split",), "jpeg": ("jpeg",), "all": ("split", "jpeg")}[options.payload]
    chosen = [b for b in PAYLOADS.branches if b.split("-")[0] in kinds]
    if not chosen:
        raise RuntimeError(f"--payload {options.payload}: the bundle has {PAYLOADS.branches}")
    return chosen


def _grpc_target(options: Any, host: str | None) -> str:
    if options.grpc_target:
        return str(options.grpc_target)
    return f"{urlsplit(host or '').hostname or '127.0.0.1'}:50051"


def _metadata(options: Any) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {options.token}"),) if options.token else ()


class _GrpcUser(User):
    """Shared set-up of the gRPC users: one channel per user (like one per device)."""

    abstract = True

    def on_start(self) -> None:
        self.options = self.environment.parsed_options
        self.branches = _branches(self.options)
        self.channel = grpc.insecure_channel(
            _grpc_target(self.options, self.host or self.environment.host),
            options=[("grpc.max_send_message_length", 64 << 20)],
        )
        self.stub = pb_grpc.SplitInferenceStub(self.channel)  # type: ignore[no-untyped-call]
        self.stream_id = f"load-{next(_STREAM_IDS)}"
        self.frame_ids = itertools.count()

    def on_stop(self) -> None:
        self.channel.close()

    def report(self, method: str, branch: str, started: float, size: int, error: str | None,
               ) -> None:  # fmt: skip
        self.environment.events.request.fire(
            request_type="grpc",
            name=f"{method} {branch}",
            response_time=(time.perf_counter() - started) * 1e3,
            response_length=size,
            exception=StatusError(error) if error else None,
            context={"branch": branch},
        )


class StatusError(Exception):
    """A failure named by its status alone, so locust groups failures by status."""

    def __str__(self) -> str:
        return str(self.args[0])

    __repr__ = __str__  # locust's failure table shows repr()


class UnaryInfer(_GrpcUser):
    """One `Infer` after another; paced to --fps (0: closed loop, as fast as replies come)."""

    weight = 1

    def wait_time(self) -> float:
        fps = self.environment.parsed_options.fps
        return constant_pacing(1.0 / fps)(self) if fps > 0 else constant(0)(self)

    @task
    def infer(self) -> None:
        frame_id = next(self.frame_ids)
        branch = self.branches[frame_id % len(self.branches)]
        assert PAYLOADS is not None
        request = PAYLOADS.request(branch, frame_id, self.stream_id, frame_id, self.options.sla_ms)
        started = time.perf_counter()
        try:
            self.stub.Infer(request, metadata=_metadata(self.options), timeout=30)
            error = None
        except grpc.RpcError as exc:
            error = exc.code().name
        self.report("Infer", branch, started, wire_bytes(request), error)


class CameraStream(_GrpcUser):
    """A camera: one bidirectional stream, frames at --fps, at most --window in flight."""

    weight = 3
    wait_time = constant(0)

    @task
    def stream(self) -> None:
        options = self.options
        outbox: Queue[pb.InferRequest | None] = Queue()
        in_flight: dict[int, tuple[float, str, int]] = {}
        period = 1.0 / options.fps if options.fps > 0 else 0.0

        def requests() -> Any:
            while (request := outbox.get()) is not None:
                yield request

        call = self.stub.Stream(requests(), metadata=_metadata(options))
        # As the daemon's uplink: every frame goes through the encoder (so it holds the last one
        # when lean frames start), and lean ones are sent once the edge has announced them.
        encoder, lean = LeanEncoder(), [False]

        def learn_lean() -> None:
            try:
                pairs = {(m[0], m[1]) for m in call.initial_metadata() or ()}
            except grpc.RpcError:
                return
            encoder.compact = COMPACT_HEADER in pairs
            lean[0] = LEAN_HEADER in pairs and not options.whole_frames

        def capture() -> None:
            assert PAYLOADS is not None
            next_at = time.perf_counter()
            while True:
                frame_id = next(self.frame_ids)
                branch = self.branches[frame_id % len(self.branches)]
                if len(in_flight) >= options.window:
                    # Under its own name: a frame never sent has no latency to mix into the
                    # branch's percentiles.
                    self.report("Stream", f"{branch} (not sent)", time.perf_counter(), 0,
                                "WINDOW_FULL")  # fmt: skip
                else:
                    request = PAYLOADS.request(
                        branch, frame_id, self.stream_id, frame_id, options.sla_ms
                    )
                    message = encoder.encode(request)
                    if not lean[0]:
                        message = request
                    in_flight[frame_id] = (time.perf_counter(), branch, wire_bytes(message))
                    outbox.put(message)
                next_at += period
                gevent.sleep(max(0.0, next_at - time.perf_counter()))

        learner = gevent.spawn(learn_lean)
        camera = gevent.spawn(capture)
        try:
            for reply in call:
                sent = in_flight.pop(reply.frame_id, None)
                if sent is None:
                    continue
                started, branch, size = sent
                failure = error_of(reply.status)
                error = None if failure is None else failure.code_name.upper()
                self.report("Stream", branch, started, size, error)
        except grpc.RpcError as exc:
            # The whole stream broke (edge gone, auth): every frame in flight is lost with it.
            for started, branch, size in in_flight.values():
                self.report("Stream", branch, started, size, exc.code().name)
            in_flight.clear()
            gevent.sleep(0.5)  # then the task reopens the stream, as a device reconnects
        finally:
            camera.kill()
            learner.kill()
            outbox.put(None)
            call.cancel()


class _HttpUser(HttpUser):
    abstract = True

    def on_start(self) -> None:
        options = self.environment.parsed_options
        if options.token:
            self.client.headers["Authorization"] = f"Bearer {options.token}"

    @staticmethod
    def check(response: Any, expected: tuple[int, ...] = (200,)) -> None:
        if response.status_code not in expected:
            response.failure(f"HTTP {response.status_code}")
        else:
            response.success()


class HttpInfer(_HttpUser):
    """An API client without a head: whole JPEG frames to `POST /v1/infer`."""

    weight = 1
    wait_time = between(0.05, 0.2)

    @task
    def infer(self) -> None:
        assert PAYLOADS is not None and PAYLOADS.jpegs
        data = PAYLOADS.jpegs[int(time.monotonic() * 1e3) % len(PAYLOADS.jpegs)]
        with self.client.post(
            "/v1/infer",
            params={"model": PAYLOADS.model},
            data=data,
            headers={"Content-Type": "image/jpeg"},
            name="POST /v1/infer",
            catch_response=True,
        ) as response:
            self.check(response)


class BundleDownload(_HttpUser):
    """A device (re)starting: the bundle once, then revalidated with If-None-Match."""

    weight = 1
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        super().on_start()
        self.etag: str | None = None

    @task
    def download(self) -> None:
        assert PAYLOADS is not None
        path = f"/v1/models/{PAYLOADS.model}/bundle"
        if self.etag is None:
            with self.client.get(path, name="GET bundle", catch_response=True) as response:
                self.check(response)
                self.etag = response.headers.get("ETag")
            return
        with self.client.get(
            path,
            headers={"If-None-Match": self.etag},
            name="GET bundle (If-None-Match)",
            catch_response=True,
        ) as response:
            self.check(response, (304,))
