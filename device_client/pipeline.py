"""The per-frame path on the device, and the books that give every frame exactly one outcome.

    frame ─► preprocess ─► prefilter ─(below threshold)─► prefiltered
                              │
                           policy ─► branch: split ─► head ─► encode ─┐
                                             jpeg/webp ─► encode ─────┤
                                             local ─► local.onnx      ├─► uplink ─► edge result
                                             skip ─► dropped          │      │
                        edge unavailable / error / deadline missed ◄──┴──────┘
                                  └─► local.onnx (fallback) or dropped, per config

Threads: the pipeline thread runs the stages and sends; the uplink's thread resolves replies; a
deadline watcher claims frames whose reply is late; one fallback worker runs local.onnx for frames
that failed in flight. Whoever `claim`s an in-flight frame first owns its outcome. When the edge
is unreachable at send time, the fallback runs inline on the pipeline thread: that is the
backpressure (a live source then drops its oldest frames, and says so).

Sessions, codecs and tables are built once, in `__init__`; nothing per frame allocates a model.
Never imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from device_client.config import EdgeConfig, FailureAction, PipelineConfig
from device_client.head import HeadRunner
from device_client.local import LocalRunner
from device_client.metrics import DeviceMetrics
from device_client.outcomes import (
    Classification,
    Detection,
    FrameJob,
    InFlightBook,
    Outcome,
    OutcomeKind,
    ServerTimings,
)
from device_client.policy import BranchPolicy
from device_client.sinks import Sink
from device_client.sources import Frame, FrameSource
from device_client.tracker import BoxTracker
from device_client.uplink import Uplink
from shared.bundle import Manifest
from shared.codecs import CodecId, ImageCodec
from shared.errors import UplinkUnavailable
from shared.messages import image_size, latent_message
from shared.wire import pb

log = logging.getLogger("splitedge.device.pipeline")

TASK_IDS = {"detection": pb.TASK_DETECTION, "classification": pb.TASK_CLASSIFICATION}
TOP_K = 5


@dataclass
class Tally:
    """Frames in, outcomes out; `seen == sum(outcomes)` once the pipeline has drained."""

    seen: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    late_replies: int = 0

    @property
    def settled(self) -> int:
        return sum(self.outcomes.values())


class Pipeline:
    def __init__(
        self,
        *,
        manifest: Manifest,
        head: HeadRunner,
        local: LocalRunner | None,
        uplink: Uplink,
        policy: BranchPolicy,
        sink: Sink,
        metrics: DeviceMetrics,
        config: PipelineConfig,
        edge: EdgeConfig,
        stream_id: str,
        tracker: BoxTracker | None = None,
    ) -> None:
        self.manifest = manifest
        self.head = head
        self.local = local
        self.uplink = uplink
        self.policy = policy
        self.sink = sink
        self.metrics = metrics
        self.config = config
        self.edge = edge
        self.stream_id = stream_id
        self.tracker = tracker
        self.tally = Tally()
        self.threshold = (
            config.prefilter.threshold
            if config.prefilter.threshold is not None
            else manifest.prefilter.threshold
        )
        self.tasks = config.tasks or manifest.tasks
        self._task_ids = [TASK_IDS[t] for t in config.tasks]
        self._sla_s = edge.sla_ms / 1e3
        self._image_codecs = {
            CodecId.JPEG: ImageCodec(CodecId.JPEG, 90),
            CodecId.WEBP: ImageCodec(CodecId.WEBP, 90),
        }
        self._in_flight = InFlightBook()
        self._fallback = ThreadPoolExecutor(1, thread_name_prefix="fallback")
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._source: FrameSource | None = None
        self._watcher = threading.Thread(
            target=self._watch_deadlines, name="deadlines", daemon=True
        )
        self._watching = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------
    def run(self, source: FrameSource, on_frame: Callable[[], None] | None = None) -> Tally:
        """Process every frame of `source` until it ends or `stop()`; drain; return the tally."""
        self._source = source
        self._watching.set()
        self._watcher.start()
        try:
            for frame in source:
                with self._lock:
                    self.tally.seen += 1
                if self._stopping.is_set():
                    self._settle(self._finished(FrameJob(frame), "dropped", "shutdown"))
                    continue
                self.process(frame)
                if on_frame is not None:
                    on_frame()
        finally:
            self._drain()
        return self.tally

    def stop(self) -> None:
        """Stop taking frames (from a signal handler or another thread); `run` then drains."""
        self._stopping.set()
        if self._source is not None:
            self._source.close()

    def on_source_drop(self, frame: Frame, reason: str) -> None:
        """A live source gave up a frame (buffer full, shutdown): it still gets its outcome."""
        with self._lock:
            self.tally.seen += 1
        self._settle(self._finished(FrameJob(frame), "dropped", reason))

    def _drain(self) -> None:
        # Every in-flight frame ends by its deadline at the latest (the watcher claims it).
        while len(self._in_flight):
            self._in_flight.wait_change(0.05)
        # A frame just claimed from the book (by a reply or the watcher) may not have reached the
        # fallback worker yet: shutting it now would refuse that frame's work and lose its outcome.
        settle_by = time.monotonic() + 30
        while self._unsettled() and time.monotonic() < settle_by:
            time.sleep(0.01)
        self._watching.clear()
        self._fallback.shutdown(wait=True)
        self._watcher.join(timeout=5)

    def _unsettled(self) -> bool:
        with self._lock:
            return self.tally.settled < self.tally.seen

    # -- one frame -------------------------------------------------------------------------------
    def process(self, frame: Frame) -> None:
        job = FrameJob(frame, {"queue": _ms(time.monotonic() - frame.captured)})
        try:
            self._process(job)
        except Exception:  # one bad frame must not stop the camera
            log.exception("frame %d failed", frame.frame_id)
            self._settle(self._finished(job, "dropped", "failed"))

    def _process(self, job: FrameJob) -> None:
        frame, timings = job.frame, job.timings_ms
        started = time.perf_counter()
        head_input = self.head.preprocess(frame.image, "RGB")
        timings["preprocess"] = _since(started)
        prefilter = self.config.prefilter
        if prefilter.enabled and prefilter.gate:
            started = time.perf_counter()
            job.prefilter_score = self.head.prefilter(head_input.image)
            timings["prefilter"] = _since(started)
            if job.prefilter_score < self.threshold:
                self._settle(self._finished(job, "prefiltered"))
                return

        choice = self.policy.choose(frame)
        branch = job.branch = choice.branch
        if choice.predicted_ms is not None or choice.track:
            job.decision = choice.to_json()
        self.metrics.use_branch(branch.id)
        if self.tracker is not None:
            if choice.track:
                self._settle(self._track(job))
                return
            self.tracker.remember(frame.frame_id, frame.image)
        if branch.kind == "skip":
            self._settle(self._finished(job, "dropped", "policy_skip"))
            return
        if branch.kind == "local":
            self._settle(self._run_local(job, "policy"))
            return
        if not self.uplink.available:
            self._fail(job, "edge_unavailable", inline=True)
            return

        request = pb.InferRequest(
            stream_id=self.stream_id,
            frame_id=frame.frame_id,
            model_name=self.manifest.name,
            model_version=self.manifest.version,
            branch_id=branch.id,
            tasks=self._task_ids,
            capture_time_unix_ns=frame.capture_time_ns,
            deadline_unix_ns=frame.capture_time_ns + int(self.edge.sla_ms * 1e6),
        )
        request.original_size.CopyFrom(image_size(head_input.geometry.original))
        if branch.kind == "split":
            assert branch.width is not None  # pick_branch checked it
            self.head.set_width(branch.width)
            started = time.perf_counter()
            latent, head_score = self.head.head(head_input.image)
            timings["head"] = _since(started)
            if prefilter.enabled and not prefilter.gate:
                job.prefilter_score = head_score
                if head_score < self.threshold:
                    self._settle(self._finished(job, "prefiltered"))
                    return
            started = time.perf_counter()
            payload = self.head.codec.encode(latent)
            timings["encode"] = _since(started)
            request.input_size.CopyFrom(image_size(head_input.geometry.input_size))
            request.latent.CopyFrom(latent_message(payload))
        else:  # jpeg / webp: the whole frame
            codec = CodecId[branch.codec] if branch.codec else CodecId[branch.kind.upper()]
            started = time.perf_counter()
            image = self._image_codecs[codec].encode(frame.image)
            timings["encode"] = _since(started)
            request.image.codec = codec.value
            request.image.data = image.strings[0]
        self._send(job, request)

    def _send(self, job: FrameJob, request: pb.InferRequest) -> None:
        # The window: the watcher frees a slot at the oldest frame's deadline at the latest.
        self._in_flight.wait_below(self.edge.window)
        job.deadline = job.frame.captured + self._sla_s
        job.sent = time.monotonic()
        job.bytes_sent = request.ByteSize()
        self._in_flight.add(job)
        self.metrics.in_flight.set(len(self._in_flight))
        try:
            future = self.uplink.send(request)
        except UplinkUnavailable:
            if self._in_flight.claim(job.frame.frame_id) is not None:
                job.bytes_sent = 0
                self._fail(job, "edge_unavailable", inline=True)
            return
        future.add_done_callback(partial(self._on_reply, job.frame.frame_id))

    def _track(self, job: FrameJob) -> Outcome:
        """Carry the last detection's boxes onto this frame (the scheduler's sampled frames)."""
        assert self.tracker is not None
        started = time.perf_counter()
        self.tracker.remember(job.frame.frame_id, job.frame.image)
        boxes = self.tracker.track(job.frame.frame_id) or ()
        job.timings_ms["track"] = _since(started)
        return self._finished(job, "tracked", None, boxes)

    # -- replies, deadlines, fallbacks -----------------------------------------------------------
    def _on_reply(self, frame_id: int, future: Future[pb.InferResponse]) -> None:
        job = self._in_flight.claim(frame_id)
        self.metrics.in_flight.set(len(self._in_flight))
        if job is None:  # the deadline watcher got there first
            with self._lock:
                self.tally.late_replies += 1
            self.metrics.late_replies.inc()
            return
        job.timings_ms["uplink"] = _ms(time.monotonic() - job.sent)
        error = future.exception()
        if error is not None:
            if not isinstance(error, UplinkUnavailable):
                log.warning("frame %d: uplink error %r", frame_id, error)
            self._fail(job, "edge_unavailable")
            return
        reply = future.result()
        code = reply.status.code
        if code == pb.FRAME_OK:
            self._settle(self._edge_result(job, reply))
        elif code == pb.FRAME_DEADLINE_EXCEEDED:
            self._fail(job, "deadline_missed")
        else:
            name = pb.FrameCode.Name(code).removeprefix("FRAME_").lower()
            log.warning("frame %d: edge answered %s: %s", frame_id, name, reply.status.message)
            self._fail(job, f"edge_error:{name}")

    def _watch_deadlines(self) -> None:
        while self._watching.is_set() or len(self._in_flight):
            now = time.monotonic()
            for job in self._in_flight.claim_expired(now):
                job.timings_ms["uplink"] = _ms(now - job.sent)
                self._fail(job, "deadline_missed")
            self.metrics.in_flight.set(len(self._in_flight))
            upcoming = self._in_flight.next_deadline()
            wait = 0.2 if upcoming is None else min(0.2, max(0.0, upcoming - time.monotonic()))
            self._in_flight.wait_change(wait + 0.001)

    def _fail(self, job: FrameJob, reason: str, inline: bool = False) -> None:
        """The edge gave no result: fall back to local.onnx or drop, as configured."""
        action: FailureAction = (
            self.config.on_deadline_miss
            if reason == "deadline_missed"
            else self.config.on_edge_failure
        )
        if action == "drop":
            self._settle(self._finished(job, "dropped", reason))
        elif inline:
            self._settle(self._run_local(job, reason))
        else:
            # Replies arrive on the uplink's thread, which must keep reading: run it elsewhere.
            work = self._fallback.submit(self._run_local, job, reason)
            work.add_done_callback(self._settle_future)

    def _settle_future(self, work: Future[Outcome]) -> None:
        self._settle(work.result())

    def _run_local(self, job: FrameJob, reason: str) -> Outcome:
        if self.local is None:
            return self._finished(job, "dropped", "no_local_model")
        started = time.perf_counter()
        detections: tuple[Detection, ...] = ()
        classifications: tuple[Classification, ...] = ()
        try:
            if "detection" in self.tasks and "detection" in self.local.sessions:
                detections = self._local_detections(job.frame)
            if "classification" in self.tasks and "classification" in self.local.sessions:
                classifications = self._local_classes(job.frame)
        except Exception:
            log.exception("frame %d: local fallback failed", job.frame.frame_id)
            return self._finished(job, "dropped", "failed")
        job.timings_ms["local"] = _since(started)
        return self._finished(job, "local", reason, detections, classifications)

    def _local_detections(self, frame: Frame) -> tuple[Detection, ...]:
        assert self.local is not None
        found = self.local.detect(frame.image)
        names = self.manifest.classes.get("detection", ())
        return tuple(
            Detection(
                box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                score=float(score),
                label_id=int(label),
                label=names[int(label)] if 0 <= int(label) < len(names) else "",
            )
            for box, score, label in zip(found.boxes, found.scores, found.labels, strict=True)
        )

    def _local_classes(self, frame: Frame) -> tuple[Classification, ...]:
        assert self.local is not None
        logits = self.local.classify(frame.image).astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        names = self.manifest.classes.get("classification", ())
        best = np.argsort(-probs)[:TOP_K]
        return tuple(
            Classification(int(i), names[int(i)] if int(i) < len(names) else "", float(probs[i]))
            for i in best
        )

    # -- outcomes --------------------------------------------------------------------------------
    def _edge_result(self, job: FrameJob, reply: pb.InferResponse) -> Outcome:
        t = reply.timings
        detections = tuple(
            Detection(
                box=(d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max),
                score=d.score,
                label_id=d.label_id,
                label=d.label,
            )
            for d in reply.detections
        )
        classifications = tuple(
            Classification(c.label_id, c.label, c.score) for c in reply.classifications
        )
        server = ServerTimings(t.queue_wait_ms, t.decode_ms, t.tail_ms, t.total_ms, t.batch_size)
        return self._finished(job, "edge", None, detections, classifications, server)

    def _finished(
        self,
        job: FrameJob,
        kind: OutcomeKind,
        reason: str | None = None,
        detections: tuple[Detection, ...] = (),
        classifications: tuple[Classification, ...] = (),
        server: ServerTimings | None = None,
    ) -> Outcome:
        frame = job.frame
        timings = {**job.timings_ms, "total": _ms(time.monotonic() - frame.captured)}
        return Outcome(
            frame_id=frame.frame_id,
            kind=kind,
            capture_time_ns=frame.capture_time_ns,
            reason=reason,
            branch=job.branch.id if job.branch is not None else None,
            timings_ms=timings,
            bytes_sent=job.bytes_sent,
            prefilter_score=job.prefilter_score,
            detections=detections,
            classifications=classifications,
            server=server,
            decision=job.decision,
        )

    def _settle(self, outcome: Outcome) -> None:
        """The one place an outcome leaves: sinks, metrics, the policy, the tally."""
        self.metrics.outcomes.labels(outcome.kind, outcome.reason or "").inc()
        for stage, ms in outcome.timings_ms.items():
            self.metrics.stage_seconds.labels(stage).observe(ms / 1e3)
        if outcome.bytes_sent and outcome.branch:
            self.metrics.bytes_sent.labels(outcome.branch).inc(outcome.bytes_sent)
        if self.tracker is not None and outcome.kind in ("edge", "local"):
            # A detection (from the edge or local.onnx) becomes what later frames are tracked from.
            self.tracker.seed(outcome.frame_id, outcome.detections)
        try:
            self.policy.observe(outcome)
        except Exception:
            log.exception("policy.observe failed on frame %d", outcome.frame_id)
        self.sink.write(outcome.to_json(self.stream_id))
        # Counted last: `_drain` waits for the tally, so the sinks have the outcome by then.
        with self._lock:
            self.tally.outcomes[outcome.kind] += 1
            if outcome.reason:
                self.tally.reasons[outcome.reason] += 1


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1e3


def _ms(seconds: float) -> float:
    return seconds * 1e3
