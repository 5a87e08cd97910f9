"""The device's frame path, wired from its parts; every frame gets exactly one outcome.

    frame ─► preprocess ─► prefilter ─(below threshold)─► prefiltered
                              │
                           policy ─► branch: split ─► head ─► encode ─┐
                                             jpeg/webp ─► encode ─────┤
                                             local ─► local.onnx      ├─► uplink ─► edge result
                                             skip ─► dropped          │      │
                        edge unavailable / error / deadline missed ◄──┴──────┘
                                  └─► local.onnx (fallback) or dropped, per config

The parts, each behind a narrow interface and none holding the pipeline:

    device_client/stages.py      the pipeline thread's work: head (through HeadRunner), policy,
                                 tracker, request building → a step (send / run local / finish)
    device_client/inflight.py    the window, replies, the deadline watcher → result or failure
    device_client/settlement.py  outcomes built and settled once; the local fallback

When the edge is unreachable at send time, the fallback runs inline on the pipeline thread: that
is the backpressure (a live source then drops its oldest frames, and says so). Sessions, codecs
and tables are built once; nothing per frame allocates a model. Never imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from device_client.config import EdgeConfig, PipelineConfig
from device_client.head import HeadRunner
from device_client.inflight import InFlight
from device_client.local import LocalRunner
from device_client.metrics import DeviceMetrics
from device_client.outcomes import FrameJob
from device_client.policy import BranchPolicy
from device_client.settlement import Fallback, Settlement, Tally, outcome_of
from device_client.sinks import Sink
from device_client.sources import Frame, FrameSource
from device_client.stages import Finish, RunLocal, Send, Stages
from device_client.tracker import BoxTracker
from device_client.uplink import Uplink
from shared.bundle import Manifest
from shared.errors import FrameError
from shared.messages import results_of, timings_of
from shared.wire import pb

log = logging.getLogger("splitedge.device.pipeline")

__all__ = ["Pipeline", "Tally"]


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
        self.settlement = Settlement(
            stream_id=stream_id, policy=policy, sink=sink, metrics=metrics, tracker=tracker
        )
        self.stages = Stages(
            manifest=manifest,
            head=head,
            policy=policy,
            metrics=metrics,
            config=config,
            edge=edge,
            stream_id=stream_id,
            edge_available=lambda: uplink.available,
            tracker=tracker,
        )
        self.fallback = Fallback(
            local, tuple(config.tasks or manifest.tasks), config, self.settlement
        )
        self.in_flight = InFlight(
            uplink,
            window=edge.window,
            sla_s=edge.sla_ms / 1e3,
            metrics=metrics,
            on_result=self._on_result,
            on_failure=self._on_failure,
            on_late=self.settlement.late_reply,
        )
        self._stopping = threading.Event()
        self._source: FrameSource | None = None

    @property
    def tally(self) -> Tally:
        return self.settlement.tally

    # -- lifecycle -------------------------------------------------------------------------------
    def run(self, source: FrameSource, on_frame: Callable[[], None] | None = None) -> Tally:
        """Process every frame of `source` until it ends or `stop()`; drain; return the tally."""
        self._source = source
        self.in_flight.start()
        try:
            for frame in source:
                self.settlement.seen()
                if self._stopping.is_set():
                    self.settlement.settle(outcome_of(FrameJob(frame), "dropped", "shutdown"))
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
        self.settlement.seen()
        self.settlement.settle(outcome_of(FrameJob(frame), "dropped", reason))

    def _drain(self) -> None:
        self.in_flight.wait_empty()
        # A frame just claimed from the book (by a reply or the watcher) may not have reached the
        # fallback worker yet: shutting it now would refuse that frame's work and lose its outcome.
        settle_by = time.monotonic() + 30
        while self.settlement.unsettled() and time.monotonic() < settle_by:
            time.sleep(0.01)
        self.in_flight.stop()
        self.fallback.close()

    # -- one frame -------------------------------------------------------------------------------
    def process(self, frame: Frame) -> None:
        job = FrameJob(frame, {"queue": (time.monotonic() - frame.captured) * 1e3})
        try:
            step = self.stages.run(job)
            if isinstance(step, Send):
                self.in_flight.send(job, step.request)
            elif isinstance(step, RunLocal):
                if step.reason == "policy":
                    self.fallback.local_now(job, step.reason)
                else:
                    self.fallback.run(job, step.reason, inline=True)
            else:
                assert isinstance(step, Finish)
                self.settlement.settle(outcome_of(job, step.kind, step.reason, step.results))
        except Exception:  # one bad frame must not stop the camera
            log.exception("frame %d failed", frame.frame_id)
            self.settlement.settle(outcome_of(job, "dropped", "failed"))

    def _on_result(self, job: FrameJob, reply: pb.InferResponse) -> None:
        self.settlement.settle(outcome_of(job, "edge", None, results_of(reply), timings_of(reply)))

    def _on_failure(
        self, job: FrameJob, reason: str, error: FrameError | None, inline: bool
    ) -> None:
        self.fallback.run(job, reason, error, inline)
