"""The edge runtime both front doors share: resolve → validate → decode → batch → tail → answer.

Transport-free: the gRPC service and the HTTP app turn requests into `pb.InferRequest`, call
`infer`, and render the `pb.InferResponse` (or the typed error) their own way. Every frame ends in
exactly one counted outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_server.batcher import DynamicBatcher
from edge_server.logs import RateLimit
from edge_server.metrics import EdgeMetrics
from edge_server.models import LoadedModel, ModelRegistry, load_model
from edge_server.redact import echoed, scrubbed
from edge_server.settings import EdgeSettings
from shared.bundle import Branch, Task
from shared.codecs import IMAGE_CODECS, CodecId, DecodeLimits, Payload, codec_spec
from shared.errors import (
    CodecError,
    FrameError,
    InvalidRequest,
    NotReady,
    ShuttingDown,
)
from shared.messages import OK, fill_results, latent_payload, size_of, tasks_from_wire
from shared.results import Results
from shared.wire import pb

# Whole frames sent without a branch (HTTP uploads): batched apart from the manifest's branches.
FULL_FRAME = Branch(id="full-frame", kind="jpeg")
UNKNOWN = "unknown"  # the metric label of every name this server does not hold
MAX_NAME = 256  # characters of a stream id, model name, version or branch id

_internal_log = logging.getLogger("splitedge.edge.runtime")
_internal_log.addFilter(RateLimit(per_s=0.1))


@dataclass(frozen=True)
class Caller:
    """Who sent a frame, as the front door knows it."""

    client: str = ""  # the fair-share key: the bearer token's index, or the connection
    accept_late: bool = False  # answer a frame computed after its deadline instead of dropping it


ANONYMOUS = Caller()


@dataclass(frozen=True)
class FrameInput:
    """What a tail needs for one frame: a decoded latent or image, and the sizes to map boxes."""

    latent: np.ndarray[Any, Any] | None
    image: np.ndarray[Any, Any] | None
    input_size: tuple[int, int]  # (height, width) the head saw
    original_size: tuple[int, int]  # (height, width) as captured


class EdgeRuntime:
    def __init__(self, settings: EdgeSettings, metrics: EdgeMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or EdgeMetrics()
        self.limits = DecodeLimits(
            max_latent_elements=settings.max_latent_elements,
            max_image_pixels=settings.max_image_pixels,
            max_payload_bytes=settings.max_message_bytes,
        )
        self.registry = ModelRegistry()
        self.ready = False
        self.draining = False
        self.active = 0  # frames admitted and not yet answered
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = asyncio.Event()  # set when draining begins: streams stop reading
        # Tails run on their own threads (torch releases the GIL); decoding on another, so a big
        # batch never delays the decode of the next frame.
        self._tail_pool = ThreadPoolExecutor(settings.tail_threads, thread_name_prefix="tail")
        self._decode_pool = ThreadPoolExecutor(1, thread_name_prefix="decode")
        self._batchers: dict[tuple[str, str, str, tuple[Task, ...]], DynamicBatcher[Any, Any]] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def load(self) -> None:
        """Load every bundle (blocking; call before serving, or in a thread)."""
        if self.settings.torch_threads:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        for root in self.settings.bundle:
            model = load_model(root, self.limits)
            if self.settings.warmup:
                model.warm_up()
            self.registry.add(model)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.load)
        self.ready = True

    async def drain(self, grace_s: float) -> None:
        """Refuse new frames, answer every admitted one (within `grace_s`), then stop the pools."""
        self.ready = False
        self.draining = True
        self.closing.set()
        # Past the grace, what is left is answered by the batchers' close below, or cancelled by
        # gRPC's own grace.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        await asyncio.gather(*(b.close() for b in self._batchers.values()))
        self._tail_pool.shutdown(wait=True)
        self._decode_pool.shutdown(wait=True)

    @property
    def pending(self) -> int:
        return sum(b.pending for b in self._batchers.values())

    # -- one frame -------------------------------------------------------------------------------
    async def infer(self, request: pb.InferRequest, caller: Caller = ANONYMOUS) -> pb.InferResponse:
        """Answer one frame; raises a FrameError subclass for a frame without a result.

        Order matters: everything that can be checked without decoding is checked first (names,
        shape against the bundle, stream lengths), then the batcher admits the frame (queue
        bound, the caller's share, deadline feasibility), and only then is it decoded."""
        received = time.monotonic()
        deadline = _monotonic_deadline(request.deadline_unix_ns, received)
        model_label, branch_label = self._labels(request)
        if not self.ready:
            self.metrics.requests.labels(model_label, branch_label, "unavailable").inc()
            if self.draining:
                raise ShuttingDown("the server is shutting down and takes no new frames")
            raise NotReady("the server is still loading its bundles; retry shortly")
        self.metrics.pending.inc()
        self.active += 1
        self._idle.clear()
        decode_s = 0.0
        try:
            _check_names(request)
            model = self.registry.resolve(request.model_name, request.model_version)
            branch, raw, payload_bytes = self._admit(model, request)
            tasks = self._tasks(model, request)
            self.metrics.payload_bytes.labels(branch.codec or "none").observe(payload_bytes)
            batcher = self._batcher(model, branch, tasks)
            loop = asyncio.get_running_loop()

            async def decode() -> FrameInput:
                nonlocal decode_s
                started = time.monotonic()
                try:
                    return await loop.run_in_executor(self._decode_pool, self._decode, model, raw)
                finally:
                    decode_s = time.monotonic() - started
                    self.metrics.stage_seconds.labels("decode").observe(decode_s)

            result, timing = await batcher.admit(
                decode, deadline, client=caller.client, accept_late=caller.accept_late
            )
        except FrameError as exc:
            self.metrics.requests.labels(model_label, branch_label, exc.code_name).inc()
            raise
        except Exception as exc:
            # A bug, not the client's fault: log it (rate-limited: a client may trigger it at
            # will) and answer INTERNAL without the exception's text, which may hold addresses.
            self.metrics.requests.labels(model_label, branch_label, "internal").inc()
            _internal_log.exception("frame failed with an unexpected error")
            raise FrameError(
                "internal error while answering this frame; the server logged it"
            ) from exc
        finally:
            self.metrics.pending.dec()
            self.active -= 1
            if self.active == 0:
                self._idle.set()
        total_s = time.monotonic() - received
        self.metrics.requests.labels(model.name, branch.id, "ok").inc()
        for stage, seconds in (
            ("queue_wait", timing.queue_wait_s),
            ("tail", timing.compute_s),
            ("total", total_s),
        ):
            self.metrics.stage_seconds.labels(stage).observe(seconds)
        response = pb.InferResponse(
            stream_id=echoed(request.stream_id),
            frame_id=request.frame_id,
            model_name=model.name,
            model_version=model.version,
            branch_id=branch.id,
            status=OK,
            timings=pb.StageTimings(
                queue_wait_ms=1e3 * timing.queue_wait_s,
                decode_ms=1e3 * decode_s,
                tail_ms=1e3 * timing.compute_s,
                total_ms=1e3 * total_s,
                batch_size=timing.batch_size,
            ),
        )
        fill_results(response, result.labelled(model.bundle.manifest.classes))
        return response

    def _labels(self, request: pb.InferRequest) -> tuple[str, str]:
        """Metric labels from known names only: a client's made-up name is `unknown`, so label
        sets stay as small as the bundles' manifests."""
        if not self.registry.knows(request.model_name):
            return UNKNOWN, UNKNOWN
        model = request.model_name
        if not request.branch_id and request.WhichOneof("payload") == "image":
            return model, FULL_FRAME.id
        for loaded in self.registry:
            if loaded.name == model and loaded.knows_branch(request.branch_id):
                return model, request.branch_id
        return model, UNKNOWN

    def _admit(
        self, model: LoadedModel, request: pb.InferRequest
    ) -> tuple[Branch, tuple[Payload, tuple[int, int], tuple[int, int]], int]:
        """Check what can be checked without decoding; return the branch and the raw payload."""
        kind = request.WhichOneof("payload")
        if kind is None:
            raise InvalidRequest("the request carries neither a latent nor an image")
        original = size_of(request.original_size)
        if kind == "latent":
            branch = model.branch(request.branch_id)
            latent = request.latent
            expected = codec_spec(branch.codec).id if branch.codec else None
            if branch.kind != "split" or expected is None or int(latent.codec) != expected:
                raise InvalidRequest(
                    f"branch {branch.id} ({branch.kind}) takes codec "
                    f"{expected.name if expected else 'none'}, the latent has codec {latent.codec}"
                )
            size = sum(len(s) for s in latent.strings)
            self._check_size(size)
            if min(original) <= 0:
                raise InvalidRequest(
                    "original_size must give the captured frame's width and height"
                )
            input_size = size_of(request.input_size)
            model.plausibility.check(
                branch, expected, tuple(latent.shape), tuple(latent.strings), input_size
            )
            payload = latent_payload(latent)
        else:
            image = request.image
            try:
                codec = CodecId(image.codec)
            except ValueError:
                codec = None
            if codec is None or codec not in IMAGE_CODECS:
                known = ", ".join(c.name for c in IMAGE_CODECS)
                raise InvalidRequest(f"an image payload takes codec {known}, not {image.codec}")
            branch = model.branch(request.branch_id) if request.branch_id else FULL_FRAME
            if branch.kind not in ("jpeg", "webp"):
                raise InvalidRequest(f"branch {branch.id} ({branch.kind}) does not take images")
            payload = Payload(codec, (), (image.data,))  # no shape: the image's header says it
            size = len(image.data)
            self._check_size(size)
            input_size = (0, 0)
        return branch, (payload, input_size, original), size

    def _check_size(self, size: int) -> None:
        if size > self.limits.max_payload_bytes:
            raise InvalidRequest(
                f"payload of {size} bytes, at most {self.limits.max_payload_bytes}"
            )

    def _decode(
        self, model: LoadedModel, frame: tuple[Payload, tuple[int, int], tuple[int, int]]
    ) -> FrameInput:
        payload, input_size, original = frame
        try:
            # One way for latents and images: the model's codec for the payload's wire id.
            decoded = model.codecs[payload.codec].decode(payload)
            if payload.codec in IMAGE_CODECS:
                size = (int(decoded.shape[0]), int(decoded.shape[1]))
                return FrameInput(None, decoded, size, size if min(original) <= 0 else original)
        except CodecError as exc:
            raise InvalidRequest(
                f"cannot decode the {payload.codec.name} payload: {scrubbed(str(exc))}"
            ) from exc
        except (ValueError, RuntimeError, OverflowError, MemoryError) as exc:
            # A decoder library's own complaint about malformed bytes: still the payload's fault.
            raise InvalidRequest(
                f"cannot decode the {payload.codec.name} payload ({type(exc).__name__})"
            ) from exc
        return FrameInput(decoded, None, input_size, original)

    def _tasks(self, model: LoadedModel, request: pb.InferRequest) -> tuple[Task, ...]:
        return tasks_from_wire(request.tasks, model.bundle.manifest.tasks, model.name)

    def _batcher(
        self, model: LoadedModel, branch: Branch, tasks: tuple[Task, ...]
    ) -> DynamicBatcher[Any, Any]:
        key = (model.name, model.version, branch.id, tasks)
        batcher = self._batchers.get(key)
        if batcher is None:
            tail = model.tail
            labels = self.metrics.batch_size.labels(model.name, branch.id)
            computed = self.metrics.computed.labels(model.name, branch.id)

            def run(frames: list[FrameInput]) -> list[Results]:
                latents = [f.latent for f in frames if f.latent is not None]
                if latents:
                    return tail.run_latents(
                        latents,
                        [f.input_size for f in frames],
                        [f.original_size for f in frames],
                        tasks,
                    )
                return tail.run_images([f.image for f in frames if f.image is not None], tasks)

            def on_batch(size: int, reason: str, compute_s: float) -> None:
                labels.observe(size)
                computed.inc(size)
                self.metrics.batch_released.labels(reason).inc()

            batcher = DynamicBatcher(
                run,
                self._tail_pool,
                max_batch_size=self.settings.max_batch_size,
                max_queue_delay_s=self.settings.max_queue_delay_ms / 1e3,
                max_pending=self.settings.max_pending,
                # Until this server has measured the branch, the bundle's profiled figure.
                prior_s_per_frame=(branch.edge_ms or 0.0) / 1e3,
                probe_after_s=self.settings.probe_after_ms / 1e3,
                on_batch=on_batch,
            )
            batcher.start()
            self._batchers[key] = batcher
        return batcher


def _check_names(request: pb.InferRequest) -> None:
    for field in ("stream_id", "model_name", "model_version", "branch_id"):
        length = len(getattr(request, field))
        if length > MAX_NAME:
            raise InvalidRequest(f"{field} of {length} characters; at most {MAX_NAME}")


def _monotonic_deadline(deadline_unix_ns: int, received: float) -> float:
    if deadline_unix_ns <= 0:
        return float("inf")
    return received + (deadline_unix_ns - time.time_ns()) / 1e9
