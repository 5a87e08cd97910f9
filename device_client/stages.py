"""One frame's work on the pipeline thread, up to the request it sends or the outcome it ends in.

    frame ─► prepare (preprocess, gate) ─(below threshold)─► Finish(prefiltered)
                │
             policy ─► track ─► Finish(tracked)       skip ─► Finish(dropped, policy_skip)
                       local ─► RunLocal(policy)      edge down ─► RunLocal(edge_unavailable)
                       split ─► head + encode ─(head score below threshold)─► Finish(prefiltered)
                       split / jpeg / webp ─► Send(request)

`Stages.run` returns one of those steps and does nothing else with it: the in-flight book sends,
the fallback runs local models, settlement turns every `Finish` into the frame's outcome. The
head runs only through `HeadRunner`; requests are built only by `shared.messages`.

Never imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from device_client.config import EdgeConfig, PipelineConfig
from device_client.head import HeadRunner
from device_client.metrics import DeviceMetrics
from device_client.outcomes import NO_RESULTS, FrameJob, OutcomeKind
from device_client.policy import BranchPolicy
from device_client.preprocess import Image
from device_client.tracker import BoxTracker
from shared.bundle import Branch, Manifest, Task
from shared.codecs import DEFAULT_QUALITY, Codec, CodecId, codec_spec, make_codec
from shared.messages import FrameRequest, infer_request
from shared.results import Results
from shared.wire import pb


@dataclass(frozen=True)
class Finish:
    """The frame ends here, on the pipeline thread."""

    kind: OutcomeKind
    reason: str | None = None
    results: Results = NO_RESULTS


@dataclass(frozen=True)
class RunLocal:
    """No edge for this frame (the policy's choice, or the edge is down): local.onnx or drop."""

    reason: str


@dataclass(frozen=True)
class Send:
    request: pb.InferRequest


Step = Finish | RunLocal | Send


class Stages:
    def __init__(
        self,
        *,
        manifest: Manifest,
        head: HeadRunner,
        policy: BranchPolicy,
        metrics: DeviceMetrics,
        config: PipelineConfig,
        edge: EdgeConfig,
        stream_id: str,
        edge_available: Callable[[], bool],
        tracker: BoxTracker | None = None,
    ) -> None:
        self.manifest = manifest
        self.head = head
        self.policy = policy
        self.metrics = metrics
        self.config = config
        self.edge_available = edge_available
        self.tracker = tracker
        self.threshold = (
            config.prefilter.threshold
            if config.prefilter.threshold is not None
            else manifest.prefilter.threshold
        )
        self.tasks: tuple[Task, ...] = tuple(config.tasks)
        self.stream_id = stream_id
        self._deadline_ns = int(edge.sla_ms * 1e6)
        # One encoder per image branch, built once (policies pick only the manifest's branches).
        self._image_codecs: dict[str, Codec] = {}
        for branch in manifest.branches:
            if branch.kind in ("jpeg", "webp"):
                codec, quality = _image_setting(branch)
                self._image_codecs[branch.id] = make_codec(codec, quality=quality)

    def warm_up_images(self, frame: Image) -> dict[str, float]:
        """Encode `frame` with every image branch's codec twice; the ms of the second call per
        branch id. A first encode loads and plans (WebP's took 212 ms against 6.8 profiled under
        the harness's CPU quota), and the scheduler should start from this device's warm cost."""
        measured = {}
        for branch_id, codec in self._image_codecs.items():
            for _ in range(2):
                started = time.perf_counter()
                codec.encode(frame)
            measured[branch_id] = (time.perf_counter() - started) * 1e3
        return measured

    def run(self, job: FrameJob) -> Step:
        frame, prefilter = job.frame, self.config.prefilter
        gate = prefilter.enabled and prefilter.gate
        prepared = self.head.prepare(frame.image, "RGB", gate=gate)
        job.timings_ms.update(prepared.timings_ms)
        if gate:
            job.prefilter_score = prepared.gate_score
            if prepared.gated_out(self.threshold):
                return Finish("prefiltered")

        choice = self.policy.choose(frame)
        branch = job.branch = choice.branch
        if choice.predicted_ms is not None or choice.track:
            job.decision = choice.to_json()
        self.metrics.use_branch(branch.id)
        if self.tracker is not None:
            if choice.track:
                return self._track(job)
            self.tracker.remember(frame.frame_id, frame.image)
        if branch.kind == "skip":
            return Finish("dropped", "policy_skip")
        if branch.kind == "local":
            return RunLocal("policy")
        if not self.edge_available():
            return RunLocal("edge_unavailable")

        geometry = prepared.head_input.geometry
        about = FrameRequest(
            model_name=self.manifest.name,
            model_version=self.manifest.version,
            branch_id=branch.id,
            tasks=self.tasks,
            stream_id=self.stream_id,
            frame_id=frame.frame_id,
            capture_time_ns=frame.capture_time_ns,
            deadline_ns=frame.capture_time_ns + self._deadline_ns,
            original_size=geometry.original,
        )
        if branch.kind == "split":
            assert branch.width is not None  # pick_branch checked it
            # Without the gate, the head's own score decides, after the head ran.
            threshold = self.threshold if prefilter.enabled and not gate else None
            out = self.head.encode(prepared, branch.width, threshold)
            job.timings_ms.update(out.timings_ms)
            if threshold is not None:
                job.prefilter_score = out.prefilter_score
            if out.payload is None:
                return Finish("prefiltered")
            return Send(infer_request(about, latent=out.payload, input_size=geometry.input_size))
        # jpeg / webp: the whole frame
        started = time.perf_counter()
        image = self._image_codecs[branch.id].encode(frame.image)
        job.timings_ms["encode"] = (time.perf_counter() - started) * 1e3
        return Send(infer_request(about, image=image))

    def _track(self, job: FrameJob) -> Finish:
        """Carry the last detection's boxes onto this frame (the scheduler's sampled frames)."""
        assert self.tracker is not None
        started = time.perf_counter()
        self.tracker.remember(job.frame.frame_id, job.frame.image)
        boxes = self.tracker.track(job.frame.frame_id) or ()
        job.timings_ms["track"] = (time.perf_counter() - started) * 1e3
        return Finish("tracked", None, Results(detections=boxes))


def _image_setting(branch: Branch) -> tuple[CodecId, int]:
    """An image branch's codec and quality; bundles from before the quality field encode at
    DEFAULT_QUALITY."""
    return codec_spec(branch.codec or branch.kind).id, branch.quality or DEFAULT_QUALITY
